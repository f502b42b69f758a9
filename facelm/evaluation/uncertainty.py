"""Stage 06 for the label generator on G's features: its agreement with the judges, and whether
its per-face uncertainty (the disagreement of its ensemble) says which faces to trust.

The feature label generator (:class:`facelm.models.feature_lgen.FeatureLGen`) reads G's
feature maps, so on the random z of :func:`facelm.evaluation.consistency.evaluate_consistency`
it labels the very images the judges read. Three questions, each a metric:

- agreement: the NME of its points vs the own judge (``consistency_nme_features``) and vs
  dlib (``consistency_nme_dlib_features``, over the faces dlib finds), as for L-Gen;
- ranking: the Spearman rank correlation between a face's uncertainty and that face's NME
  (``uncertainty_spearman``, ``uncertainty_spearman_dlib``): 1 means the most uncertain
  faces are exactly the worst labelled;
- filtering: the consistency of the most certain ``lgen.features.keep_frac`` share of the
  faces (``consistency_nme_features_certain`` and dlib's), which is what ``facelm synth
  --keep-frac`` keeps. The share is taken of all random faces, before dlib looks; dlib's
  number is over the found faces of that share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facelm.evaluation.consistency import Consistency
from facelm.evaluation.outside_judge import DlibJudgement, mean_or_nan
from facelm.landmarks import nme
from facelm.tensors import to_uint8


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ranks) / counts)[group]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two samples (ties: average ranks); NaN when either is
    constant or there are fewer than 2 pairs."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"spearman needs paired samples, got {len(a)} and {len(b)} values")
    if len(a) < 2:
        return math.nan
    ra, rb = average_ranks(a) - (len(a) - 1) / 2, average_ranks(b) - (len(b) - 1) / 2
    scale = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / scale) if scale > 0 else math.nan


def n_kept(n: int, keep_frac: float) -> int:
    """How many of ``n`` faces a ``keep_frac`` share keeps: ``ceil(keep_frac * n)``, at least 1."""
    if not 0 < keep_frac <= 1:
        raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac}")
    return max(1, min(n, math.ceil(keep_frac * n - 1e-9)))


def most_certain(uncertainty: np.ndarray, keep_frac: float) -> np.ndarray:
    """Indices (ascending) of the :func:`n_kept` faces of lowest uncertainty.

    Ties at the cut go to the earlier face, so exactly that many are kept and the choice is
    deterministic; every kept face is at most as uncertain as every face left out.
    """
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if not len(u):
        return np.zeros(0, np.int64)
    return lowest(u, n_kept(len(u), keep_frac))


def lowest(uncertainty: np.ndarray, n: int) -> np.ndarray:
    """Sorted indices of the ``n`` faces of lowest uncertainty (ties: the earlier face)."""
    u = np.asarray(uncertainty).ravel()
    if not 0 < n <= len(u):
        raise ValueError(f"keeps 1..{len(u)} faces, asked for {n}")
    return np.sort(np.argsort(u, kind="stable")[:n])


def keep_threshold(uncertainty: np.ndarray, keep_frac: float) -> float:
    """The uncertainty at or under which a face is kept so that a ``keep_frac`` share of this
    sample is: its ``keep_frac``-quantile (the lowest value whose empirical CDF reaches
    ``keep_frac``); +inf for ``keep_frac`` 1 (keep everything, also faces beyond the sample)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if not len(u):
        raise ValueError("keep_threshold needs a non-empty calibration sample")
    if keep_frac == 1:
        return math.inf
    return float(np.sort(u)[n_kept(len(u), keep_frac) - 1])


def error_by_bin(uncertainty: np.ndarray, errors: np.ndarray, n_bins: int = 10
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Faces sorted by uncertainty and cut into ``n_bins`` equal groups (deciles by default):
    ``(mean uncertainty, mean error)`` per group, most certain first (fewer groups for fewer faces)."""
    u, e = np.asarray(uncertainty, np.float64).ravel(), np.asarray(errors, np.float64).ravel()
    groups = np.array_split(np.argsort(u, kind="stable"), min(n_bins, len(u)))
    return np.array([u[g].mean() for g in groups]), np.array([e[g].mean() for g in groups])


@dataclass
class FeatureConsistency:
    """The feature label generator on stage 06's random z, judged like L-Gen."""

    points: np.ndarray              # [N, P, 2] its landmarks of G(z)
    uncertainty: np.ndarray         # [N] its per-face uncertainty (NME units)
    consistency: np.ndarray         # [N] NME vs the own judge on G(z)
    certain: np.ndarray             # int64 [K] the most certain keep_frac share (indices)
    dlib_found: np.ndarray | None   # [N] bool: dlib found the face (None: dlib not run)
    consistency_dlib: np.ndarray | None  # [N] NME vs dlib, NaN where not found

    def metrics(self) -> dict[str, float]:
        """The stage's metrics for this label generator (keys of the metrics registry)."""
        values = {"consistency_nme_features": float(self.consistency.mean()),
                  "consistency_nme_features_certain": float(self.consistency[self.certain].mean()),
                  "uncertainty_spearman": spearman(self.uncertainty, self.consistency)}
        if self.dlib_found is not None:
            found = self.dlib_found
            kept = self.certain[found[self.certain]]
            values |= {"consistency_nme_dlib_features": mean_or_nan(self.consistency_dlib[found]),
                       "consistency_nme_dlib_features_certain": mean_or_nan(self.consistency_dlib[kept]),
                       "uncertainty_spearman_dlib": spearman(self.uncertainty[found],
                                                             self.consistency_dlib[found]),
                       "dlib_found_generated_certain": float(found[self.certain].mean())}
        return values

    def curves(self) -> dict[str, np.ndarray]:
        """Error samples for the stage's CED plot, beside L-Gen's."""
        share = len(self.certain) / len(self.consistency)
        curves = {"random z: features vs judge(G(z))": self.consistency,
                  f"random z: features vs judge(G(z)), most certain {share:.0%}":
                  self.consistency[self.certain]}
        if self.dlib_found is not None and self.dlib_found.any():
            curves[f"random z: features vs dlib(G(z)) ({self.dlib_found.mean():.0%} found)"] = \
                self.consistency_dlib[self.dlib_found]
        return curves


@torch.no_grad()
def judge_feature_labels(feature_lgen, result: Consistency, keep_frac: float,
                         outside: DlibJudgement | None = None, batch_size: int = 256) -> FeatureConsistency:
    """Label ``result``'s random z with ``feature_lgen`` and compare with the judges' points there.

    ``feature_lgen`` must read the generator that drew ``result.faces`` (stage 04 trains it on
    that G); ``outside``: dlib's judgement of the same faces, or None without dlib.
    """
    if getattr(feature_lgen, "kind", None) != "features":
        raise ValueError(f"judge_feature_labels needs a features-kind label generator, got "
                         f"{type(feature_lgen).__name__} (kind {getattr(feature_lgen, 'kind', None)!r})")
    device = next(feature_lgen.parameters()).device
    images, points, uncertainty = [], [], []
    for chunk in torch.split(result.z, batch_size):
        x, lm, u = feature_lgen.generate(chunk.to(device))
        images.append(to_uint8(x))
        points.append(lm.float().cpu().numpy())
        uncertainty.append(u.float().cpu().numpy())
    gap = np.abs(np.concatenate(images).astype(np.int16) - result.faces.astype(np.int16)).max()
    if gap > 1:  # more than a rounding flip: it reads another generator than the judged faces'
        raise ValueError(f"the feature label generator's G(z) differs from the judged faces by up "
                         f"to {gap}/255: it was trained on another generator")
    points, u = np.concatenate(points).astype(np.float32), np.concatenate(uncertainty)
    consistency = nme(points, result.judge_points)
    found = dlib_error = None
    if outside is not None:
        found = np.asarray(outside.generated_found, bool)
        dlib_error = np.full(len(points), np.nan)
        if found.any():
            dlib_error[found] = nme(points[found], outside.generated_points[found])
    return FeatureConsistency(points, u, consistency, most_certain(u, keep_frac), found, dlib_error)


def uncertainty_figure(result: FeatureConsistency, n_bins: int = 10):
    """Mean NME per uncertainty decile (own judge, and dlib where it ran), with a scatter of
    every face behind: a useful uncertainty makes the curve rise."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(result.uncertainty, result.consistency, s=4, alpha=0.25, color="tab:blue")
    centre, err = error_by_bin(result.uncertainty, result.consistency, n_bins)
    rho = spearman(result.uncertainty, result.consistency)
    ax.plot(centre, err, "o-", color="tab:blue", label=f"vs judge, mean per decile (Spearman {rho:.2f})")
    if result.dlib_found is not None and result.dlib_found.sum() >= 2:
        f = result.dlib_found
        centre, err = error_by_bin(result.uncertainty[f], result.consistency_dlib[f], n_bins)
        rho = spearman(result.uncertainty[f], result.consistency_dlib[f])
        ax.plot(centre, err, "s-", color="tab:orange", label=f"vs dlib, found faces (Spearman {rho:.2f})")
    cut = result.uncertainty[result.certain].max()
    ax.axvline(cut, color="grey", ls="--", lw=1, label=f"most certain {len(result.certain)} faces ≤ {cut:.3f}")
    ax.set_xlabel("ensemble uncertainty (NME units)")
    ax.set_ylabel("NME of the feature labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig

"""Stage 06's outside judge: dlib's 300-W-trained predictor on data faces and on G(z).

The own judge (stage 00's CNN) was trained on the same rendered world as everything else;
dlib's predictor never saw it, so its numbers can be reproduced by anyone with the package.
One protocol for every image set, so the sets compare:

- each face is upscaled (bicubic) so its longer side is ``evaluation.dlib_size``;
- dlib's HOG detector gives the face box (its highest-scoring detection);
- the 68 points in that box are reduced to the 300-W 49 (to CelebA's 5 for a 5-point face set);
- a face is *found* when HOG finds a box and all 49 points lie inside the image;
- NMEs are averaged over the found faces only (NaN when none is found), and the found share
  is reported beside each of them.

The image sets: held-out data faces (dlib vs their annotation: the judge's floor), G(z) for
the random z of :func:`facelm.evaluation.consistency.evaluate_consistency` (L-Gen(z) vs dlib)
and G(z_r) for the held-out inversions (dlib vs the annotation of x: the error budget's
G∘inversion link).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelm.config import EvaluationParams
from facelm.evaluation.consistency import Consistency
from facelm.landmarks import nme, to_5
from facelm.models.dlib_landmarks import annotate


def mean_or_nan(values: np.ndarray) -> float:
    """Mean of ``values``; NaN (not a warning) for an empty sample."""
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass
class DlibJudgement:
    """dlib's points on the three image sets of stage 06 and the errors over the found faces."""

    heldout_points: np.ndarray     # [M, P, 2] dlib on the held-out data faces (NaN: not found)
    heldout_found: np.ndarray      # [M] bool
    heldout_nme: np.ndarray        # [found] dlib vs the annotation
    generated_points: np.ndarray   # [N, P, 2] dlib on G(z), random z
    generated_found: np.ndarray    # [N] bool
    consistency: np.ndarray        # [found] L-Gen(z) vs dlib on G(z)
    inverted_found: np.ndarray     # [M] bool, dlib on G(z_r)
    inverted_nme: np.ndarray       # [found] dlib on G(z_r) vs the annotation of x

    def metrics(self) -> dict[str, float]:
        """The stage's dlib metrics (keys of the metrics registry)."""
        return {
            "dlib_nme_heldout": mean_or_nan(self.heldout_nme),
            "consistency_nme_dlib": mean_or_nan(self.consistency),
            "dlib_found_data": float(self.heldout_found.mean()),
            "dlib_found_generated": float(self.generated_found.mean()),
            "budget_dlib_on_inversion_nme": mean_or_nan(self.inverted_nme),
            "dlib_found_inverted": float(self.inverted_found.mean()),
        }

    def curves(self) -> dict[str, np.ndarray]:
        """dlib's error samples for the stage's CED plot (empty samples left out)."""
        curves = {f"dlib vs ground truth, held-out faces ({self.heldout_found.mean():.0%} found)":
                  self.heldout_nme,
                  f"random z: L-Gen vs dlib(G(z)) ({self.generated_found.mean():.0%} found)":
                  self.consistency}
        return {name: v for name, v in curves.items() if len(v)}


def _errors(pred: np.ndarray, target: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per-face NME over the found faces (``pred`` vs ``target``, normalised by ``target``)."""
    return nme(pred[found], target[found]) if found.any() else np.zeros(0)


def judge_with_dlib(result: Consistency, heldout_images: np.ndarray, heldout_landmarks: np.ndarray,
                    cfg: EvaluationParams, *, n_workers: int = 0, progress: bool = False) -> DlibJudgement:
    """Run dlib (module protocol) on the held-out faces, on ``result``'s G(z) and on its G(z_r).

    The three sets go through one :func:`facelm.models.dlib_landmarks.annotate` call (one
    process pool, ``n_workers`` processes, 0 for all cores); they have one size, since G
    draws at the face set's size.
    """
    sets = [np.asarray(heldout_images), result.faces, result.inverted_faces]
    if len({s.shape[1:] for s in sets}) != 1:
        raise ValueError(f"the image sets differ in size: {[s.shape[1:] for s in sets]}")
    points, found = annotate(np.concatenate(sets), "detect", size=cfg.dlib_size,
                             n_workers=n_workers, progress=progress)
    if heldout_landmarks.shape[1] == 5:
        points = to_5(points)
    cuts = np.cumsum([len(s) for s in sets])[:-1]
    (p_data, p_gen, p_inv), (f_data, f_gen, f_inv) = np.split(points, cuts), np.split(found, cuts)
    truth = np.asarray(heldout_landmarks)
    return DlibJudgement(p_data, f_data, _errors(p_data, truth, f_data),
                         p_gen, f_gen, _errors(result.lgen_points, p_gen, f_gen),
                         f_inv, _errors(p_inv, truth, f_inv))

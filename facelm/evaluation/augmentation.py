"""The paper's open question: does latent-space augmentation help a landmark detector?

For each number K of real annotated faces and each seed, the same detector is trained twice
with the same budget of optimiser steps: on the K real faces alone, and on the K real faces
plus M latent-augmented faces (G(z), L-Gen(z)) for uniform random z. Both are scored on one
fixed set of real test faces.
"""
from __future__ import annotations

import numpy as np

from facelm.config import AugmentationParams, DetectorParams, replace
from facelm.landmarks import nme
from facelm.models.detector import predict_landmarks
from facelm.training.detector import train_detector

CONDITIONS = ("real", "real+synth")


def study(real_images: np.ndarray, real_landmarks: np.ndarray,
          synth_images: np.ndarray, synth_landmarks: np.ndarray,
          test_images: np.ndarray, test_landmarks: np.ndarray,
          cfg: AugmentationParams, detector: DetectorParams, *, seed: int, device=None) -> list[dict]:
    """Rows ``{k, seed, condition, nme}`` for each K in ``cfg.ks`` and each of ``cfg.seeds``
    repeats, ``condition`` in {"real", "real+synth"}.

    Every detector is ``detector`` trained for ``cfg.steps`` steps. The K real faces of a
    repeat are a random subset drawn from ``seed``, K and the repeat index, so both conditions
    of a repeat see the very same real faces.
    """
    if max(cfg.ks) > len(real_images):
        raise ValueError(f"augmentation.ks {list(cfg.ks)} ask for more real faces than the "
                         f"{len(real_images)} given")
    detector = replace(detector, steps=cfg.steps)
    rows = []
    test_lm = np.asarray(test_landmarks)
    for k in cfg.ks:
        for r in range(cfg.seeds):
            rng = np.random.default_rng([seed, k, r])
            idx = np.sort(rng.choice(len(real_images), size=k, replace=False))
            real_x, real_y = np.asarray(real_images[idx]), np.asarray(real_landmarks[idx])
            sets = {
                "real": (real_x, real_y),
                "real+synth": (np.concatenate([real_x, synth_images]), np.concatenate([real_y, synth_landmarks])),
            }
            for condition, (x, y) in sets.items():
                result = train_detector(x, y, detector, seed=seed + 1000 * r + k, device=device,
                                        progress=False)
                pred = predict_landmarks(result.model, test_images, device=device)
                rows.append({"k": int(k), "seed": r, "condition": condition,
                             "nme": float(nme(pred, test_lm).mean())})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation of NME per (K, condition), with the relative change."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        entry = {"k": k}
        for condition in CONDITIONS:
            values = np.array([r["nme"] for r in rows if r["k"] == k and r["condition"] == condition])
            entry[f"{condition}_mean"] = float(values.mean())
            entry[f"{condition}_std"] = float(values.std())
        entry["change_%"] = 100.0 * (entry["real+synth_mean"] / entry["real_mean"] - 1.0)
        out.append(entry)
    return out


def summary_text(table: list[dict]) -> str:
    """The summary as aligned text, one line per K."""
    return "\n".join(f"K={row['k']:5d}  real {row['real_mean']:.4f} ± {row['real_std']:.4f}   "
                     f"real+synth {row['real+synth_mean']:.4f} ± {row['real+synth_std']:.4f}   "
                     f"change {row['change_%']:+.1f} %" for row in table)


def headline_metrics(table: list[dict], cfg: AugmentationParams) -> dict:
    """The stage's metrics: both conditions at ``cfg.k_default`` real faces."""
    at_k = next((r for r in table if r["k"] == cfg.k_default), None)
    if at_k is None:
        raise ValueError(f"augmentation.k_default {cfg.k_default} is not among the studied K "
                         f"{[r['k'] for r in table]}")
    return {"aug_nme_real_only": at_k["real_mean"], "aug_nme_real_plus_synth": at_k["real+synth_mean"],
            "aug_k": cfg.k_default, "aug_n_synth": cfg.n_synth}

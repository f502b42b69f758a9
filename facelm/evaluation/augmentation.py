"""The paper's open question: does latent-space augmentation help a landmark detector?

For each number K of real annotated faces and each seed, the same detector is trained twice
with the same budget of optimiser steps: on the K real faces alone, and on the K real faces
plus M latent-augmented faces (G(z), L-Gen(z)) for uniform random z. Both are scored on one
fixed set of real test faces.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from facelm.models.detector import predict_landmarks, train_detector
from facelm.landmarks import nme


def study(real_images: np.ndarray, real_landmarks: np.ndarray,
          synth_images: np.ndarray, synth_landmarks: np.ndarray,
          test_images: np.ndarray, test_landmarks: np.ndarray, *,
          ks: Sequence[int], seeds: int, steps: int, detector_kwargs: dict | None = None,
          seed: int = 0, device=None) -> list[dict]:
    """Rows ``{k, seed, condition, nme}``, ``condition`` in {"real", "real+synth"}.

    The K real faces of a repeat are a random subset drawn from ``seed`` and the repeat index,
    so both conditions of a repeat see the very same real faces.
    """
    if max(ks) > len(real_images):
        raise ValueError(f"ks {list(ks)} ask for more real faces than the {len(real_images)} given")
    kwargs = dict(detector_kwargs or {})
    rows = []
    test_lm = np.asarray(test_landmarks)
    for k in ks:
        for r in range(seeds):
            rng = np.random.default_rng([seed, k, r])
            idx = np.sort(rng.choice(len(real_images), size=k, replace=False))
            real_x, real_y = np.asarray(real_images[idx]), np.asarray(real_landmarks[idx])
            sets = {
                "real": (real_x, real_y),
                "real+synth": (np.concatenate([real_x, synth_images]), np.concatenate([real_y, synth_landmarks])),
            }
            for condition, (x, y) in sets.items():
                result = train_detector(x, y, steps=steps, seed=seed + 1000 * r + k, device=device,
                                        progress=False, **kwargs)
                pred = predict_landmarks(result.model, test_images, device=device)
                rows.append({"k": int(k), "seed": r, "condition": condition,
                             "nme": float(nme(pred, test_lm).mean())})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation of NME per (K, condition), with the relative change."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        entry = {"k": k}
        for condition in ("real", "real+synth"):
            values = np.array([r["nme"] for r in rows if r["k"] == k and r["condition"] == condition])
            entry[f"{condition}_mean"] = float(values.mean())
            entry[f"{condition}_std"] = float(values.std())
        entry["change_%"] = 100.0 * (entry["real+synth_mean"] / entry["real_mean"] - 1.0)
        out.append(entry)
    return out

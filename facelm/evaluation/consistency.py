"""Stage 06: do L-Gen's landmarks fit the generated faces? An independent judge decides.

The judge is the landmark detector of stage 00, trained on ground-truth-annotated faces
only (never on GAN output). For random z it reads the landmarks of G(z), and the NME between
L-Gen(z) and what it sees is the consistency. Two references: the judge's own error on
held-out data-set faces (its floor), and the same consistency on the inversions of held-out
faces; and for the error budget (:mod:`facelm.evaluation.budget`) the judge on those inversions
G(z_r) against the annotation of x. The outside judge, dlib, is
:mod:`facelm.evaluation.outside_judge`. :func:`annotation_speed` times the alternative —
running the detector on G(z) instead of L-Gen — for the report (timings are never metrics).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from facelm.config import EvaluationParams
from facelm.evaluation.results import faces_and_landmarks
from facelm.landmarks import auc, failure_rate, nme, to_5
from facelm.models.detector import predict_landmarks
from facelm.tensors import sample_z


def judge_landmarks(judge, images: np.ndarray, n_points: int) -> np.ndarray:
    """The judge's landmarks of ``images``; its 49 points reduced to CelebA's 5 when the face
    set has 5 (``n_points``), so both sides of an NME use the same layout."""
    points = predict_landmarks(judge, np.asarray(images))
    return to_5(points) if n_points == 5 else points


@dataclass
class Consistency:
    """Per-face errors of stage 06 and the random faces they were measured on."""

    z: torch.Tensor              # [N, D] the random latents
    faces: np.ndarray            # uint8 [N, H, W, 3] G(z)
    lgen_points: np.ndarray      # [N, P, 2] L-Gen(z)
    judge_points: np.ndarray     # [N, P, 2] the judge on G(z)
    consistency: np.ndarray      # [N] NME of L-Gen(z) vs the judge on G(z)
    judge_heldout: np.ndarray    # [M] NME of the judge vs the annotation, held-out faces
    inverted_heldout: np.ndarray  # [M] NME of L-Gen(z_r) vs the judge on G(z_r), held-out z_r
    inverted_faces: np.ndarray   # uint8 [M, H, W, 3] G(z_r) of the held-out faces
    judge_on_inversion: np.ndarray  # [M] NME of the judge on G(z_r) vs the annotation of x

    def metrics(self) -> dict[str, float]:
        """The stage's metrics (keys of the metrics registry)."""
        return {
            "detector_nme_heldout": float(self.judge_heldout.mean()),
            "consistency_nme": float(self.consistency.mean()),
            "consistency_auc08": auc(self.consistency),
            "consistency_failure08": failure_rate(self.consistency),
            "consistency_nme_inverted_heldout": float(self.inverted_heldout.mean()),
            "budget_judge_on_inversion_nme": float(self.judge_on_inversion.mean()),
        }

    def curves(self) -> dict[str, np.ndarray]:
        """The three error samples, labelled for a CED plot."""
        return {"random z: L-Gen vs judge(G(z))": self.consistency,
                "held-out inversions: L-Gen vs judge(G(z_r))": self.inverted_heldout,
                "judge vs ground truth, held-out faces": self.judge_heldout}


def evaluate_consistency(G, lgen, judge, heldout_images: np.ndarray, heldout_landmarks: np.ndarray,
                         z_heldout: torch.Tensor, cfg: EvaluationParams, *, seed: int,
                         device=None) -> Consistency:
    """Judge L-Gen on ``cfg.n_random`` random z (drawn from ``seed``) and on the held-out inversions."""
    if len(z_heldout) != len(heldout_images):
        raise ValueError(f"one z_r per held-out face: {len(z_heldout)} latents for {len(heldout_images)} faces")
    n_points = heldout_landmarks.shape[1]
    judge_heldout = nme(judge_landmarks(judge, heldout_images, n_points), heldout_landmarks)
    z = sample_z(cfg.n_random, G.z_dim, seed=seed, truncation=cfg.truncation)
    faces, lgen_points = faces_and_landmarks(G, lgen, z, device=device)
    judge_points = judge_landmarks(judge, faces, n_points)
    rec_faces, rec_lgen = faces_and_landmarks(G, lgen, z_heldout, device=device)
    rec_judge = judge_landmarks(judge, rec_faces, n_points)
    return Consistency(z, faces, lgen_points, judge_points, nme(lgen_points, judge_points),
                       judge_heldout, nme(rec_lgen, rec_judge), rec_faces, nme(rec_judge, heldout_landmarks))


def per_item_ms(fn: Callable[[], object], n_items: int, reps: int = 3,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Milliseconds per item of ``fn()`` (which handles ``n_items``), best of ``reps`` calls."""
    best = float("inf")
    for _ in range(reps):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return 1000.0 * best / n_items


@torch.no_grad()
def annotation_speed(G, lgen, judge, z: torch.Tensor, faces: np.ndarray, reps: int = 3,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Per-face milliseconds of G, L-Gen and the detector on this machine (for the report).

    G(z) is needed either way; the question is L-Gen(z) against the detector on G(z).
    """
    n = len(z)
    return {"G": per_item_ms(lambda: G(z), n, reps, clock),
            "L-Gen": per_item_ms(lambda: lgen(z), n, reps, clock),
            "detector": per_item_ms(lambda: predict_landmarks(judge, faces), n, reps, clock)}

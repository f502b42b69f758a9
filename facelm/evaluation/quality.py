"""Generator quality: how close G(z) is to the data, in one fixed feature space.

The feature space is the judge's own (the stage-00 landmark detector, trained only on data
faces): the deepest backbone map (4x4 cells) flattened, so a feature keeps *where* the
eyes, nose and mouth are, which is what the landmarks need. It is fixed for a given
params.yaml (stage 00 is deterministic) and ships with the run, nothing is downloaded.

Numbers (Kynkäänniemi et al. 2019, "Improved precision and recall metric"):
- precision: share of generated samples inside the data manifold (the union of balls around
  each data feature with radius its distance to its k-th nearest data neighbour);
- recall: share of data samples inside the generated manifold (the same, roles swapped);
- Fréchet distance between Gaussians fitted to the two feature sets (FID's formula).
The floor is the same numbers for two disjoint sets of data faces of equal size: what a
perfect generator would score with this many samples.
"""
from __future__ import annotations

import numpy as np
import torch

from facelm.config import BEGANParams, EvaluationParams
from facelm.tensors import sample_z, to_tensor, to_uint8


@torch.no_grad()
def judge_features(detector: torch.nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """float64 ``[N, D]`` features of uint8 images: the detector's deepest map, flattened."""
    detector.eval()
    device = next(detector.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i:i + batch], device)
        for stage in detector.stages:
            x = stage(x)
        out.append(x.flatten(1).double().cpu().numpy())
    return np.concatenate(out)


def _kth_radius(feats: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise(feats, feats)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN manifold precision and recall of ``fake`` against ``real`` features."""
    d = _pairwise(fake, real)  # [n_fake, n_real]
    precision = float((d <= _kth_radius(real, k)[None, :]).any(axis=1).mean())
    recall = float((d.T <= _kth_radius(fake, k)[None, :]).any(axis=1).mean())
    return precision, recall


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(ca cb) from the eigenvalues of sqrt(ca) cb sqrt(ca) (symmetric, PSD)
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root @ cb @ root)
    tr_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt)


def quality(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """``{"precision", "recall", "fd"}`` of ``fake`` features against ``real`` ones."""
    p, r = precision_recall(real, fake, k)
    return {"precision": p, "recall": r, "fd": frechet_distance(real, fake)}


def generator_quality(detector: torch.nn.Module, data_a: np.ndarray, data_b: np.ndarray,
                      generated: np.ndarray, k: int = 3) -> dict[str, float]:
    """Quality of ``generated`` against data faces ``data_a``, and the floor (``data_b``, disjoint
    data faces of the same count, against ``data_a``). Keys: ``gen_precision``, ``gen_recall``,
    ``gen_fd`` and ``floor_precision``, ``floor_recall``, ``floor_fd``."""
    if not len(data_a) == len(data_b) == len(generated):
        raise ValueError(f"equal sample sizes needed, got {len(data_a)}, {len(data_b)}, {len(generated)}")
    fa, fb, fg = (judge_features(detector, x) for x in (data_a, data_b, generated))
    gen, floor = quality(fa, fg, k), quality(fa, fb, k)
    return {**{f"gen_{n}": v for n, v in gen.items()}, **{f"floor_{n}": v for n, v in floor.items()}}


@torch.no_grad()
def draw_faces(G: torch.nn.Module, n: int, seed: int, batch: int = 256) -> np.ndarray:
    """uint8 ``[n, S, S, 3]`` G(z) of ``n`` uniform z from ``seed`` (the first m of n are those
    of m: a larger sample extends a smaller one)."""
    z = sample_z(n, G.z_dim, seed=seed).to(next(G.parameters()).device)
    return np.concatenate([to_uint8(G(z[i:i + batch])) for i in range(0, n, batch)])


def dlib_found(faces: np.ndarray, cfg: EvaluationParams, *, n_workers: int = 0
               ) -> tuple[float, float]:
    """(share of ``faces`` in which dlib's HOG detector finds a face, upscaled to
    ``cfg.dlib_size`` as in stage 06; its binomial standard error)."""
    from facelm.models.dlib_landmarks import face_found_rate

    rate = face_found_rate(faces, size=cfg.dlib_size, n_workers=n_workers, progress=False)
    return rate, float(np.sqrt(rate * (1.0 - rate) / len(faces)))


def dlib_scorer(evaluation: EvaluationParams, began: BEGANParams, seed: int):
    """The scorer ``train_began`` keeps a window's G by when ``began.best_by`` is dlib (else
    None): dlib's face-found rate (``dlib_found``) on ``began.best_dlib_n`` G(z) whose uniform z
    come from a stream of their own (``derive_seed(seed, 6)``), never the metrics' sample."""
    if began.best_by != "dlib":
        return None
    from facelm.training.common import derive_seed

    z_seed = derive_seed(seed, 6)

    def score(G: torch.nn.Module) -> float:
        return dlib_found(draw_faces(G, began.best_dlib_n, z_seed), evaluation)[0]

    return score


def evaluate_generator(G: torch.nn.Module, judge: torch.nn.Module, train_images: np.ndarray,
                       heldout_images: np.ndarray, cfg: EvaluationParams, *, seed: int,
                       n_workers: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """Stage 02's generator-quality metrics and the generated faces they were measured on.

    ``n = cfg.quality_n`` random z (uniform, from ``seed``; fewer if the data holds fewer
    faces) through G against the first ``n`` held-out faces; the floor compares the first
    ``n`` training faces with the same held-out ones. With ``cfg.dlib``, also the share of
    ``cfg.dlib_found_n`` G(z) (the same z stream, so its first ``n`` are the quality sample) in
    which dlib's HOG detector finds a face, and that share's standard error.
    Keys: ``gen_precision``, ``gen_recall``, ``gen_fd``, ``gen_floor_precision``,
    ``gen_floor_recall``, ``gen_floor_fd``, ``gen_dlib_found`` and ``gen_dlib_found_se``.
    """
    # a small CelebA set may hold fewer faces than quality_n: then all of them (fixed per data set)
    n = min(cfg.quality_n, len(train_images), len(heldout_images))
    faces = draw_faces(G, max(n, cfg.dlib_found_n) if cfg.dlib else n, seed)
    q = generator_quality(judge, heldout_images[:n], train_images[:n], faces[:n])
    metrics = {k.replace("floor_", "gen_floor_") if k.startswith("floor_") else k: v
               for k, v in q.items()}
    if cfg.dlib:
        metrics["gen_dlib_found"], metrics["gen_dlib_found_se"] = dlib_found(
            faces[:cfg.dlib_found_n], cfg, n_workers=n_workers)
    return metrics, faces[:n]

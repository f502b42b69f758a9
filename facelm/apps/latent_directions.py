"""The explorer's slider axes: principal (or random) directions of the latent space, and the clip.

The z on screen is ``clip(base + sum_k s_k * sigma_k * v_k)``: ``v_k``, ``sigma_k`` are the
principal directions and standard deviations of the inverted training latents (or random
orthonormal directions with the standard deviation of U(-1, 1) when there are none), ``s_k``
the slider values in standard deviations, and the clip keeps each coordinate in the prior's
box [-1, 1] or as far out as the base already is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UNIFORM_STD", "Directions", "principal_directions", "random_directions", "latent_from"]

UNIFORM_STD = 1.0 / np.sqrt(3.0)  # standard deviation of U(-1, 1)


@dataclass(frozen=True)
class Directions:
    """Slider axes: ``z = mean + sum_k s_k * sigma[k] * vectors[k]`` (before clipping)."""

    mean: np.ndarray      # float32 [D]
    sigma: np.ndarray     # float32 [K] standard deviation along each direction
    vectors: np.ndarray   # float32 [K, D] orthonormal rows
    source: str           # where they came from, shown in the UI

    def offset(self, s: np.ndarray) -> np.ndarray:
        """``sum_k s[k] * sigma[k] * vectors[k]`` as float32 ``[D]``."""
        s = np.asarray(s, dtype=np.float64)
        return ((s * self.sigma) @ self.vectors).astype(np.float32)


def principal_directions(z: np.ndarray, n_components: int = 8) -> Directions:
    """Principal components of latents ``z`` ``[N, D]`` (N >= 2), by SVD of the centred matrix.

    Keeps at most ``min(n_components, D, N - 1)`` directions (the rest have zero variance).
    Signs are fixed so that each vector's largest-magnitude coordinate is positive, making
    the sliders' meaning independent of the SVD routine.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"latents must be [N, D] with N >= 2, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("latents contain NaN or inf")
    mean = z.mean(axis=0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    k = max(1, min(n_components, z.shape[1], len(z) - 1))
    vt = vt[:k]
    sign = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(sign == 0, 1.0, sign)[:, None]
    sigma = s[:k] / np.sqrt(len(z) - 1)
    return Directions(mean.astype(np.float32), sigma.astype(np.float32), vt.astype(np.float32),
                      f"principal components of {len(z)} inverted training latents")


def random_directions(z_dim: int = 64, n_components: int = 8, seed: int = 0,
                      why: str = "no inverted latents found") -> Directions:
    """Fallback without inverted latents: ``n_components`` random orthonormal directions.

    Mean 0 and sigma 1/sqrt(3) (the standard deviation of U(-1, 1)) along each, seeded.
    ``why`` ends the description shown in the UI.
    """
    if not 1 <= n_components <= z_dim:
        raise ValueError(f"n_components must be in [1, {z_dim}], got {n_components}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((z_dim, n_components)))
    q = q * np.sign(np.diag(r))  # unique QR (positive diagonal of R)
    return Directions(np.zeros(z_dim, np.float32), np.full(n_components, UNIFORM_STD, np.float32),
                      q.T.astype(np.float32),
                      f"random orthonormal directions (seed {seed}): {why}")


def latent_from(base: np.ndarray, directions: Directions, s: np.ndarray) -> np.ndarray:
    """The explorer's z: ``base + offset(s)``, each coordinate kept within [-1, 1] or the base.

    The clip box is ``[min(-1, base), max(1, base)]`` so the sliders never push z further out
    of the uniform prior than the base already is, and ``s = 0`` returns ``base`` unchanged.
    """
    base = np.asarray(base, dtype=np.float32)
    z = base + directions.offset(s)
    return np.clip(z, np.minimum(-1.0, base), np.maximum(1.0, base)).astype(np.float32)

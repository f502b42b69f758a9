"""Batch augmentation for the landmark detector, on the device.

A random similarity transform plus mirroring (with the landmark permutation) through one
``affine_grid``/``grid_sample`` for the whole batch, the same map applied to the points, and
brightness/contrast jitter. Every random number comes from the caller's CPU generator, so a
seeded training run augments identically on any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "random_transform", "apply_transform"]


@dataclass(frozen=True)
class AugmentConfig:
    """The ranges of the detector's training augmentation (``detector.augment`` switches it
    on or off; these ranges are the one place they are set)."""

    flip: bool = True  # mirror half the faces (only when P has a known permutation)
    shift: float = 0.06  # max translation, fraction of the image side
    scale: float = 0.08  # max relative zoom in or out (log-uniform)
    rotate: float = 12.0  # max rotation, degrees
    brightness: float = 0.15  # max additive change, in [-1, 1] image units
    contrast: float = 0.2  # max relative contrast change


def random_transform(b: int, generator: torch.Generator, cfg: AugmentConfig,
                     can_flip: bool = True) -> dict[str, torch.Tensor]:
    """Draw ``b`` random augmentations (CPU tensors) from ``generator``: rotation ``angle``
    (radians), ``zoom``, ``shift`` ``[b, 2]`` (fraction of the side), ``mirror``, ``gain``, ``offset``."""
    def u(*shape):  # uniform in [-1, 1]
        return torch.rand(*shape, generator=generator) * 2 - 1

    mirror = torch.rand(b, generator=generator) < 0.5
    return {"angle": u(b) * math.radians(cfg.rotate),
            "zoom": torch.exp(u(b) * math.log1p(cfg.scale)),
            "shift": u(b, 2) * cfg.shift,
            "mirror": mirror & (can_flip and cfg.flip),
            "gain": 1 + u(b) * cfg.contrast,
            "offset": u(b) * cfg.brightness}


def apply_transform(x: torch.Tensor, pts: torch.Tensor, t: dict[str, torch.Tensor],
                    flip_perm: np.ndarray | torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Transform images ``[B, 3, S, S]`` in [-1, 1] and landmarks ``[B, P, 2]`` together.

    The output image is the input mirrored (when ``mirror``; ``flip_perm`` then reorders the
    points), rotated by ``angle`` and scaled by ``zoom`` about the centre, then moved by ``shift``
    (fraction of the side, +x right, +y down); then ``gain``/``offset`` change contrast/brightness.
    """
    dev = x.device
    t = {k: v.to(dev) for k, v in t.items()}
    # In normalised coordinates n = 2u - 1 (align_corners=False: -1 and 1 are the outer pixel
    # edges, matching unit coordinates u with pixel centres at (i + 0.5) / S) a point moves
    # from p to q = M p + m, M = zoom R(angle) diag(+-1, 1), m = 2 shift. grid_sample needs the
    # opposite map, from each output pixel q to where it samples the input: p = M^-1 (q - m).
    cos, sin = torch.cos(t["angle"]), torch.sin(t["angle"])
    sx = torch.where(t["mirror"], -1.0, 1.0)
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, one], -1)], -2)
    mat = rot * t["zoom"][:, None, None] @ mirror
    inv = mirror @ rot.transpose(1, 2) / t["zoom"][:, None, None]  # closed form: no solver, no sync
    move = 2 * t["shift"]
    theta = torch.cat([inv, -(inv @ move[:, :, None])], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * t["gain"][:, None, None, None] + mean + t["offset"][:, None, None, None]

    if flip_perm is not None:
        perm = torch.as_tensor(flip_perm, device=dev)
        pts = torch.where(t["mirror"][:, None, None], pts[:, perm], pts)
    q = (pts * 2 - 1) @ mat.transpose(1, 2) + move[:, None, :]
    return x.clamp(-1, 1), (q + 1) / 2

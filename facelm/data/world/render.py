"""Rendering: one face from its parameters, and the world's faces by index."""
from __future__ import annotations

import cv2
import numpy as np

from facelm.config import WorldParams
from facelm.data.world.draw import _LABELS, _Canvas, _draw, _shading
from facelm.data.world.faceparams import FaceParams, _check_size, _is_int, _sample, pose_limits
from facelm.data.world.layout import _Layout


def _default_supersample(size: int) -> int:
    return 4 if size < 64 else 2


def _check_supersample(supersample, size: int) -> int:
    if supersample is None:
        return _default_supersample(size)
    if not _is_int(supersample) or not 1 <= supersample <= 8:
        raise ValueError(f"supersample must be None or an int in [1, 8], got {supersample!r}")
    return int(supersample)


def render_face(params: FaceParams, size: int, *, supersample: int | None = None, return_masks: bool = False
                ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render one face: ``(uint8 [size, size, 3], float32 [49, 2])`` (+ part masks if asked).

    ``supersample``: drawing scale before ``INTER_AREA`` downsampling (default 4 below 64 px,
    else 2). ``return_masks=True`` adds a dict of float coverage maps [size, size] in [0, 1]
    of the visible pixels of each part ('skin', 'hair', 'eye', 'brow', 'nose', 'lip', 'ear',
    'neck'), drawn with the same polygons.
    """
    size = _check_size(size)
    if not isinstance(params, FaceParams):
        raise ValueError(f"params must be a FaceParams, got {type(params).__name__}")
    ss = _check_supersample(supersample, size)
    L = _Layout(params)
    cv = _Canvas(size, ss, params.background, return_masks)
    _draw(L, cv)
    img = cv2.resize(cv.img, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(cv.fg, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
    head, bg = _shading(L, size)
    lit, unlit = m * head, bg - m * bg  # light on the foreground, gradient on the background
    factor = cv2.merge([lit * float(t) + unlit for t in params.tint])
    out = cv2.multiply(img, factor, dtype=cv2.CV_8U)  # rounds and saturates
    if not return_masks:
        return out, L.landmarks
    masks = {name: cv2.resize((cv.lab == i).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
             for name, i in _LABELS.items()}
    return out, L.landmarks, masks


_META_KEYS = ("yaw", "pitch", "roll", "mouth_open", "smile", "brow_raise", "eye_open", "scale",
              "hair_length", "fringe", "beard", "light", "skin", "hair")


def render_faces(n: int, size: int, seed: int, start: int = 0, *, world: WorldParams | None = None,
                 return_meta: bool = False, supersample: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render faces ``start .. start + n - 1`` of the world ``seed``.

    Returns ``images uint8 [n, size, size, 3]`` and ``landmarks float32 [n, 49, 2]`` (unit
    coordinates, 300-W 49-point order). Face ``i`` uses only ``np.random.default_rng([seed, i])``,
    so any split into calls gives the same faces. Poses are truncated normals within
    ``+-world.yaw_max`` etc. (degrees; at most 60, 40, 45; ``world`` default: ``WorldParams()``;
    its other fields are not used here). ``return_meta`` adds a dict of float32
    per-face arrays: yaw, pitch, roll, mouth_open, smile, brow_raise, eye_open, scale,
    hair_length, fringe (-1: none), beard (0/1/2) ``[n]``; light (unit direction), skin, hair
    (RGB) ``[n, 3]``.
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    size = _check_size(size)
    for name, v in (("seed", seed), ("start", start)):
        if not _is_int(v) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    pose = pose_limits(world)
    _check_supersample(supersample, size)
    images = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, 49, 2), np.float32)
    meta = {key: [] for key in _META_KEYS}
    for j in range(n):
        rng = np.random.default_rng([int(seed), int(start) + j])
        p = _sample(rng, *pose)
        images[j], landmarks[j] = render_face(p, size, supersample=supersample)
        if return_meta:
            for key in _META_KEYS:
                meta[key].append(getattr(p, key))
            meta["light"][-1] = p.light / np.linalg.norm(p.light)
    if not return_meta:
        return images, landmarks
    out = {}
    for key, vals in meta.items():
        out[key] = np.asarray(vals, dtype=np.float32).reshape((n, 3) if key in ("light", "skin", "hair") else (n,))
    return images, landmarks, out

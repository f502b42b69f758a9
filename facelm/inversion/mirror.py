"""Which training faces get their mirror image inverted too (paper Fig. 9): the most turned.

The paper interpolates between a face and its mirror image; for a frontal face the two are
almost the same picture and the path shows nothing, so stage 03 mirrors the faces whose head
is turned most. Their yaw comes from the world itself when the face set is rendered (train
face i is world face i, whose pose `facelm.data.world.sample_params` gives back without
drawing it), and from the landmarks otherwise (`yaw_proxy`, which works for CelebA's 5 points
as for 49).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facelm.config import Params, WorldParams
from facelm.data.world import render_face, sample_params

__all__ = ["MirrorChoice", "choose_mirror_faces", "most_turned", "world_yaw", "yaw_proxy"]

# (outer eye corner on the image left, on the image right, nose tip) per layout
_YAW_POINTS = {49: (19, 28, 13), 68: (36, 45, 30), 5: (0, 1, 2)}
PROXY_UNIT = "landmark yaw proxy (nose-tip offset / eye distance)"


def yaw_proxy(landmarks: np.ndarray) -> np.ndarray:
    """A signed yaw proxy per face from ``[N, P, 2]`` landmarks (P = 49, 68 or 5): ``[N]``.

    The nose tip's offset from the midpoint of the outer eye corners, measured along the eye
    line (so roll does not count) and divided by the eye distance: 0 for a frontal face,
    positive when the nose points to the image right (the world's positive yaw), about
    ``k * sin(yaw)`` with k the nose's depth over the eye distance. A mirror image negates it.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[2] != 2 or landmarks.shape[1] not in _YAW_POINTS:
        raise ValueError(f"landmarks must be [N, P, 2] with P in {sorted(_YAW_POINTS)}, "
                         f"got {landmarks.shape}")
    a, b, tip = _YAW_POINTS[landmarks.shape[1]]
    eye_line = landmarks[:, b] - landmarks[:, a]
    dist = np.maximum(np.linalg.norm(eye_line, axis=1), 1e-12)
    offset = landmarks[:, tip] - (landmarks[:, a] + landmarks[:, b]) / 2
    return ((offset * eye_line).sum(axis=1) / dist / dist).astype(np.float32)


def world_yaw(seed: int, indices: np.ndarray, world: WorldParams) -> np.ndarray:
    """Yaw in degrees of the world faces ``indices`` of world ``seed``: ``float32 [len(indices)]``.

    Draws each face's parameters exactly as `facelm.data.world.render_faces` does (one
    generator per face from ``(seed, index)``) without drawing the face.
    """
    return np.array([sample_params(np.random.default_rng([int(seed), int(i)]), world).yaw for i in indices],
                    dtype=np.float32)


def most_turned(yaw: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``|yaw|``, most turned first (ties: lower index first)."""
    yaw = np.asarray(yaw)
    if not 0 < n <= len(yaw):
        raise ValueError(f"n must be in [1, {len(yaw)}], got {n}")
    return np.argsort(-np.abs(yaw), kind="stable")[:n]


@dataclass
class MirrorChoice:
    """The training faces whose mirror image is inverted, most turned first."""

    index: np.ndarray   # int64 [n], training-face indices
    yaw: np.ndarray     # float32 [n], their yaw in ``unit``
    unit: str           # "degrees" (the rendered world) or PROXY_UNIT

    def to_json(self) -> dict[str, Any]:
        """Plain values for ``data/latents/mirror.json``."""
        return {"index": [int(i) for i in self.index], "yaw": [round(float(y), 4) for y in self.yaw],
                "yaw_unit": self.unit}


def choose_mirror_faces(params: Params, meta: dict, landmarks: np.ndarray, n_faces: int) -> MirrorChoice:
    """The ``params.inversion.n_mirror`` most turned of the first ``n_faces`` training faces.

    ``meta`` is the face set's ``meta.json`` and ``landmarks`` its training landmarks. For the
    rendered world (``meta["dataset"] == "world"``) the yaw is the world's own, in degrees,
    checked against the stored landmarks of the chosen faces (a face set rendered with other
    pose limits than ``params.world`` is refused); otherwise it is `yaw_proxy`.
    """
    n = params.inversion.n_mirror
    if meta.get("dataset") != "world":
        yaw = yaw_proxy(np.asarray(landmarks[:n_faces]))
        idx = most_turned(yaw, n)
        return MirrorChoice(idx, yaw[idx], PROXY_UNIT)
    yaw = world_yaw(meta["seed"], np.arange(n_faces), params.world)
    idx = most_turned(yaw, n)
    size = int(meta["image_size"])
    for i in idx:
        p = sample_params(np.random.default_rng([int(meta["seed"]), int(i)]), params.world)
        if not np.allclose(render_face(p, size)[1], landmarks[i], atol=1e-5):
            raise ValueError(f"training face {int(i)} is not world face {int(i)} of seed {meta['seed']} "
                             "with params.world's pose limits; re-run stage 01")
    return MirrorChoice(idx, yaw[idx], "degrees")

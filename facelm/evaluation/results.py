"""Feed-forward of the proposed method (paper Fig. 7): one z gives a face and its landmarks.

The landmarks come from either kind of label generator (``lgen.kind``): L-Gen on z (the
paper's) or the heads on G's features; both are called as ``model(z) -> [N, P, 2]``, and
:func:`label_generator_path` names the file stage 04 writes for each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelm.tensors import pick_device, sample_z, to_uint8

# the file of each kind of label generator under the project root (params ``lgen.kind``);
# stage 04 writes both (facelm.training.lgen / facelm.training.feature_lgen .WEIGHTS_NAME)
LABEL_GENERATOR_FILES = {"z": "data/lgen/lgen.safetensors",
                         "features": "data/lgen/features.safetensors"}


def label_generator_path(root: str | Path, kind: str) -> Path:
    """The trained label generator of ``kind`` ("z" or "features") in the project at ``root``."""
    if kind not in LABEL_GENERATOR_FILES:
        raise ValueError(f"lgen.kind must be one of {', '.join(LABEL_GENERATOR_FILES)}, got {kind!r}")
    return Path(root) / LABEL_GENERATOR_FILES[kind]


@torch.no_grad()
def faces_and_landmarks(G, lgen, z: torch.Tensor, batch_size: int = 256,
                        device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """G(z) as uint8 NHWC images and the label generator's float32 ``[N, P, 2]`` landmarks
    (either kind: a features one reads its own copy of G at the same z)."""
    device = pick_device(device)
    G, lgen = G.to(device).eval(), lgen.to(device).eval()
    images, points = [], []
    for chunk in torch.split(z, batch_size):
        chunk = chunk.to(device)
        images.append(to_uint8(G(chunk)))
        points.append(lgen(chunk).float().cpu().numpy())
    return np.concatenate(images), np.concatenate(points).astype(np.float32)


def random_faces(G, lgen, n: int, seed: int, device=None):
    """Fig. 8: ``n`` uniform random z (of G's ``z_dim``) -> (z, faces, landmarks)."""
    z = sample_z(n, G.z_dim, seed)
    return (z, *faces_and_landmarks(G, lgen, z, device=device))


def interpolate(z_a: torch.Tensor, z_b: torch.Tensor, n_between: int) -> torch.Tensor:
    """``n_between`` evenly spaced points strictly between two latents, with both ends: ``[n+2, D]``."""
    t = torch.linspace(0.0, 1.0, n_between + 2, dtype=z_a.dtype).unsqueeze(1)
    return (1 - t) * z_a.reshape(1, -1) + t * z_b.reshape(1, -1)


def displacements(landmarks: np.ndarray) -> np.ndarray:
    """Mean landmark displacement between neighbouring points of a path ``[T, P, 2]`` -> ``[T-1]``."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    return np.linalg.norm(np.diff(landmarks, axis=0), axis=-1).mean(axis=-1)


def smoothness(landmarks: np.ndarray) -> float:
    """max / mean of the neighbour displacements along a path: 1 = perfectly even steps.

    A jump (landmarks that stall and then leap) drives it up; a linear path in z that
    L-Gen maps smoothly keeps it near 1.
    """
    d = displacements(landmarks)
    return float(d.max() / max(d.mean(), 1e-12))


@dataclass
class LatentPath:
    """A straight path in z fed to G and L-Gen (paper Fig. 9)."""

    z: torch.Tensor          # [T, D] the latents, both ends included
    faces: np.ndarray        # uint8 [T, H, W, 3] G(z)
    landmarks: np.ndarray    # float32 [T, P, 2] L-Gen(z)
    steps: np.ndarray        # [T - 1] mean landmark displacement between neighbours

    @property
    def smoothness(self) -> float:
        """max / mean of :attr:`steps` (1 = even): the ``interp_smoothness`` metric."""
        return smoothness(self.landmarks)


def latent_path(G, lgen, z_a: np.ndarray, z_b: np.ndarray, n_between: int, device=None) -> LatentPath:
    """G and L-Gen along ``n_between`` points strictly between ``z_a`` and ``z_b`` (and both ends)."""
    z = interpolate(torch.from_numpy(np.asarray(z_a)), torch.from_numpy(np.asarray(z_b)), n_between)
    faces, points = faces_and_landmarks(G, lgen, z, device=device)
    return LatentPath(z, faces, points, displacements(points))


def mirror_smoothness(G, lgen, z_faces: np.ndarray, z_mirrors: np.ndarray, n_between: int,
                      device=None) -> np.ndarray:
    """:func:`smoothness` of the path from each face's z to its mirror image's z: ``[N]``.

    ``z_faces[i]`` and ``z_mirrors[i]`` are the inversions of a face and of its mirror image
    (`MirrorPairs` of stage 03's latents); a less anecdotal view than Fig. 9's one path.
    """
    return np.array([latent_path(G, lgen, z_faces[j], z_mirrors[j], n_between, device=device).smoothness
                     for j in range(len(z_mirrors))])


@dataclass
class MirrorPairs:
    """Stage 03's mirrored training faces, most turned first: pair j is face ``index[j]``."""

    z_faces: np.ndarray    # float32 [M, D] the inverted z of each chosen training face
    z_mirrors: np.ndarray  # float32 [M, D] the inverted z of its mirror image
    index: np.ndarray      # int64 [M] training-face indices
    yaw: np.ndarray        # float32 [M] their yaw in ``unit``
    unit: str              # "degrees" (the rendered world) or the landmark proxy's name

    def label(self, j: int) -> str:
        """Pair ``j``'s face and yaw for a caption: "training face 17, yaw -38°"."""
        y = float(self.yaw[j])
        yaw = f"yaw {y:+.0f}°" if self.unit == "degrees" else f"{self.unit} {y:+.2f}"
        return f"training face {int(self.index[j])}, {yaw}"


def load_mirror_pairs(latents_dir: str | Path) -> MirrorPairs:
    """The face / mirror-image latent pairs of stage 03 (``z_train.npy``, ``z_mirror.npy`` and
    ``mirror.json``, which names the training face of each mirror image and its yaw)."""
    folder = Path(latents_dir)
    choice = json.loads((folder / "mirror.json").read_text())
    index = np.asarray(choice["index"], dtype=np.int64)
    z_train, z_mirror = np.load(folder / "z_train.npy"), np.load(folder / "z_mirror.npy")
    if len(z_mirror) != len(index) or (len(index) and index.max() >= len(z_train)):
        raise ValueError(f"{folder}: mirror.json names {len(index)} faces (max index "
                         f"{index.max(initial=-1)}) but z_mirror has {len(z_mirror)} and "
                         f"z_train {len(z_train)}")
    return MirrorPairs(z_train[index], z_mirror, index, np.asarray(choice["yaw"], dtype=np.float32),
                       str(choice["yaw_unit"]))

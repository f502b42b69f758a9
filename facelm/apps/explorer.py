"""Interactive explorer of the trained models: latent sliders -> a face with its landmarks.

One z feeds both the generator and L-Gen (paper Fig. 7), so every point of the latent
space shows a face and its 49 landmarks. The label generator is either kind (params.yaml's
``lgen.kind`` picks the default file); one on G's features also shows its uncertainty.
:class:`Explorer` holds the state in plain Python (testable without a browser);
:meth:`Explorer.widget` builds an ipywidgets UI (:mod:`facelm.apps.explorer_widget`) whose
observers only call the explorer's methods.
:func:`facelm.apps.explore.explore` is the one call for JupyterLab. The slider axes are in
:mod:`facelm.apps.latent_directions`, the drawing in :mod:`facelm.apps.face_drawing`.

The z on screen is ``clip(base + sum_k s_k * sigma_k * v_k)`` where

- ``v_k``, ``sigma_k`` are the principal directions and standard deviations of the
  inverted training latents (SVD of the centred ``z_train``); without latents, random
  orthonormal directions from a seed with the standard deviation of U(-1, 1), 1/sqrt(3);
- ``s_k`` are the slider values, in standard deviations;
- ``base`` is the mean latent (start, "mean z" button), a uniform random z for the seed
  in the seed box, or the interpolation ``(1 - t) z_a + t z_b`` between two inverted
  data-set faces (or a face and its mirror image), whichever was set last. The slider
  offsets stay applied when the base changes, so one edit can be tried on many faces;
  the "reset" button zeroes them;
- ``clip`` keeps each coordinate in the prior's box [-1, 1] **or** as far out as the
  base already is (inverted latents may leave the box when inversion is unconstrained),
  so with all sliders at 0 the z shown is exactly the base.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facelm.apps.face_drawing import annotate_face, encode_png, point_radius
from facelm.apps.latent_directions import (UNIFORM_STD, Directions, latent_from,
                                           principal_directions, random_directions)
from facelm.checkpoint import atomic_write
from facelm.evaluation.results import faces_and_landmarks
from facelm.landmarks import to_pixels, write_pts
from facelm.tensors import pick_device, sample_z

__all__ = ["Directions", "principal_directions", "random_directions", "latent_from",
           "annotate_face", "point_radius", "Explorer", "component_sweep", "DEFAULT_PATHS", "UNIFORM_STD"]

# Pipeline outputs the explorer reads, relative to the project root (the label generator's
# file follows params.yaml's lgen.kind: facelm.evaluation.results.label_generator_path).
DEFAULT_PATHS = {
    "generator": "data/began/generator.safetensors",
    "latents": "data/latents/z_train.npy",
    "mirror_latents": "data/latents/z_mirror.npy",
    "faces": "data/faces/train_images.npy",
    "out_dir": "reports/explorer",
}


# ----------------------------------------------------------------------------- explorer
def _as_latents(z: Any, name: str, z_dim: int) -> np.ndarray | None:
    if z is None:
        return None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != z_dim or len(z) == 0:
        raise ValueError(f"{name} must be float [N, {z_dim}] with N >= 1, got shape {z.shape}")
    return z


def _write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a .tmp name
        np.save(f, array)


class Explorer:
    """State and logic of the latent explorer (no widgets needed; see :meth:`widget`).

    ``G``: a BEGAN generator; ``lgen``: a label generator on the same z (either kind; one on
    G's features must have been trained on this G). ``z_train`` ``[N, D]``:
    inverted training latents (principal directions, interpolation ends); ``z_mirror``
    ``[M, D]``: latents of the mirror images of the first M training faces; ``faces``
    ``uint8 [N', S, S, 3]``: the training faces (thumbnails of the interpolation ends).
    All three are optional. ``scale``: display upscaling (default: about 384 px on screen).
    ``out_dir``: default folder of :meth:`save`.
    """

    def __init__(self, G: nn.Module, lgen: nn.Module, z_train: np.ndarray | None = None,
                 z_mirror: np.ndarray | None = None, faces: np.ndarray | None = None,
                 n_components: int = 8, seed: int = 0, device: str | torch.device | None = None,
                 scale: int | None = None, out_dir: str | Path | None = None,
                 mirror_index: np.ndarray | None = None):
        z_dim = getattr(G, "z_dim", None)
        if not isinstance(z_dim, int):
            raise ValueError("G must be a facelm.models.began.Generator (with a z_dim attribute)")
        if getattr(lgen, "z_dim", z_dim) != z_dim:
            raise ValueError(f"lgen takes z of {lgen.z_dim} dims but G takes {z_dim}")
        if getattr(lgen, "kind", "z") == "features" and not lgen.matches(G):
            raise ValueError("lgen reads another generator than G: its landmarks would not fit the faces")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.z_train = _as_latents(z_train, "z_train", z_dim)
        self.z_mirror = _as_latents(z_mirror, "z_mirror", z_dim)
        # the training face of each mirror latent (stage 03 mirrors the most turned faces)
        m = 0 if self.z_mirror is None else len(self.z_mirror)
        self.mirror_index = np.arange(m) if mirror_index is None else np.asarray(mirror_index, np.int64)
        if len(self.mirror_index) != m:
            raise ValueError(f"mirror_index names {len(self.mirror_index)} faces for {m} mirror latents")
        if faces is not None and (faces.ndim != 4 or faces.dtype != np.uint8 or faces.shape[-1] != 3):
            raise ValueError(f"faces must be uint8 [N, S, S, 3], got {faces.dtype} {faces.shape}")
        self.faces = faces
        self.device = pick_device(device)
        self.G, self.lgen = G.to(self.device).eval(), lgen.to(self.device).eval()
        self.z_dim, self.size = z_dim, int(getattr(G, "size", 0))
        self.scale = int(scale) if scale else max(1, 384 // max(self.size, 1))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.z_train is not None and len(self.z_train) >= 2:
            self.directions = principal_directions(self.z_train, n_components)
        else:
            why = "no inverted latents found" if self.z_train is None else "a single inverted latent has no spread"
            self.directions = random_directions(z_dim, min(n_components, z_dim), seed, why)
        self.offsets = np.zeros(len(self.directions.sigma), np.float32)
        self.base = self.directions.mean.copy()
        self.mode = "mean z"
        self.seed: int | None = None  # last seed / interpolation set, mirrored in the widgets
        self.interpolation: tuple[int, int, float, bool] = (0, min(1, self.n_train - 1), 0.0, False)
        self.show_points, self.show_numbers = True, False
        self._cache: tuple[bytes, np.ndarray, np.ndarray] | None = None
        self._view: Any = None  # the ExplorerView, once widget() has built it

    # ---- state
    @property
    def n_components(self) -> int:
        return len(self.offsets)

    @property
    def n_train(self) -> int:
        """How many inverted training latents there are (0 without)."""
        return 0 if self.z_train is None else len(self.z_train)

    def set_component(self, k: int, value: float) -> np.ndarray:
        """Set slider ``k`` to ``value`` standard deviations; returns the new z."""
        if not 0 <= k < self.n_components:
            raise ValueError(f"component k must be in [0, {self.n_components}), got {k}")
        self.offsets[k] = float(value)
        return self._changed()

    def reset_components(self) -> np.ndarray:
        """All sliders back to 0 (z = base)."""
        self.offsets[:] = 0.0
        return self._changed()

    def set_mean(self) -> np.ndarray:
        """Base z = the mean of the directions (mean inverted latent, or 0)."""
        self.base, self.mode = self.directions.mean.copy(), "mean z"
        return self._changed()

    def set_seed(self, seed: int) -> np.ndarray:
        """Base z = the uniform random z of ``seed`` (:func:`facelm.tensors.sample_z`)."""
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.base, self.mode = sample_z(1, self.z_dim, seed)[0].numpy(), f"seed {seed}"
        self.seed = seed
        return self._changed()

    def endpoints(self, a: int, b: int, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Latents of training face ``a`` and of face ``b`` (or of ``a``'s mirror image)."""
        if self.z_train is None:
            raise ValueError("interpolation needs inverted latents (z_train); none were loaded")
        n = len(self.z_train)
        if not 0 <= a < n:
            raise ValueError(f"face a must be in [0, {n}), got {a}")
        if mirror:
            rows = np.flatnonzero(self.mirror_index == a)
            if not len(rows):
                raise ValueError(f"the mirror option needs a face with an inverted mirror image "
                                 f"({sorted(self.mirror_index.tolist())}), got {a}")
            return self.z_train[a], self.z_mirror[rows[0]]
        if not 0 <= b < n:
            raise ValueError(f"face b must be in [0, {n}), got {b}")
        return self.z_train[a], self.z_train[b]

    def set_interpolation(self, a: int, b: int, t: float, mirror: bool = False) -> np.ndarray:
        """Base z = ``(1 - t) z_a + t z_b`` between training faces (``mirror``: b = a's mirror)."""
        a, b, t, mirror = int(a), int(b), float(t), bool(mirror)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}")
        z_a, z_b = self.endpoints(a, b, mirror)
        self.base = ((1.0 - t) * z_a + t * z_b).astype(np.float32)
        self.mode = f"face {a} → {'its mirror' if mirror else f'face {b}'}, t = {t:.2f}"
        self.interpolation = (a, b, t, mirror)
        return self._changed()

    def set_display(self, points: bool | None = None, numbers: bool | None = None) -> None:
        """Toggle the landmark points and their index numbers on the displayed image."""
        if points is not None:
            self.show_points = bool(points)
        if numbers is not None:
            self.show_numbers = bool(numbers)
        self._changed()

    def current_z(self) -> np.ndarray:
        """The z the controls describe, float32 ``[D]``."""
        return latent_from(self.base, self.directions, self.offsets)

    # ---- output
    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """``(G(z) uint8 [S, S, 3], L-Gen(z) float32 [P, 2] unit coordinates)`` for the current z."""
        z = self.current_z()
        if self._cache is None or self._cache[0] != z.tobytes():
            images, points = faces_and_landmarks(self.G, self.lgen, torch.from_numpy(z[None]),
                                                 device=self.device)
            self._cache = (z.tobytes(), images[0], points[0])
        return self._cache[1].copy(), self._cache[2].copy()

    def label_uncertainty(self) -> float | None:
        """The label generator's uncertainty at the current z (NME units); None for L-Gen on z."""
        if getattr(self.lgen, "kind", "z") != "features":
            return None
        with torch.no_grad():
            z = torch.from_numpy(self.current_z()[None]).to(self.device)
            return float(self.lgen.uncertainty(z)[0])

    def display_image(self) -> np.ndarray:
        """The upscaled face with the landmarks/indices switched on, uint8 RGB."""
        image, points = self.render()
        return annotate_face(image, points, self.scale, self.show_points, self.show_numbers)

    def dataset_face(self, i: int, mirror: bool = False) -> np.ndarray | None:
        """Training face ``i`` (mirrored if asked) as uint8 ``[S, S, 3]``, or None without faces."""
        if self.faces is None or not 0 <= i < len(self.faces):
            return None
        face = np.asarray(self.faces[i])
        return np.ascontiguousarray(face[:, ::-1]) if mirror else face

    def default_out_dir(self) -> Path:
        """Where :meth:`save` writes without a folder: ``out_dir``, else the project's reports/explorer."""
        if self.out_dir is not None:
            return self.out_dir
        from facelm.paths import project_root

        try:
            return project_root() / DEFAULT_PATHS["out_dir"]
        except FileNotFoundError:
            return Path.cwd() / DEFAULT_PATHS["out_dir"]

    def save(self, folder: str | Path | None = None) -> tuple[Path, Path]:
        """Write the current face and its landmarks; returns ``(png_path, pts_path)``.

        The PNG is G(z) at the generator's resolution (no drawing); the .pts holds L-Gen(z)
        in that image's pixels (300-W format); ``<name>_z.npy`` keeps z to regenerate it.
        Files are named ``face_000``, ``face_001``, ... (the first free number) in ``folder``
        (default: ``reports/explorer`` under the project root).
        """
        folder = Path(folder) if folder else self.default_out_dir()
        folder.mkdir(parents=True, exist_ok=True)
        image, points = self.render()
        n = 0
        while (folder / f"face_{n:03d}.png").exists() or (folder / f"face_{n:03d}.pts").exists():
            n += 1
        png, pts = folder / f"face_{n:03d}.png", folder / f"face_{n:03d}.pts"
        h, w = image.shape[:2]
        data, z = encode_png(image), self.current_z()
        atomic_write(png, lambda tmp: Path(tmp).write_bytes(data))
        atomic_write(pts, lambda tmp: write_pts(tmp, to_pixels(points, w, h)))
        atomic_write(folder / f"face_{n:03d}_z.npy", lambda tmp: _write_npy(tmp, z))
        return png, pts

    # ---- widgets
    def _changed(self) -> np.ndarray:
        if self._view is not None:
            self._view.sync()
        return self.current_z()

    def widget(self):
        """The ipywidgets UI (built once): face image, sliders, seed, interpolation, save."""
        if self._view is None:
            from facelm.apps.explorer_widget import ExplorerView

            self._view = ExplorerView(self)
            self._view.sync()
        return self._view.root

    @property
    def controls(self) -> dict[str, Any]:
        """The widgets by name (after :meth:`widget`): image, components, seed, a, b, t, ..."""
        self.widget()
        return self._view.ui


# ------------------------------------------------------------------------------ figures
def component_sweep(explorer: Explorer, components: tuple[int, ...] = (0, 1, 2),
                    sigmas: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0),
                    base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Faces and landmarks along principal directions: one row per component, one column per sigma.

    Each z is :func:`latent_from` ``(base, directions, s)`` with ``s`` zero except
    ``s[k] = sigma`` (base: the mean latent). Returns ``(images uint8 [R*C, S, S, 3],
    landmarks float32 [R*C, P, 2])`` in row-major order, for a static figure.
    """
    d = explorer.directions
    base = d.mean if base is None else np.asarray(base, np.float32)
    zs = []
    for k in components:
        if not 0 <= k < len(d.sigma):
            raise ValueError(f"component {k} out of range [0, {len(d.sigma)})")
        for s in sigmas:
            offsets = np.zeros(len(d.sigma), np.float32)
            offsets[k] = s
            zs.append(latent_from(base, d, offsets))
    return faces_and_landmarks(explorer.G, explorer.lgen, torch.from_numpy(np.stack(zs)),
                               device=explorer.device)

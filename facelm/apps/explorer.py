"""Interactive explorer of the trained models: latent sliders -> a face with its landmarks.

One z feeds both the generator and L-Gen (paper Fig. 7), so every point of the latent
space shows a face and its 49 landmarks. :class:`Explorer` holds the state in plain
Python (testable without a browser); :meth:`Explorer.widget` builds an ipywidgets UI whose
observers only call the explorer's methods. :func:`explore` is the one call for JupyterLab.

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

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facelm.landmarks import draw_landmarks, to_pixels, write_pts
from facelm.evaluation.results import faces_and_landmarks
from facelm.tensors import pick_device, sample_z

__all__ = ["Directions", "principal_directions", "random_directions", "latent_from",
           "annotate_face", "point_radius", "Explorer", "load_explorer", "explore", "component_sweep",
           "DEFAULT_PATHS"]

# Pipeline outputs the explorer reads, relative to the project root.
DEFAULT_PATHS = {
    "generator": "data/began/generator.safetensors",
    "lgen": "data/lgen/lgen.safetensors",
    "latents": "data/latents/z_train.npy",
    "mirror_latents": "data/latents/z_mirror.npy",
    "faces": "data/faces/train_images.npy",
    "out_dir": "reports/explorer",
}
UNIFORM_STD = 1.0 / np.sqrt(3.0)  # standard deviation of U(-1, 1)


# ------------------------------------------------------------------------- directions
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


# ---------------------------------------------------------------------------- drawing
def annotate_face(image: np.ndarray, landmarks: np.ndarray, scale: int,
                  points: bool = True, numbers: bool = False, radius: int | None = None) -> np.ndarray:
    """Upscale a uint8 ``[S, S, 3]`` face ``scale`` times (nearest), with points and/or indices.

    Points are :func:`facelm.landmarks.draw_landmarks` (``radius`` in display pixels, default
    :func:`point_radius`); indices are 0-based 49-point numbers.
    """
    import cv2

    if points:
        r = point_radius(image.shape[1] * scale) if radius is None else radius
        canvas = draw_landmarks(image, landmarks, scale=scale, radius=r)
    else:
        h, w = image.shape[:2]
        canvas = cv2.resize(np.ascontiguousarray(image), (w * scale, h * scale),
                            interpolation=cv2.INTER_NEAREST)
    if numbers:
        h, w = canvas.shape[:2]
        font_scale = max(0.5, w / 512)
        for i, (x, y) in enumerate(to_pixels(landmarks, w, h)):
            org = (int(round(x)) + 2, int(round(y)) - 2)
            # dark outline under light text: readable on any skin or background
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_PLAIN, font_scale, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(canvas, str(i), org, cv2.FONT_HERSHEY_PLAIN, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def point_radius(display_width: int) -> int:
    """Landmark dot radius for a face shown ``display_width`` pixels wide (4 px at 384 px).

    49 points crowd a small face: dots about 1 % of the width stay apart.
    """
    return max(2, round(display_width / 96))


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a PNG")
    return buf.tobytes()


# ----------------------------------------------------------------------------- explorer
def _as_latents(z: Any, name: str, z_dim: int) -> np.ndarray | None:
    if z is None:
        return None
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != z_dim or len(z) == 0:
        raise ValueError(f"{name} must be float [N, {z_dim}] with N >= 1, got shape {z.shape}")
    return z


class Explorer:
    """State and logic of the latent explorer (no widgets needed; see :meth:`widget`).

    ``G``: a BEGAN generator; ``lgen``: an L-Gen on the same z. ``z_train`` ``[N, D]``:
    inverted training latents (principal directions, interpolation ends); ``z_mirror``
    ``[M, D]``: latents of the mirror images of the first M training faces; ``faces``
    ``uint8 [N', S, S, 3]``: the training faces (thumbnails of the interpolation ends).
    All three are optional. ``scale``: display upscaling (default: about 384 px on screen).
    ``out_dir``: default folder of :meth:`save`.
    """

    def __init__(self, G: nn.Module, lgen: nn.Module, z_train: np.ndarray | None = None,
                 z_mirror: np.ndarray | None = None, faces: np.ndarray | None = None,
                 n_components: int = 8, seed: int = 0, device: str | torch.device | None = None,
                 scale: int | None = None, out_dir: str | Path | None = None):
        z_dim = getattr(G, "z_dim", None)
        if not isinstance(z_dim, int):
            raise ValueError("G must be a facelm.models.began.Generator (with a z_dim attribute)")
        if getattr(lgen, "z_dim", z_dim) != z_dim:
            raise ValueError(f"lgen takes z of {lgen.z_dim} dims but G takes {z_dim}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.z_train = _as_latents(z_train, "z_train", z_dim)
        self.z_mirror = _as_latents(z_mirror, "z_mirror", z_dim)
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
        self.interpolation: tuple[int, int, float, bool] = (0, min(1, self._n_train - 1), 0.0, False)
        self.show_points, self.show_numbers = True, False
        self._cache: tuple[bytes, np.ndarray, np.ndarray] | None = None
        self._ui: dict[str, Any] | None = None
        self._root: Any = None
        self._syncing = False

    # ---- state
    @property
    def n_components(self) -> int:
        return len(self.offsets)

    @property
    def _n_train(self) -> int:
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
            m = 0 if self.z_mirror is None else len(self.z_mirror)
            if not 0 <= a < m:
                raise ValueError(f"the mirror option needs a in [0, {m}) (faces with an inverted mirror image), got {a}")
            return self.z_train[a], self.z_mirror[a]
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

    def _default_out_dir(self) -> Path:
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
        import cv2

        folder = Path(folder) if folder else self._default_out_dir()
        folder.mkdir(parents=True, exist_ok=True)
        image, points = self.render()
        n = 0
        while (folder / f"face_{n:03d}.png").exists() or (folder / f"face_{n:03d}.pts").exists():
            n += 1
        png, pts = folder / f"face_{n:03d}.png", folder / f"face_{n:03d}.pts"
        if not cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {png}")
        h, w = image.shape[:2]
        write_pts(pts, to_pixels(points, w, h))
        np.save(folder / f"face_{n:03d}_z.npy", self.current_z())
        return png, pts

    # ---- widgets
    def _changed(self) -> np.ndarray:
        if self._ui is not None:
            self._sync_ui()
        return self.current_z()

    def _sync_ui(self) -> None:
        """Push the state into the widgets (observers muted) and redraw."""
        ui = self._ui
        self._syncing = True
        try:
            for slider, value in zip(ui["components"], self.offsets):
                slider.value = float(value)
            ui["points"].value, ui["numbers"].value = self.show_points, self.show_numbers
            if self.seed is not None:
                ui["seed"].value = self.seed
            if self._n_train:
                a, b, t, mirror = self.interpolation
                ui["a"].value, ui["b"].value, ui["t"].value, ui["mirror"].value = a, b, t, mirror
        finally:
            self._syncing = False
        ui["image"].value = _png(self.display_image())
        z = self.current_z()
        ui["status"].value = (
            f"<b>z</b>: {html.escape(self.mode)}"
            + (" + slider offsets" if self.offsets.any() else "")
            + f" &nbsp;·&nbsp; max |z| = {np.abs(z).max():.2f}"
            + f"<br><small>sliders: {html.escape(self.directions.source)}</small>")
        if self.z_train is not None:
            a, b, mirror = ui["a"].value, ui["b"].value, ui["mirror"].value
            for key, face in (("face_a", self.dataset_face(a)),
                              ("face_b", self.dataset_face(a, True) if mirror else self.dataset_face(b))):
                if face is not None:
                    ui[key].value = _png(annotate_face(face, np.zeros((0, 2)), max(1, 96 // face.shape[0]),
                                                       points=False))

    def _guard(self, fn, *args) -> None:
        """Run an observer's action unless the UI is being synced; show errors in the status."""
        if self._syncing:
            return
        try:
            fn(*args)
        except ValueError as err:
            self._ui["status"].value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def widget(self):
        """The ipywidgets UI (built once): face image, sliders, seed, interpolation, save."""
        if self._root is not None:
            return self._root
        import ipywidgets as w

        slider_kw = dict(min=-3.0, max=3.0, step=0.1, value=0.0, continuous_update=False,
                         readout_format=".1f", layout=w.Layout(width="420px"),
                         style={"description_width": "120px"})
        comps = [w.FloatSlider(description=f"PC{k + 1} (σ={s:.3f})", **slider_kw)
                 for k, s in enumerate(self.directions.sigma)]
        ui: dict[str, Any] = {
            # fixed CSS size = the PNG's own: crisp pixels, not stretched by the flex box
            "image": w.Image(format="png", layout=w.Layout(
                width=f"{self.size * self.scale}px", height=f"{self.size * self.scale}px",
                border="1px solid #ccc", flex="0 0 auto")),
            "points": w.Checkbox(value=self.show_points, description="landmarks", indent=False),
            "numbers": w.Checkbox(value=self.show_numbers, description="index numbers", indent=False),
            "status": w.HTML(),
            "components": comps,
            "reset": w.Button(description="reset sliders", icon="undo"),
            "seed": w.IntText(value=self.seed or 0, description="seed", layout=w.Layout(width="180px")),
            "mean": w.Button(description="mean z", tooltip="base z = the mean inverted latent"),
            "folder": w.Text(value=str(self._default_out_dir()), description="save to",
                             layout=w.Layout(width="300px")),
            "save": w.Button(description="save PNG + .pts", icon="save", button_style="primary",
                             tooltip="write G(z) as PNG and L-Gen(z) as a 49-point .pts file",
                             layout=w.Layout(width="150px")),
            "saved": w.HTML(),
        }
        n = self._n_train
        has_mirror = self.z_mirror is not None
        a, b, t, mirror = self.interpolation
        ui["a"] = w.BoundedIntText(value=a, min=0, max=max(n - 1, 0), description="face a",
                                   layout=w.Layout(width="180px"), disabled=n == 0)
        ui["b"] = w.BoundedIntText(value=max(b, 0), min=0, max=max(n - 1, 0),
                                   description="face b", layout=w.Layout(width="180px"), disabled=n == 0)
        ui["mirror"] = w.Checkbox(value=mirror, description="b = mirror image of a", indent=False,
                                  disabled=not has_mirror)
        ui["t"] = w.FloatSlider(min=0.0, max=1.0, step=0.01, value=t, description="t",
                                continuous_update=False, disabled=n == 0, readout_format=".2f",
                                layout=w.Layout(width="420px"))
        ui["face_a"] = w.Image(format="png")
        ui["face_b"] = w.Image(format="png")
        self._ui = ui

        for k, slider in enumerate(comps):
            slider.observe(lambda ch, k=k: self._guard(self.set_component, k, ch["new"]), names="value")
        ui["points"].observe(lambda ch: self._guard(self.set_display, ch["new"], None), names="value")
        ui["numbers"].observe(lambda ch: self._guard(self.set_display, None, ch["new"]), names="value")
        ui["reset"].on_click(lambda _: self._guard(self.reset_components))
        ui["seed"].observe(lambda ch: self._guard(self.set_seed, ch["new"]), names="value")
        ui["mean"].on_click(lambda _: self._guard(self.set_mean))

        def interpolate(_=None) -> None:
            self._guard(self.set_interpolation, ui["a"].value, ui["b"].value, ui["t"].value,
                        ui["mirror"].value)

        for key in ("a", "b", "t", "mirror"):
            ui[key].observe(interpolate, names="value")

        def save(_=None) -> None:
            try:
                png, pts = self.save(ui["folder"].value.strip() or None)
            except (OSError, ValueError) as err:
                ui["saved"].value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
                return
            ui["saved"].value = f"saved {html.escape(str(png))}<br>and {html.escape(str(pts))}"
            print(f"saved {png} and {pts}")

        ui["save"].on_click(save)

        interp_box = w.VBox([
            w.HTML("<b>Interpolate</b> between inverted training faces: z = (1 − t)·z_a + t·z_b"),
            w.HBox([ui["a"], ui["b"], ui["mirror"]]), ui["t"],
            w.HBox([ui["face_a"], ui["face_b"]]),
        ] if n else [w.HTML("<i>Interpolation needs inverted latents (data/latents/z_train.npy): "
                            "run <code>dvc repro</code>.</i>")])
        controls = w.VBox([
            w.HTML("<b>Base z</b>: a uniform random z for a seed, or the mean latent"),
            w.HBox([ui["seed"], ui["mean"]]),
            w.HTML("<b>Main directions</b> (slider = standard deviations along the direction)"),
            *comps, ui["reset"], interp_box,
            w.HBox([ui["folder"], ui["save"]]), ui["saved"],
        ])
        view = w.VBox([ui["image"], w.HBox([ui["points"], ui["numbers"]]), ui["status"]])
        self._root = w.HBox([view, controls])
        self._sync_ui()
        return self._root

    @property
    def controls(self) -> dict[str, Any]:
        """The widgets by name (after :meth:`widget`): image, components, seed, a, b, t, ..."""
        if self._ui is None:
            self.widget()
        return self._ui


# ------------------------------------------------------------------------------ loading
def _load_array(value: Any, key: str, root_fn, mmap: bool = False) -> np.ndarray | None:
    """None -> the default file if it exists; False -> nothing; a path -> must exist; else an array."""
    if value is False:
        return None
    if value is None:
        path = root_fn() / DEFAULT_PATHS[key]
        if not path.is_file():
            return None
    elif isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: no file at {path}")
    else:
        return np.asarray(value)
    return np.load(path, mmap_mode="r" if mmap else None)


def load_explorer(generator: Any = None, lgen: Any = None, latents: Any = None,
                  mirror_latents: Any = None, faces: Any = None, *, root: str | Path | None = None,
                  device: str | torch.device | None = None, **kwargs) -> Explorer:
    """Build an :class:`Explorer` from the pipeline's files (or from objects).

    ``generator``/``lgen``: a model, a safetensors path, or None for ``data/began/generator.safetensors``
    and ``data/lgen/lgen.safetensors`` under the project root (``root``, default
    :func:`facelm.paths.project_root`). ``latents``/``mirror_latents``/``faces``: an array, a
    ``.npy`` path, None for the default file when it exists, or False for none. ``kwargs`` go
    to :class:`Explorer` (``n_components``, ``seed``, ``scale``, ``out_dir``).
    """
    from facelm.models.began import load_generator
    from facelm.models.lgen import load_lgen
    from facelm.paths import project_root

    cached: list[Path] = []

    def root_fn() -> Path:
        if not cached:
            cached.append(Path(root) if root is not None else project_root())
        return cached[0]

    def model(value: Any, key: str, loader):
        if isinstance(value, nn.Module):
            return value
        path = Path(value) if value is not None else root_fn() / DEFAULT_PATHS[key]
        if not path.is_file():
            raise FileNotFoundError(f"{key}: no weights at {path} (train the models first: `dvc repro`)")
        return loader(path, device=device)

    G = model(generator, "generator", load_generator)
    L = model(lgen, "lgen", load_lgen)
    if root is not None and "out_dir" not in kwargs:
        kwargs["out_dir"] = Path(root) / DEFAULT_PATHS["out_dir"]
    return Explorer(G, L, z_train=_load_array(latents, "latents", root_fn),
                    z_mirror=_load_array(mirror_latents, "mirror_latents", root_fn),
                    faces=_load_array(faces, "faces", root_fn, mmap=True), device=device, **kwargs)


def explore(generator: Any = None, lgen: Any = None, latents: Any = None,
            mirror_latents: Any = None, faces: Any = None, **kwargs):
    """One call for JupyterLab: load the trained models and return the explorer's widget.

    Arguments as :func:`load_explorer`; the widget's explorer is its ``.explorer`` attribute.
    """
    ex = load_explorer(generator, lgen, latents, mirror_latents, faces, **kwargs)
    root = ex.widget()
    root.explorer = ex
    return root


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

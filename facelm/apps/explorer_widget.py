"""The ipywidgets face of :class:`facelm.apps.explorer.Explorer`.

:class:`ExplorerView` builds the widgets once, connects each control to one of the
explorer's methods, and redraws from the explorer's state (:meth:`ExplorerView.sync`)
whenever that state changes, from a control or from code. Observers never hold state of
their own, so the explorer stays testable without a browser.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from facelm.apps.face_drawing import annotate_face, encode_png

if TYPE_CHECKING:
    from facelm.apps.explorer import Explorer

__all__ = ["ExplorerView"]


def _error(message: str) -> str:
    return f"<span style='color:#b00'>{html.escape(message)}</span>"


def _controls(ex: Explorer) -> dict[str, Any]:
    """Every widget by name, initialised from the explorer's state (not yet connected)."""
    slider_kw = dict(min=-3.0, max=3.0, step=0.1, value=0.0, continuous_update=False,
                     readout_format=".1f", layout=w.Layout(width="420px"),
                     style={"description_width": "120px"})
    size = f"{ex.size * ex.scale}px"
    n, (a, b, t, mirror) = ex.n_train, ex.interpolation
    return {
        # fixed CSS size = the PNG's own: crisp pixels, not stretched by the flex box
        "image": w.Image(format="png", layout=w.Layout(width=size, height=size,
                                                       border="1px solid #ccc", flex="0 0 auto")),
        "points": w.Checkbox(value=ex.show_points, description="landmarks", indent=False),
        "numbers": w.Checkbox(value=ex.show_numbers, description="index numbers", indent=False),
        "status": w.HTML(),
        "components": [w.FloatSlider(description=f"PC{k + 1} (σ={s:.3f})", **slider_kw)
                       for k, s in enumerate(ex.directions.sigma)],
        "reset": w.Button(description="reset sliders", icon="undo"),
        "seed": w.IntText(value=ex.seed or 0, description="seed", layout=w.Layout(width="180px")),
        "mean": w.Button(description="mean z", tooltip="base z = the mean inverted latent"),
        "folder": w.Text(value=str(ex.default_out_dir()), description="save to",
                         layout=w.Layout(width="300px")),
        "save": w.Button(description="save PNG + .pts", icon="save", button_style="primary",
                         tooltip="write G(z) as PNG and L-Gen(z) as a 49-point .pts file",
                         layout=w.Layout(width="150px")),
        "saved": w.HTML(),
        "a": w.BoundedIntText(value=a, min=0, max=max(n - 1, 0), description="face a",
                              layout=w.Layout(width="180px"), disabled=n == 0),
        "b": w.BoundedIntText(value=max(b, 0), min=0, max=max(n - 1, 0), description="face b",
                              layout=w.Layout(width="180px"), disabled=n == 0),
        "mirror": w.Checkbox(value=mirror, description="b = mirror image of a", indent=False,
                             disabled=ex.z_mirror is None),
        "t": w.FloatSlider(min=0.0, max=1.0, step=0.01, value=t, description="t",
                           continuous_update=False, disabled=n == 0, readout_format=".2f",
                           layout=w.Layout(width="420px")),
        "face_a": w.Image(format="png"),
        "face_b": w.Image(format="png"),
    }


def _layout(ui: dict[str, Any], n_train: int) -> w.Widget:
    """The face and its toggles on the left, the controls on the right."""
    interp_box = w.VBox([
        w.HTML("<b>Interpolate</b> between inverted training faces: z = (1 − t)·z_a + t·z_b"),
        w.HBox([ui["a"], ui["b"], ui["mirror"]]), ui["t"],
        w.HBox([ui["face_a"], ui["face_b"]]),
    ] if n_train else [w.HTML("<i>Interpolation needs inverted latents (data/latents/z_train.npy): "
                              "run <code>dvc repro</code>.</i>")])
    controls = w.VBox([
        w.HTML("<b>Base z</b>: a uniform random z for a seed, or the mean latent"),
        w.HBox([ui["seed"], ui["mean"]]),
        w.HTML("<b>Main directions</b> (slider = standard deviations along the direction)"),
        *ui["components"], ui["reset"], interp_box,
        w.HBox([ui["folder"], ui["save"]]), ui["saved"],
    ])
    view = w.VBox([ui["image"], w.HBox([ui["points"], ui["numbers"]]), ui["status"]])
    return w.HBox([view, controls])


class ExplorerView:
    """The widgets of one explorer: ``root`` (to display) and ``ui`` (the controls by name)."""

    def __init__(self, ex: Explorer):
        self.ex = ex
        self.syncing = False
        self.ui = _controls(ex)
        self._connect()
        self.root = _layout(self.ui, ex.n_train)

    def _guard(self, fn, *args) -> None:
        """Run an observer's action unless the UI is being synced; show errors in the status."""
        if self.syncing:
            return
        try:
            fn(*args)
        except ValueError as err:
            self.ui["status"].value = _error(str(err))

    def _connect(self) -> None:
        ex, ui, guard = self.ex, self.ui, self._guard
        for k, slider in enumerate(ui["components"]):
            slider.observe(lambda ch, k=k: guard(ex.set_component, k, ch["new"]), names="value")
        ui["points"].observe(lambda ch: guard(ex.set_display, ch["new"], None), names="value")
        ui["numbers"].observe(lambda ch: guard(ex.set_display, None, ch["new"]), names="value")
        ui["reset"].on_click(lambda _: guard(ex.reset_components))
        ui["seed"].observe(lambda ch: guard(ex.set_seed, ch["new"]), names="value")
        ui["mean"].on_click(lambda _: guard(ex.set_mean))

        def interpolate(_=None) -> None:
            guard(ex.set_interpolation, ui["a"].value, ui["b"].value, ui["t"].value,
                  ui["mirror"].value)

        for key in ("a", "b", "t", "mirror"):
            ui[key].observe(interpolate, names="value")
        ui["save"].on_click(lambda _: self._save())

    def _save(self) -> None:
        ui = self.ui
        try:
            png, pts = self.ex.save(ui["folder"].value.strip() or None)
        except (OSError, ValueError) as err:
            ui["saved"].value = _error(str(err))
            return
        ui["saved"].value = f"saved {html.escape(str(png))}<br>and {html.escape(str(pts))}"
        print(f"saved {png} and {pts}")

    def sync(self) -> None:
        """Push the explorer's state into the widgets (observers muted) and redraw."""
        ex, ui = self.ex, self.ui
        self.syncing = True
        try:
            for slider, value in zip(ui["components"], ex.offsets):
                slider.value = float(value)
            ui["points"].value, ui["numbers"].value = ex.show_points, ex.show_numbers
            if ex.seed is not None:
                ui["seed"].value = ex.seed
            if ex.n_train:
                a, b, t, mirror = ex.interpolation
                ui["a"].value, ui["b"].value, ui["t"].value, ui["mirror"].value = a, b, t, mirror
        finally:
            self.syncing = False
        ui["image"].value = encode_png(ex.display_image())
        z = ex.current_z()
        ui["status"].value = (
            f"<b>z</b>: {html.escape(ex.mode)}"
            + (" + slider offsets" if ex.offsets.any() else "")
            + f" &nbsp;·&nbsp; max |z| = {np.abs(z).max():.2f}"
            + ("" if (u := ex.label_uncertainty()) is None
               else f" &nbsp;·&nbsp; label uncertainty {u:.3f} (NME units)")
            + f"<br><small>sliders: {html.escape(ex.directions.source)}</small>")
        if ex.z_train is not None:
            a, b, mirror = ui["a"].value, ui["b"].value, ui["mirror"].value
            for key, face in (("face_a", ex.dataset_face(a)),
                              ("face_b", ex.dataset_face(a, True) if mirror else ex.dataset_face(b))):
                if face is not None:
                    ui[key].value = encode_png(annotate_face(face, np.zeros((0, 2)),
                                                             max(1, 96 // face.shape[0]),
                                                             points=False))

"""``explore()``: the explorer of the trained models in one JupyterLab call.

:func:`load_explorer` builds a :class:`facelm.apps.explorer.Explorer` from the pipeline's
files (``DEFAULT_PATHS`` under the project root) or from objects; :func:`explore` returns its
widget.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facelm.apps.explorer import DEFAULT_PATHS, Explorer
from facelm.evaluation.results import label_generator_path

__all__ = ["load_explorer", "explore"]


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
    and the label generator params.yaml's ``lgen.kind`` names (``data/lgen/lgen.safetensors``
    or ``data/lgen/features.safetensors``) under the project root (``root``, default
    :func:`facelm.paths.project_root`). ``latents``/``mirror_latents``/``faces``: an array, a
    ``.npy`` path, None for the default file when it exists, or False for none. ``kwargs`` go
    to :class:`Explorer` (``n_components``, ``seed``, ``scale``, ``out_dir``).
    """
    from facelm.config import load_params
    from facelm.models.began import load_generator
    from facelm.models.lgen import load_label_generator
    from facelm.paths import project_root

    cached: list[Path] = []

    def root_fn() -> Path:
        if not cached:
            cached.append(Path(root) if root is not None else project_root())
        return cached[0]

    def model(value: Any, key: str, loader):
        if isinstance(value, nn.Module):
            return value
        if value is None:
            path = (root_fn() / DEFAULT_PATHS[key] if key != "lgen" else label_generator_path(
                root_fn(), load_params(root_fn() / "params.yaml").lgen.kind))
        else:
            path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: no weights at {path} (train the models first: `dvc repro`)")
        return loader(path, device=device)

    G = model(generator, "generator", load_generator)
    L = model(lgen, "lgen", load_label_generator)
    if root is not None and "out_dir" not in kwargs:
        kwargs["out_dir"] = Path(root) / DEFAULT_PATHS["out_dir"]
    z_mirror = _load_array(mirror_latents, "mirror_latents", root_fn)
    if z_mirror is not None and mirror_latents is None and "mirror_index" not in kwargs:
        choice = root_fn() / Path(DEFAULT_PATHS["mirror_latents"]).parent / "mirror.json"
        if choice.is_file():  # which training face each mirror latent belongs to
            kwargs["mirror_index"] = json.loads(choice.read_text())["index"]
    return Explorer(G, L, z_train=_load_array(latents, "latents", root_fn), z_mirror=z_mirror,
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

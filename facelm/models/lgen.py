"""L-Gen (paper section V, Table I): an MLP from the latent z to facial landmarks.

``LGen`` is Table I: z_dim 64 -> 128 -> 128 -> 128 -> 2 * n_points, ReLU, sigmoid output
(landmarks in unit coordinates), 53,986 parameters for 49 points. Its trainer is
:func:`facelm.training.lgen.train_lgen`; its file is safetensors with the architecture in
the metadata, so :func:`load_lgen` rebuilds it from the file alone.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelm.checkpoint import load_weights, save_weights
from facelm.config import BEGANParams, LGenParams
from facelm.landmarks import N_POINTS
from facelm.models import feature_lgen
from facelm.models.common import glorot_init_
from facelm.models.feature_lgen import FeatureLGen
from facelm.tensors import pick_device

__all__ = ["FORMAT", "LGen", "save_lgen", "load_lgen", "load_label_generator"]

FORMAT = "facelm.models.lgen/1"


class LGen(nn.Module):
    """Table I: ``z [N, z_dim] -> landmarks [N, n_points, 2]`` in (0, 1).

    Hidden layers of the widths in ``hidden`` (an int ``h`` means ``[h, h, h]``) with ReLU,
    then a linear layer to ``2 * n_points`` and a sigmoid. ``hidden`` and ``z_dim`` left
    as None take ``LGenParams.hidden`` and ``BEGANParams.z_dim`` (Table I: 128, 128, 128
    and 64), so ``LGen()`` is the paper's network. Weights are Glorot-uniform with zero
    biases (Lasagne's defaults, as in the authors' code), drawn from ``seed``.
    """

    kind = "z"  # the label generator on z (``FeatureLGen.kind`` is "features")

    def __init__(self, n_points: int = N_POINTS, z_dim: int | None = None,
                 hidden: int | Sequence[int] | None = None, seed: int = 0):
        super().__init__()
        z_dim = BEGANParams().z_dim if z_dim is None else z_dim
        hidden = LGenParams().hidden if hidden is None else hidden
        one_width = isinstance(hidden, (int, np.integer))
        widths = [int(hidden)] * 3 if one_width else [int(h) for h in hidden]
        if n_points < 1 or z_dim < 1 or not widths or min(widths) < 1:
            raise ValueError(f"LGen needs n_points, z_dim >= 1 and positive hidden widths, got "
                             f"{n_points}, {z_dim}, {hidden}")
        self.n_points, self.z_dim, self.hidden = n_points, z_dim, widths
        layers: list[nn.Module] = []
        for a, b in zip([z_dim] + widths[:-1], widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers += [nn.Linear(widths[-1], 2 * n_points), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        glorot_init_(self, seed)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.n_points, 2)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return {"n_points": self.n_points, "z_dim": self.z_dim, "hidden": list(self.hidden)}


def save_lgen(path: str | Path, model: LGen) -> None:
    """Write the weights as safetensors (atomically), with the architecture in the metadata."""
    save_weights(path, model.state_dict(), model.config() | {"format": FORMAT})


def load_lgen(path: str | Path, device: str | torch.device | None = None) -> LGen:
    """Rebuild an `LGen` from a file written by `save_lgen` (eval mode, on ``device``)."""
    state, meta = load_weights(path)  # FileNotFoundError when missing
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an L-Gen file (metadata format={meta.get('format')!r})")
    model = LGen(meta["n_points"], meta["z_dim"], meta["hidden"])
    model.load_state_dict(state)
    return model.to(pick_device(device)).eval()


def load_label_generator(path: str | Path, device: str | torch.device | None = None
                         ) -> LGen | FeatureLGen:
    """Either kind of label generator from its file, by the format in its metadata:
    an `LGen` (``kind == "z"``) or a `FeatureLGen` (``kind == "features"``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"label generator file not found: {path}")
    try:
        fmt = load_weights(path)[1].get("format")
    except Exception as err:  # not safetensors at all
        raise ValueError(f"{path} is not a label generator file ({type(err).__name__})") from None
    if fmt == FORMAT:
        return load_lgen(path, device)
    if fmt == feature_lgen.FORMAT:
        return feature_lgen.load_feature_lgen(path, device)
    raise ValueError(f"{path} is not a label generator file (metadata format={fmt!r}; expected "
                     f"{FORMAT!r} or {feature_lgen.FORMAT!r})")

"""BEGAN models (Berthelot et al. 2017) with the paper authors' architecture.

The generator is a decoder: Linear z -> 8x8xw (no activation), then at every resolution
from 8 px up to size/2 two 3x3 convs (w channels, ELU) and x2 nearest upsampling, two more
3x3 convs + ELU at full size, and a 3x3 conv to RGB with no output activation.
The discriminator is an auto-encoder: an encoder (three 3x3 convs + ELU; then per halving
a 1x1 conv without activation that widens to (i+1)*w channels, 2x2 average pooling and two
3x3 convs + ELU; a Linear to the bottleneck, no activation) followed by a decoder of the
generator's architecture with its own weights. ``D(x)`` returns the reconstruction.
"same" padding everywhere, no skip connections, Glorot-uniform weights, zero biases,
exactly as in the authors' Theano/Lasagne code (64 wide, 64-d z and bottleneck:
G 637,251 / D 6,171,523 parameters at 128 px).

Models take NCHW float images in [-1, 1] and z of shape ``[N, z_dim]`` (uniform in
[-1, 1] during training; the models themselves do not clamp z).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelm.checkpoint import load_weights, save_weights
from facelm.models.common import glorot_init_, unwrap
from facelm.tensors import pick_device

__all__ = ["SIZES", "Generator", "Discriminator", "Encoder", "CodeEncoder", "save_model",
           "load_generator", "load_discriminator", "load_code_encoder"]

SIZES = (32, 64, 128)
_FORMAT = 1  # bump when the parameter layout changes


def _check_args(size: int, width: int, z_dim: int) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if not (isinstance(width, int) and width > 0):
        raise ValueError(f"width must be a positive int, got {width!r}")
    if not (isinstance(z_dim, int) and z_dim > 0):
        raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")


def _conv(c_in: int, c_out: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class Decoder(nn.Module):
    """z ``[N, z_dim]`` -> image ``[N, 3, size, size]`` (unbounded; ~[-1, 1] once trained).

    ``skip``: the BEGAN paper's skip connections (its section 3.5): the first 8x8 map h0,
    upsampled to each block's resolution, is concatenated to the block's input, so every
    scale sees the layout directly (the paper reports sharper faces). Off in the authors'
    code and in the paper's setting; the 1st conv of each block then reads 2w channels.
    """

    def __init__(self, size: int, width: int, z_dim: int, skip: bool = False):
        super().__init__()
        _check_args(size, width, z_dim)
        self.size, self.width, self.z_dim, self.skip = size, width, z_dim, skip
        self.fc = nn.Linear(z_dim, 8 * 8 * width)
        n_up = int(math.log2(size // 8))  # 8 -> 16 -> ... -> size
        if skip:
            self.blocks = nn.ModuleList(
                nn.Sequential(_conv(2 * width, width), nn.ELU(), _conv(width, width), nn.ELU())
                for _ in range(n_up + 1))
            self.to_rgb = _conv(width, 3)
            return
        layers: list[nn.Module] = []
        for _ in range(n_up):
            layers += [_conv(width, width), nn.ELU(), _conv(width, width), nn.ELU(),
                       nn.Upsample(scale_factor=2, mode="nearest")]
        layers += [_conv(width, width), nn.ELU(), _conv(width, width), nn.ELU(),
                   _conv(width, 3)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(z)[0]  # the maps are references kept on the way: no extra work

    def features(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(image, maps)``: the image ``forward(z)`` gives and the decoder's intermediate
        maps, coarse to fine: the 8x8 map h0, then each resolution's block output (after its
        two convs, before upsampling; the last one is what the RGB conv reads)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {tuple(z.shape)}")
        h0 = self.fc(z).view(-1, self.width, 8, 8)
        maps = [h0]
        if not self.skip:
            x, layers = h0, list(self.body)
            for i, layer in enumerate(layers):
                x = layer(x)
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if isinstance(nxt, nn.Upsample) or i + 2 == len(layers):
                    maps.append(x)
            return x, maps
        x = h0
        for i, block in enumerate(self.blocks):
            if i:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            h = F.interpolate(h0, scale_factor=float(2 ** i), mode="nearest") if i else h0
            x = block(torch.cat([x, h], 1))
            maps.append(x)
        return self.to_rgb(x), maps


class Encoder(nn.Module):
    """Image ``[N, 3, size, size]`` -> bottleneck ``[N, h_dim]``."""

    def __init__(self, size: int, width: int, h_dim: int):
        super().__init__()
        _check_args(size, width, h_dim)
        self.size = size
        layers: list[nn.Module] = [_conv(3, width), nn.ELU(), _conv(width, width), nn.ELU(),
                                   _conv(width, width), nn.ELU()]
        c = width
        for i in range(1, int(math.log2(size // 8)) + 1):  # size -> ... -> 8
            c_new = (i + 1) * width
            # the 1x1 conv ("red" layer) only changes the channel count: no activation
            layers += [_conv(c, c_new, 1), nn.AvgPool2d(2),
                       _conv(c_new, c_new), nn.ELU(), _conv(c_new, c_new), nn.ELU()]
            c = c_new
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * 8 * c, h_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"images must have shape [N, 3, {self.size}, {self.size}], "
                             f"got {tuple(x.shape)}")
        return self.fc(self.body(x).flatten(1))


class Generator(Decoder):
    """BEGAN generator: the decoder architecture. ``seed`` fixes the Glorot init."""

    def __init__(self, size: int, width: int, z_dim: int, seed: int = 0,
                 skip: bool = False):
        super().__init__(size, width, z_dim, skip)
        glorot_init_(self, seed)

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return _config(self)


class Discriminator(nn.Module):
    """BEGAN discriminator: auto-encoder whose forward returns the reconstruction of x.

    ``z_dim`` is its bottleneck N_h (the paper's notation), which need not equal G's N_z.
    """

    def __init__(self, size: int, width: int, z_dim: int, seed: int = 0,
                 skip: bool = False):
        super().__init__()
        self.size, self.width, self.z_dim, self.skip = size, width, z_dim, skip
        self.encoder = Encoder(size, width, z_dim)
        self.decoder = Decoder(size, width, z_dim, skip)
        glorot_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return _config(self)


class CodeEncoder(Encoder):
    """The mode regulariser's encoder (``began.recon_weight`` > 0): x -> z in (-1, 1).

    D's encoder architecture with a tanh on its output, so its codes lie in the cube G is
    trained on. Stage 02 trains it beside G (G must turn E(x) back into x) and saves the one
    paired with the kept G; the inversion may start from it (``inversion.encoder_start``).
    """

    def __init__(self, size: int, width: int, z_dim: int, seed: int = 0):
        super().__init__(size, width, z_dim)
        self.width, self.z_dim = width, z_dim
        glorot_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return _config(self)


def _config(model: nn.Module) -> dict[str, int]:
    # "skip" only when on, so files of the authors' architecture keep their exact bytes
    cfg = {"size": model.size, "width": model.width, "z_dim": model.z_dim}
    return {**cfg, "skip": True} if getattr(model, "skip", False) else cfg


_KINDS = {"Generator": Generator, "Discriminator": Discriminator, "CodeEncoder": CodeEncoder}


def save_model(path: str | os.PathLike, model: nn.Module,
               metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a Generator/Discriminator/CodeEncoder as safetensors; its constructor args go in metadata.

    ``metadata``: extra JSON-serialisable facts to store (e.g. training step, M).
    Wrapped models (DDP, torch.compile) are unwrapped first.
    """
    model = unwrap(model)
    kind = type(model).__name__
    if kind not in _KINDS:
        raise ValueError(f"model must be one of {sorted(_KINDS)}, got {kind}")
    meta = {**(metadata or {}), "kind": kind, "format": _FORMAT, **model.config()}
    return save_weights(path, model.state_dict(), meta)


def _load(path: str | os.PathLike, kind: str, device: str | torch.device | None) -> nn.Module:
    state, meta = load_weights(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, expected a {kind!r}")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {_FORMAT}")
    model = _KINDS[kind](size=meta["size"], width=meta["width"], z_dim=meta["z_dim"],
                         **({"skip": True} if meta.get("skip") else {}))
    model.load_state_dict(state)
    return model.to(pick_device(device)).eval()


def load_generator(path: str | os.PathLike, device: str | torch.device | None = None
                   ) -> Generator:
    """Rebuild a :class:`Generator` from a file written by :func:`save_model`."""
    return _load(path, "Generator", device)  # type: ignore[return-value]


def load_discriminator(path: str | os.PathLike, device: str | torch.device | None = None
                       ) -> Discriminator:
    """Rebuild a :class:`Discriminator` from a file written by :func:`save_model`."""
    return _load(path, "Discriminator", device)  # type: ignore[return-value]


def load_code_encoder(path: str | os.PathLike, device: str | torch.device | None = None
                      ) -> CodeEncoder:
    """Rebuild a :class:`CodeEncoder` from a file written by :func:`save_model`."""
    return _load(path, "CodeEncoder", device)  # type: ignore[return-value]

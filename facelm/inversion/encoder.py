"""An encoder start point for the inversion: a small CNN E with G(E(x)) ~ x.

G makes training pairs for free: draw z uniform in [-1, 1]^z_dim, render G(z), and teach E
to give z back (mean squared error in z; a tanh output keeps it in the cube). On its own
that fits G's images only: measured on a short 32 px generator, E(x) of a data face started
Adam at L1 0.176 against 0.200 from a random z, because data faces lie off G's range. So E
also learns from the data faces themselves, through G, with the inversion's own loss
|x - G(E(x))| (as the in-domain encoder of Zhu et al. 2020): that start is at L1 0.109, and
60 Adam steps from it beat 120 from a random z (params.yaml has the table). E(x) carries the
face's layout (pose, where the eyes and mouth are); Adam refines it. At 32 px and width 16,
200 steps train in about 15 s of one CPU core. The default trains 600 and refines for 30:
on the default generator that matches 200 + 60 in geometry at about 2/3 of the time.

With ``inversion.encoder_start: began`` E starts instead from the encoder stage 02 trained
beside G (the mode regulariser, ``began.recon_weight``: G had to turn its codes back into
every training face), and ``encoder_steps`` more steps (0: none) adapt it to the kept G.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from facelm.config import BEGANParams, InversionParams
from facelm.models.began import load_code_encoder
from facelm.models.common import glorot_init_
from facelm.tensors import pick_device, to_tensor

__all__ = ["LatentEncoder", "build_encoder", "encode", "eval_mode", "train_encoder"]


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Modules in eval mode (no batch statistics: rows must not interact), restored after."""
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for ``module``'s parameters (backprop through it to its input only)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class LatentEncoder(nn.Module):
    """x ``[n, 3, S, S]`` in [-1, 1] -> z ``[n, z_dim]`` in (-1, 1).

    Two 3x3 convs with ELU per scale, stride-2 convs down to 4x4 (channels grow by
    ``width`` per halving), a linear layer and tanh. ``seed`` fixes the Glorot init.
    """

    def __init__(self, size: int, width: int = 16, z_dim: int = 64, seed: int = 0):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ELU()]
        ch, s = width, size
        while s > 4:
            layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.ELU(),
                       nn.Conv2d(ch, ch + width, 3, stride=2, padding=1), nn.ELU()]
            ch, s = ch + width, s // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * s * s, z_dim)
        self.size, self.width, self.z_dim = size, width, z_dim
        glorot_init_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.features(x).flatten(1)))


def _as_stored(x: torch.Tensor) -> torch.Tensor:
    """G's output as the face set stores an image: clamped and rounded to 8 bits, in [-1, 1]
    (what `facelm.tensors.to_tensor` gives back), so E trains on the inputs it will meet."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


@torch.no_grad()
def encode(E: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """E's z for images ``x`` ``[n, 3, S, S]`` in [-1, 1] (eval mode, no gradients)."""
    with eval_mode(E):
        return torch.cat([E(chunk) for chunk in torch.split(x, batch_size)])


def train_encoder(
    G: nn.Module,                 # z [n, z_dim] -> images [n, 3, S, S] in about [-1, 1]
    cfg: InversionParams,         # loss and the encoder_* settings
    *,
    seed: int,                    # E's init, the stream of z and of data faces (params.seed in stage 03)
    images: np.ndarray | None = None,  # uint8 [N, S, S, 3] data faces (may be a memmap); None: pairs only
    device: str | torch.device | None = None,  # None: the device of G's parameters
    progress: bool = False,
    start: nn.Module | None = None,    # x -> z in (-1, 1) to start from (copied); None: a fresh E
) -> nn.Module:
    """Train an encoder on fresh pairs (z, G(z)) and, if given, on data faces.

    ``cfg.encoder_steps`` Adam steps (lr ``cfg.encoder_lr``, linearly decayed to zero over
    the run). Each step draws a new batch of ``cfg.encoder_batch_size`` z and minimises the
    mean squared error between E(G(z)) and z (G's images rounded to 8 bits first, as stored
    faces are); with ``images`` and ``cfg.encoder_data_weight`` > 0 it also draws as many data
    faces x (with replacement) and adds that weight times the inversion's loss (``cfg.loss``)
    of G(E(x)) against x. G is used in eval mode, frozen and unchanged. The z and the face
    draws come from one CPU generator seeded with ``seed``, and E's weights from ``seed`` too,
    so equal inputs give equal encoders (bit-exact on CPU with equal thread counts). E is a
    fresh `LatentEncoder` (``cfg.encoder_width``, weights from ``seed``), or a copy of ``start``
    (``start`` itself is left unchanged); with ``cfg.encoder_steps`` 0 that copy is returned as it
    is. Returns E in eval mode on G's device.
    """
    if start is None and cfg.encoder_steps == 0:
        raise ValueError("train_encoder: encoder_steps 0 needs a start encoder (a fresh E would "
                         "stay at its random init); encoder_start 'began' is built by build_encoder")
    params = list(G.parameters())
    dev = pick_device(device) if device is not None or not params else params[0].device
    z_dim = int(getattr(G, "z_dim", BEGANParams().z_dim))
    with eval_mode(G), torch.no_grad():
        size = int(G(torch.zeros(1, z_dim, device=dev)).shape[-1])
    if start is None:
        E: nn.Module = LatentEncoder(size, cfg.encoder_width, z_dim, seed=seed).to(dev)
    else:
        E = copy.deepcopy(start).to(dev)
    if cfg.encoder_steps == 0:
        return E.eval()
    opt = torch.optim.Adam(E.parameters(), lr=cfg.encoder_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / cfg.encoder_steps)
    gen = torch.Generator().manual_seed(seed)
    with_data = images is not None and len(images) > 0 and cfg.encoder_data_weight > 0
    if with_data and (images.dtype != np.uint8 or images.shape[1:] != (size, size, 3)):
        raise ValueError(f"images must be uint8 [N, {size}, {size}, 3] like G(z), "
                         f"got {images.dtype} {images.shape}")
    B = cfg.encoder_batch_size
    E.train()
    with eval_mode(G), _frozen(G):
        for _ in tqdm(range(cfg.encoder_steps), desc="encoder", disable=not progress):
            z = (torch.rand(B, z_dim, generator=gen) * 2 - 1).to(dev)
            with torch.no_grad():
                x = _as_stored(G(z))
            loss = F.mse_loss(E(x), z)
            if with_data:  # sorted rows: a memmap is read forwards
                rows = np.sort(torch.randint(len(images), (B,), generator=gen).numpy())
                x = to_tensor(images[rows], dev)
                diff = G(E(x)) - x
                data_loss = (diff.abs() if cfg.loss == "l1" else diff.square()).mean()
                loss = loss + cfg.encoder_data_weight * data_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return E.eval()


def build_encoder(
    G: nn.Module,
    cfg: InversionParams,
    *,
    seed: int,
    images: np.ndarray | None,
    began_dir: str | Path,             # stage 02's folder (encoder.safetensors, for encoder_start began)
    progress: bool = False,
) -> nn.Module | None:
    """The inversion's start encoder as stage 03 builds it: None for ``cfg.init`` "random";
    else `train_encoder` from a fresh E or, with ``cfg.encoder_start`` "began", from
    ``began_dir/encoder.safetensors`` (stage 02's mode-regulariser encoder)."""
    if cfg.init == "random":
        return None
    start = None
    if cfg.encoder_start == "began":
        path = Path(began_dir) / "encoder.safetensors"
        if not path.is_file():
            raise FileNotFoundError(
                f"inversion.encoder_start is 'began' but {path} does not exist: stage 02 writes it "
                f"only with began.recon_weight > 0 (run `dvc repro 02_began`)")
        params = list(G.parameters())
        start = load_code_encoder(path, params[0].device if params else None)
    return train_encoder(G, cfg, seed=seed, images=images, start=start, progress=progress)

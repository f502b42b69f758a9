"""The label generator that reads G's features (``lgen.kind: features``).

L-Gen (Table I) maps z to landmarks directly, so its labels follow the *training faces* that
z was inverted from, not the face G draws. ``FeatureLGen`` reads where G puts the face: its
input is G's own decoder maps at z (the 8x8 map h0 and every block's output, each resized to
``grid`` x ``grid`` and stacked into one hypercolumn per cell, plus the RGB image). The
hypercolumns are standardised and reduced to their ``components`` leading principal
components (whitened; fitted by the trainer), and each cell reads its ``context`` x
``context`` neighbourhood of them. Each of ``members`` heads is a per-cell MLP on that
(i.e. a ``context`` x ``context`` conv, ReLU, a 1x1 conv) giving one heatmap per landmark,
turned into unit coordinates by a spatial soft-argmax. The heads are translation-equivariant:
a face drawn further left gives landmarks further left. The members differ by initialisation
and by the order they see the data in; their spread is each face's uncertainty
(:func:`label_uncertainty`).

All members are one pair of batched matmuls (grouped convolutions), so the ensemble is one
forward pass. A frozen copy of G lives inside the model, so the file is self-contained; the
digest of G's weights is kept in the metadata (:meth:`FeatureLGen.matches` compares it with a
generator).
Its trainer is :func:`facelm.training.feature_lgen.train_feature_lgen`.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facelm.checkpoint import load_weights, save_weights, state_digest
from facelm.config import FeatureLabelParams
from facelm.landmarks import N_POINTS, NORMALISER
from facelm.models.began import Generator
from facelm.models.common import glorot_init_
from facelm.tensors import pick_device

__all__ = ["FORMAT", "FeatureLGen", "MemberHeads", "generator_digest", "hypercolumns",
           "feature_channels", "context_columns", "soft_argmax", "label_uncertainty",
           "save_feature_lgen", "load_feature_lgen"]

FORMAT = "facelm.models.feature_lgen/1"
# the input transform: measured on a validation split of training pairs (docs/experiments.md)
COMPONENTS = 32  # principal components of the hypercolumn kept (of 67 at 32 px, width 16)
CONTEXT = 3      # each cell reads its 3x3 neighbourhood (a 3x3 first conv); 1: the cell alone
RGB = True       # the image itself is one of the feature maps


def generator_digest(G: nn.Module) -> str:
    """sha256 of G's weights: equal iff two generators are the same."""
    return state_digest(G.state_dict())


def _resize(x: torch.Tensor, grid: int) -> torch.Tensor:
    """A map to ``grid`` x ``grid``: area average when shrinking, bilinear when enlarging."""
    if x.shape[-1] == grid:
        return x
    if x.shape[-1] > grid:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)


def hypercolumns(G: Generator, z: torch.Tensor, grid: int, rgb: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One G pass: ``(G(z) [N, 3, S, S], features [N, C, grid, grid])``, where the
    features are G's maps (h0, each block's output and, with ``rgb``, the image), each
    resized to the grid and concatenated along channels."""
    image, maps = G.features(z)
    maps = maps + [image] if rgb else maps
    return image, torch.cat([_resize(m, grid) for m in maps], 1)


def feature_channels(G: Generator, rgb: bool = True) -> int:
    """Channels of :func:`hypercolumns` for this generator's architecture."""
    n_maps = 1 + int(math.log2(G.size // 8)) + 1  # h0 and one block per resolution 8..size
    return n_maps * G.width + (3 if rgb else 0)


def context_columns(x: torch.Tensor, context: int) -> torch.Tensor:
    """``[N, K, g, g]`` -> ``[N, K * context², g, g]``: each cell's ``context`` x ``context``
    neighbourhood (zeros beyond the border) stacked along channels, so that a 1x1 conv on the
    result is a ``context`` x ``context`` conv on ``x``."""
    if context == 1:
        return x
    n, k, g = x.shape[0], x.shape[1], x.shape[-1]
    return F.unfold(x, context, padding=context // 2).view(n, k * context * context, g, g)


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Heatmap logits ``[..., g, g]`` -> the expected cell centre ``[..., 2]`` under their
    softmax, in unit coordinates (x from the column, y from the row; cell i's centre is at
    (i + 0.5) / g)."""
    g = logits.shape[-1]
    if logits.ndim < 2 or logits.shape[-2] != g:
        raise ValueError(f"soft_argmax needs square heatmaps [..., g, g], got {tuple(logits.shape)}")
    centres = (torch.arange(g, device=logits.device, dtype=logits.dtype) + 0.5) / g
    cells = torch.stack([centres.repeat(g), centres.repeat_interleave(g)], 1)  # [g*g, (x, y)]
    return logits.flatten(-2).softmax(-1) @ cells


def label_uncertainty(members: torch.Tensor) -> torch.Tensor:
    """``[M, N, P, 2]`` members' landmarks -> ``[N]``: the mean over points of the RMS
    distance of the members from their mean, divided by the mean shape's inter-ocular
    distance (the NME's normaliser), i.e. in NME units. 0 when all members agree."""
    if members.ndim != 4 or members.shape[-1] != 2 or members.shape[2] not in NORMALISER:
        raise ValueError(f"label_uncertainty needs [M, N, P, 2] with P in {sorted(NORMALISER)}, "
                         f"got {tuple(members.shape)}")
    mean = members.mean(0)
    rms = (members - mean).pow(2).sum(-1).mean(0).sqrt()   # [N, P]
    a, b = NORMALISER[members.shape[2]]
    iod = (mean[:, a] - mean[:, b]).norm(dim=-1)
    return rms.mean(-1) / iod.clamp_min(1e-12)


class MemberHeads(nn.Module):
    """``members`` per-cell MLPs (C -> hidden -> P heatmap logits, ReLU), i.e. two grouped
    1x1 convolutions (on `context_columns`, the first is a 3x3 conv), held as batched
    matrices: the members are one batched matmul (on CPU about 1.5x faster a training step
    than ``Conv2d(groups=members)``, whose backward is slow). Member m's weights are
    Glorot-uniform from its own seed ``seed + m``, biases zero."""

    def __init__(self, c_in: int, n_points: int, members: int, hidden: int, seed: int = 0):
        super().__init__()
        if min(c_in, n_points, members, hidden) < 1:
            raise ValueError(f"MemberHeads needs positive sizes, got c_in={c_in}, "
                             f"n_points={n_points}, members={members}, hidden={hidden}")
        self.c_in, self.n_points, self.members, self.hidden = c_in, n_points, members, hidden
        self.w1 = nn.Parameter(torch.empty(members, hidden, c_in))
        self.b1 = nn.Parameter(torch.zeros(members, hidden, 1))
        self.w2 = nn.Parameter(torch.empty(members, n_points, hidden))
        self.b2 = nn.Parameter(torch.zeros(members, n_points, 1))
        with torch.no_grad():  # each member initialised like a standalone network of its own
            for m in range(members):
                one = glorot_init_(nn.Sequential(nn.Linear(c_in, hidden), nn.Linear(hidden, n_points)),
                                   seed + m)
                self.w1[m], self.w2[m] = one[0].weight, one[1].weight

    def _logits(self, x_t: torch.Tensor, n: int, g: int) -> torch.Tensor:
        """Cells as columns ``[1 or M, C, n*g*g]`` -> heatmap logits ``[M, P, n, g, g]``."""
        h = torch.relu(torch.matmul(self.w1, x_t) + self.b1)     # [M, hidden, n*g*g]
        return torch.baddbmm(self.b2, self.w2, h).view(self.members, self.n_points, n, g, g)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, g, g]`` (the same for every member) -> logits ``[M, N, P, g, g]``."""
        if x.ndim != 4 or x.shape[1] != self.c_in or x.shape[2] != x.shape[3]:
            raise ValueError(f"features must be [N, {self.c_in}, g, g], got {tuple(x.shape)}")
        n, g = x.shape[0], x.shape[-1]
        x_t = x.transpose(0, 1).reshape(1, self.c_in, -1)
        return self._logits(x_t, n, g).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, g, g]`` -> every member's landmarks ``[M, N, P, 2]``."""
        return soft_argmax(self.logits(x))

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """Each member its own batch: cells-major features ``[M, n, g*g, C]`` (member m reads
        ``x[m]``) -> landmarks ``[M, n, P, 2]``. The training path: members see different
        shuffles, and the batch is read in place (no copy)."""
        if x.ndim != 4 or x.shape[0] != self.members or x.shape[-1] != self.c_in:
            raise ValueError(f"features must be [{self.members}, n, g*g, {self.c_in}], got {tuple(x.shape)}")
        n, g = x.shape[1], math.isqrt(x.shape[2])
        if g * g != x.shape[2]:
            raise ValueError(f"features must have a square number of cells, got {x.shape[2]}")
        x_t = x.reshape(self.members, -1, self.c_in).transpose(1, 2)   # a view
        return soft_argmax(self._logits(x_t, n, g)).transpose(1, 2)


class FeatureLGen(nn.Module):
    """Landmarks of the face G draws, read from G's features: ``z [N, z_dim] -> [N, P, 2]``
    (the members' mean, unit coordinates). ``self.G`` is a frozen copy of ``G``. The
    hypercolumns are standardised by ``feat_mean`` / ``feat_std`` and projected by ``proj``
    (``[components, C]``: whitened principal axes), all set by the trainer from the training
    features and saved with the weights. ``components`` is capped at the hypercolumn's
    channels (a tiny G has fewer)."""

    kind = "features"

    def __init__(self, G: Generator, n_points: int = N_POINTS, members: int | None = None,
                 grid: int | None = None, hidden: int | None = None, components: int = COMPONENTS,
                 context: int = CONTEXT, rgb: bool = RGB, seed: int = 0):
        super().__init__()
        d = FeatureLabelParams()  # members, grid and hidden left as None take lgen.features' defaults
        members, grid, hidden = (d.members if members is None else members, d.grid if grid is None else grid,
                                 d.hidden if hidden is None else hidden)
        if context not in (1, 3, 5) or components < 1:
            raise ValueError(f"FeatureLGen needs context 1, 3 or 5 and components >= 1, got "
                             f"{context}, {components}")
        self.G = copy.deepcopy(G).eval().requires_grad_(False)
        self.z_dim, self.n_points, self.n_members = G.z_dim, n_points, members
        self.grid, self.hidden, self.context, self.rgb = grid, hidden, context, rgb
        c = feature_channels(G, rgb)
        self.components = min(components, c)
        self.register_buffer("feat_mean", torch.zeros(c))
        self.register_buffer("feat_std", torch.ones(c))
        self.register_buffer("proj", torch.eye(self.components, c))
        self.heads = MemberHeads(self.components * context ** 2, n_points, members, hidden, seed)
        self.generator_digest = generator_digest(self.G)

    def train(self, mode: bool = True) -> FeatureLGen:
        super().train(mode)
        self.G.eval()  # G is frozen: always in eval mode
        return self

    @torch.no_grad()
    def reduced(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One G pass: ``(G(z), principal components [N, components, grid, grid])``."""
        image, feats = hypercolumns(self.G, z, self.grid, self.rgb)
        return image, self.project(feats)

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw hypercolumns ``[N, C, g, g]`` -> standardised principal components ``[N, K, g, g]``."""
        x = (feats - self.feat_mean.view(1, -1, 1, 1)) / self.feat_std.view(1, -1, 1, 1)
        return torch.einsum("kc,ncij->nkij", self.proj, x)

    def features(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One G pass: ``(G(z), the heads' input [N, components * context², grid, grid])``."""
        image, x = self.reduced(z)
        return image, context_columns(x, self.context)

    def members_from_hypercolumns(self, raw: torch.Tensor) -> torch.Tensor:
        """Every member's landmarks ``[M, N, P, 2]`` from G's raw :func:`hypercolumns`
        ``[N, C, grid, grid]`` (with this model's grid and rgb): one G pass can feed several
        label generators of the same G. ``members_forward(z)`` is this on ``hypercolumns(G, z)``."""
        return self.heads(context_columns(self.project(raw), self.context))

    def members_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[M, N, P, 2]``: every member's landmarks."""
        return self.heads(self.features(z)[1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.members_forward(z).mean(0)

    def uncertainty(self, z: torch.Tensor) -> torch.Tensor:
        """``[N]``: :func:`label_uncertainty` of the members at z (NME units)."""
        return label_uncertainty(self.members_forward(z))

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One G pass: ``(G(z) [N, 3, S, S] in [-1, 1], landmarks [N, P, 2], uncertainty [N])``."""
        image, feats = self.features(z)
        members = self.heads(feats)
        return image, members.mean(0), label_uncertainty(members)

    def matches(self, G: nn.Module) -> bool:
        """Whether ``G`` is the generator these heads were trained on (same weights)."""
        return generator_digest(G) == self.generator_digest

    def config(self) -> dict:
        """Constructor arguments (besides G) that rebuild this architecture."""
        return {"n_points": self.n_points, "members": self.n_members, "grid": self.grid,
                "hidden": self.hidden, "components": self.components, "context": self.context,
                "rgb": self.rgb}


def save_feature_lgen(path: str | Path, model: FeatureLGen) -> None:
    """Write heads, feature statistics and G as safetensors (atomically); the architecture,
    G's configuration and G's digest go in the metadata."""
    meta = model.config() | {"format": FORMAT, "generator": model.G.config(),
                             "generator_digest": model.generator_digest}
    save_weights(path, model.state_dict(), meta)


def load_feature_lgen(path: str | Path, device: str | torch.device | None = None) -> FeatureLGen:
    """Rebuild a `FeatureLGen` from a file written by `save_feature_lgen` (eval mode)."""
    state, meta = load_weights(path)  # FileNotFoundError when missing
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a feature label generator file "
                         f"(metadata format={meta.get('format')!r})")
    gcfg = meta["generator"]
    G = Generator(gcfg["size"], gcfg["width"], gcfg["z_dim"], skip=bool(gcfg.get("skip", False)))
    G.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("G.")})
    keys = ("n_points", "members", "grid", "hidden", "components", "context", "rgb")
    model = FeatureLGen(G, **{k: meta[k] for k in keys})
    model.load_state_dict(state)
    if model.generator_digest != meta["generator_digest"]:
        raise ValueError(f"{path}: the generator inside does not match its recorded digest")
    return model.to(pick_device(device)).eval()

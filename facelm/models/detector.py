"""A small CNN facial landmark detector: the project's independent judge and augmentation model.

It plays the paper's 300-W-trained detector (annotating real crops), checks L-Gen's landmarks
on generated faces G(z) (it is trained on annotated faces only, never on GAN output), and is
the model trained many times over in the augmentation study, so one training of the default
32 px config takes seconds on a 2-core CPU.

Design, chosen by NME per second of training on held-out 32 px face-world faces: a plain
strided conv-BN-ReLU backbone down to a 4x4 map, a feature-pyramid-style top-down path back
to an 8x8 map (16x16 from 64 px up), one heatmap per landmark and a soft-argmax (the
softmax-weighted mean of the cell centres), trained with L1 on unit coordinates. At equal
training time it beat direct regression (flatten + linear to 2P) by ~15 % at K = 2000 faces
and ~25 % at K = 100, because the heatmaps keep the convolutions' translation equivariance;
a 3x3 conv in the head or 16x16 heatmaps at 32 px cost more than they gained.
Augmentation runs on the whole batch on the device: a random similarity transform plus
mirroring (with the landmark permutation) through one ``affine_grid``/``grid_sample``, the
same map applied to the points, and brightness/contrast jitter. Prediction averages each face
with its mirror image (``flip_test``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from facelm.checkpoint import config_hash, load_state, load_weights, save_state, save_weights
from facelm.landmarks import FLIP_PERMS, nme, to_49
from facelm.tensors import pick_device

FORMAT = "facelm.models.detector"
VERSION = 1
_SIZES = (32, 64, 128)


# ---------------------------------------------------------------------------------- model
@dataclass
class DetectorConfig:
    size: int = 32  # input side in pixels (32, 64 or 128)
    n_points: int = 49  # landmarks predicted
    width: int = 16  # channels of the first stage; doubled at each halving, capped at 8x
    depth: int = 1  # extra stride-1 convs per stage
    head_channels: int = 32  # channels of the top-down path that makes the heatmaps
    heatmap_size: int = 0  # heatmap side (power of 2, 4 .. size/2); 0 = min(size // 4, 16)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class LandmarkDetector(nn.Module):
    """Image ``[B, 3, S, S]`` in [-1, 1] -> landmarks ``[B, P, 2]`` in unit coordinates.

    Backbone: stride-2 conv-BN-ReLU stages (each followed by ``depth`` stride-1 ones) from
    ``S/2`` down to a 4x4 map, so depth grows with the image size (3 stages at 32 px, 5 at
    128 px); channels double per stage from ``width`` up to ``8 * width``. Head: a top-down
    path (1x1 lateral convs, nearest upsampling, sums, as in a feature pyramid) from the 4x4
    map up to the ``heatmap_size`` map, one 1x1 conv to ``P`` heatmaps, and a soft-argmax:
    each point is the softmax-weighted mean of the heatmap's cell centres. So predictions
    lie in ``[0.5 / R, 1 - 0.5 / R]`` for an ``R x R`` heatmap.
    """

    def __init__(self, size: int = 32, n_points: int = 49, width: int = 16, depth: int = 1,
                 head_channels: int = 32, heatmap_size: int = 0):
        super().__init__()
        if size not in _SIZES:
            raise ValueError(f"size must be one of {_SIZES}, got {size}")
        if n_points < 1 or width < 1 or depth < 0 or head_channels < 1:
            raise ValueError(f"n_points, width and head_channels must be >= 1 and depth >= 0, "
                             f"got {n_points}, {width}, {head_channels}, {depth}")
        heatmap_size = heatmap_size or min(size // 4, 16)
        sides = [size >> (i + 1) for i in range(int(math.log2(size)) - 2)]  # S/2 .. 4
        if heatmap_size not in sides:
            raise ValueError(f"heatmap_size must be one of {sides} at {size} px, got {heatmap_size}")
        self.config = DetectorConfig(size, n_points, width, depth, head_channels, heatmap_size)
        self.stages = nn.ModuleList()
        chans, c_in = [], 3
        for i in range(len(sides)):
            c = min(width * 2 ** i, 8 * width)
            self.stages.append(nn.Sequential(_block(c_in, c, 2), *[_block(c, c, 1) for _ in range(depth)]))
            chans.append(c)
            c_in = c
        self.first_lateral = sides.index(heatmap_size)
        self.laterals = nn.ModuleList(nn.Conv2d(c, head_channels, 1) for c in chans[self.first_lateral:])
        self.heatmaps = nn.Conv2d(head_channels, n_points, 1)
        centres = (torch.arange(heatmap_size, dtype=torch.float32) + 0.5) / heatmap_size
        self.register_buffer("centres", centres, persistent=False)

    @property
    def size(self) -> int:
        """Input side in pixels."""
        return self.config.size

    @property
    def n_points(self) -> int:
        return self.config.n_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        y = None
        for f, lateral in zip(reversed(feats[self.first_lateral:]), reversed(self.laterals)):
            y = lateral(f) if y is None else lateral(f) + F.interpolate(y, scale_factor=2.0, mode="nearest")
        logits = self.heatmaps(F.relu(y))
        b, p, r, _ = logits.shape
        prob = torch.softmax(logits.flatten(2).float(), -1).view(b, p, r, r)
        # soft-argmax: expected cell centre along x (columns) and y (rows)
        return torch.stack([prob.sum(2) @ self.centres, prob.sum(3) @ self.centres], -1)


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True  # mirror half the faces (only when P has a known permutation)
    shift: float = 0.06  # max translation, fraction of the image side
    scale: float = 0.08  # max relative zoom in or out (log-uniform)
    rotate: float = 12.0  # max rotation, degrees
    brightness: float = 0.15  # max additive change, in [-1, 1] image units
    contrast: float = 0.2  # max relative contrast change


def random_transform(b: int, generator: torch.Generator, cfg: AugmentConfig = AugmentConfig(),
                     can_flip: bool = True) -> dict[str, torch.Tensor]:
    """Draw ``b`` random augmentations (CPU tensors) from ``generator``: rotation ``angle``
    (radians), ``zoom``, ``shift`` ``[b, 2]`` (fraction of the side), ``mirror``, ``gain``, ``offset``."""
    def u(*shape):  # uniform in [-1, 1]
        return torch.rand(*shape, generator=generator) * 2 - 1

    mirror = torch.rand(b, generator=generator) < 0.5
    return {"angle": u(b) * math.radians(cfg.rotate),
            "zoom": torch.exp(u(b) * math.log1p(cfg.scale)),
            "shift": u(b, 2) * cfg.shift,
            "mirror": mirror & (can_flip and cfg.flip),
            "gain": 1 + u(b) * cfg.contrast,
            "offset": u(b) * cfg.brightness}


def apply_transform(x: torch.Tensor, pts: torch.Tensor, t: dict[str, torch.Tensor],
                    flip_perm: np.ndarray | torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Transform images ``[B, 3, S, S]`` in [-1, 1] and landmarks ``[B, P, 2]`` together.

    The output image is the input mirrored (when ``mirror``; ``flip_perm`` then reorders the
    points), rotated by ``angle`` and scaled by ``zoom`` about the centre, then moved by ``shift``
    (fraction of the side, +x right, +y down); then ``gain``/``offset`` change contrast/brightness.
    """
    dev = x.device
    t = {k: v.to(dev) for k, v in t.items()}
    # In normalised coordinates n = 2u - 1 (align_corners=False: -1 and 1 are the outer pixel
    # edges, matching unit coordinates u with pixel centres at (i + 0.5) / S) a point moves
    # from p to q = M p + m, M = zoom R(angle) diag(+-1, 1), m = 2 shift. grid_sample needs the
    # opposite map, from each output pixel q to where it samples the input: p = M^-1 (q - m).
    cos, sin = torch.cos(t["angle"]), torch.sin(t["angle"])
    sx = torch.where(t["mirror"], -1.0, 1.0)
    zero, one = torch.zeros_like(sx), torch.ones_like(sx)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    mirror = torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, one], -1)], -2)
    mat = rot * t["zoom"][:, None, None] @ mirror
    inv = mirror @ rot.transpose(1, 2) / t["zoom"][:, None, None]  # closed form: no solver, no sync
    move = 2 * t["shift"]
    theta = torch.cat([inv, -(inv @ move[:, :, None])], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * t["gain"][:, None, None, None] + mean + t["offset"][:, None, None, None]

    if flip_perm is not None:
        perm = torch.as_tensor(flip_perm, device=dev)
        pts = torch.where(t["mirror"][:, None, None], pts[:, perm], pts)
    q = (pts * 2 - 1) @ mat.transpose(1, 2) + move[:, None, :]
    return x.clamp(-1, 1), (q + 1) / 2


# ------------------------------------------------------------------------------- training
@dataclass
class DetectorResult:
    model: LandmarkDetector
    losses: list[float] = field(default_factory=list)  # training loss per step
    val_nme: list[tuple[int, float]] = field(default_factory=list)  # (step, mean NME)
    seconds: float = 0.0  # wall time of the training loop


def landmark_error(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-face error ``[N]``: :func:`facelm.landmarks.nme` for 49 points (68 points are
    reduced to 49 first), else the mean point-to-point distance in unit coordinates."""
    if target.shape[-2] == 68:
        return nme(to_49(pred), to_49(target))
    if target.shape[-2] == 49:
        return nme(pred, target)
    return np.linalg.norm(np.asarray(pred, np.float64) - target, axis=-1).mean(-1)


def _check_data(images, landmarks, name: str, size: int | None, n_points: int | None):
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{name}images must be a uint8 numpy array [N, S, S, 3], got "
                         f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    lm = np.asarray(landmarks)
    if lm.ndim != 3 or lm.shape[0] != images.shape[0] or lm.shape[2] != 2:
        raise ValueError(f"{name}landmarks must be [N, P, 2] with N = {images.shape[0]} "
                         f"(the number of images), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError(f"{name}landmarks hold NaN or inf")
    if size is not None and images.shape[1] != size:
        raise ValueError(f"{name}images are {images.shape[1]} px but size={size}")
    if n_points is not None and lm.shape[1] != n_points:
        raise ValueError(f"{name}landmarks have {lm.shape[1]} points but n_points={n_points}")
    return lm.astype(np.float32)


class _Images:
    """uint8 NHWC images resident on ``device`` when they fit, else read per batch."""

    def __init__(self, images: np.ndarray, device: torch.device, max_bytes: int):
        self.device, self.array, self.tensor = device, images, None
        if images.nbytes <= max_bytes:
            self.tensor = torch.from_numpy(np.array(images)).to(device)

    def __len__(self):
        return len(self.array)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float NCHW in [-1, 1] for rows ``idx`` (a CPU long tensor)."""
        if self.tensor is not None:
            u8 = self.tensor[idx.to(self.device)]
        else:  # memmap: read the rows in file order, then restore the batch order
            order, inv = np.unique(idx.numpy(), return_inverse=True)
            u8 = torch.from_numpy(self.array[order][inv]).to(self.device)
        return u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def train_detector(
    images: np.ndarray,  # uint8 [N, S, S, 3], may be a memmap
    landmarks: np.ndarray,  # float32 [N, P, 2], unit coordinates
    *,
    size: int | None = None,  # checked against the images when given
    n_points: int | None = None,  # checked against the landmarks when given
    steps: int = 1500,  # optimiser steps
    batch_size: int = 32,
    lr: float = 8e-3,  # peak AdamW learning rate (one-cycle: warm-up then cosine to ~0)
    weight_decay: float = 1e-4,
    augment: bool | AugmentConfig = True,  # True = AugmentConfig() defaults
    val_images: np.ndarray | None = None,  # held-out faces, scored every eval_every steps
    val_landmarks: np.ndarray | None = None,
    eval_every: int = 0,  # 0 = ten times per run
    seed: int = 0,  # weights, batches and augmentation
    device: str | torch.device | None = None,
    width: int = 16,  # model size: see LandmarkDetector
    depth: int = 1,
    head_channels: int = 32,
    heatmap_size: int = 0,
    progress: bool = True,  # tqdm bar
    callbacks: Sequence[Callable[[str, dict], None]] = (),  # cb(event, state): "step", "val", "end"
    checkpoint_dir: str | Path | None = None,  # resume from / save to <dir>/detector_ckpt.pt
    checkpoint_every: int = 0,  # steps between checkpoints (0 = only at the end)
    max_resident_bytes: int = 2 << 30,  # larger image sets are read per batch
) -> DetectorResult:
    """Train a :class:`LandmarkDetector` on annotated faces; return it (in eval mode) with its
    per-step losses and validation NME history.

    The default (width 16, 1500 steps of 32, one-cycle AdamW at 8e-3) reaches NME ~0.028 on
    held-out 32 px face-world faces from 2000 training faces in ~10 s on 2 CPU cores.
    Same ``seed`` on CPU => identical weights. With ``checkpoint_dir``, a rerun of the same
    call resumes where the last checkpoint left off (and returns at once when it finished).
    """
    lm = _check_data(images, landmarks, "", size, n_points)
    if (val_images is None) != (val_landmarks is None):
        raise ValueError("give both val_images and val_landmarks, or neither")
    val_lm = None
    if val_images is not None:
        val_lm = _check_data(val_images, val_landmarks, "val_", images.shape[1], lm.shape[1])
    if steps < 0 or batch_size < 1 or lr <= 0 or eval_every < 0 or checkpoint_every < 0:
        raise ValueError(f"need steps >= 0, batch_size >= 1, lr > 0, eval_every >= 0, "
                         f"checkpoint_every >= 0; got {steps}, {batch_size}, {lr}, "
                         f"{eval_every}, {checkpoint_every}")
    if len(images) == 0:
        raise ValueError("images is empty")
    aug = AugmentConfig() if augment is True else augment if augment else None
    flip_perm = FLIP_PERMS.get(lm.shape[1])
    can_flip = flip_perm is not None

    dev = pick_device(device)
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG state untouched
        torch.manual_seed(seed)
        model = LandmarkDetector(images.shape[1], lm.shape[1], width, depth, head_channels,
                                 heatmap_size)
    # channels_last: the NHWC uint8 data needs no transpose and oneDNN's convs run ~15 % faster
    model = model.to(dev, memory_format=torch.channels_last)
    lm_t = torch.from_numpy(lm).to(dev)
    if can_flip:
        flip_perm = torch.as_tensor(flip_perm, device=dev)  # once, not a copy per step
    data = _Images(images, dev, max_resident_bytes)
    gen = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                            fused=dev.type in ("cpu", "cuda"))  # one kernel for all tensors
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1),
                                                pct_start=0.15, div_factor=10, final_div_factor=100)
    result = DetectorResult(model)
    step = 0
    # a checkpoint is only resumed by the run that wrote it: same data shape and settings
    run_id = config_hash({"n": len(images), "size": images.shape[1], "n_points": lm.shape[1],
                          "steps": steps, "batch_size": batch_size, "lr": lr,
                          "weight_decay": weight_decay, "augment": asdict(aug) if aug else None,
                          "seed": seed, "model": asdict(model.config)})
    ckpt = Path(checkpoint_dir) / "detector_ckpt.pt" if checkpoint_dir is not None else None
    state = load_state(ckpt, map_location=dev) if ckpt is not None else None
    if state is not None:
        if state.get("run_id") != run_id:
            raise ValueError(f"{ckpt} was written by a training run with other data or settings; "
                             "remove it or pass another checkpoint_dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        step, result.losses = state["step"], list(state["losses"])
        result.val_nme = [(int(s), float(v)) for s, v in state["val_nme"]]

    pending: list[torch.Tensor] = []  # losses still on the device: one host sync per flush

    def flush():
        if pending:
            result.losses.extend(torch.stack(pending).tolist())
            pending.clear()

    def checkpoint():
        if ckpt is None:
            return
        flush()
        save_state(ckpt, {"run_id": run_id, "step": step, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "generator": gen.get_state(), "losses": result.losses,
                          "val_nme": [list(v) for v in result.val_nme],
                          "config": asdict(model.config)})

    def validate():
        pred = predict_landmarks(model, val_images, device=dev)
        model.train()
        value = float(landmark_error(pred, val_lm).mean())
        result.val_nme.append((step, value))
        for cb in callbacks:
            cb("val", {"step": step, "val_nme": value, "model": model})

    every = eval_every or max(steps // 10, 1)
    bar = tqdm(total=steps, initial=step, disable=not progress, desc="detector")
    t0 = time.perf_counter()
    model.train()
    while step < steps:
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        x, y = data.batch(idx), lm_t[idx.to(dev)]
        if aug is not None:
            x, y = apply_transform(x, y, random_transform(batch_size, gen, aug, can_flip), flip_perm)
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        pending.append(loss.detach())
        bar.update(1)
        if callbacks or len(pending) >= 100:
            flush()
        for cb in callbacks:
            cb("step", {"step": step, "loss": result.losses[-1], "lr": sched.get_last_lr()[0]})
        if val_lm is not None and (step % every == 0 or step == steps):
            validate()
        if checkpoint_every and step % checkpoint_every == 0:
            checkpoint()
    flush()
    bar.close()
    result.seconds = time.perf_counter() - t0
    model.eval()
    checkpoint()
    for cb in callbacks:
        cb("end", {"step": step, "model": model, "losses": result.losses, "val_nme": result.val_nme})
    return result


# ------------------------------------------------------------------------------ inference
@torch.no_grad()
def predict_landmarks(model: LandmarkDetector, images: np.ndarray, *, batch_size: int = 256,
                      flip_test: bool = True, device: str | torch.device | None = None) -> np.ndarray:
    """Landmarks ``float32 [N, P, 2]`` (unit coordinates) for uint8 images ``[N, S, S, 3]``.

    ``flip_test`` averages each prediction with the mirrored prediction of the mirrored image
    (when P has a known mirror permutation): twice the compute, ~7 % lower NME on the face
    world. Reads ``images`` (possibly a memmap) one batch at a time. ``device`` None keeps the
    model where it is.
    """
    size = model.config.size
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 [N, {size}, {size}, 3] for this model, got "
                         f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = next(model.parameters()).device if device is None else pick_device(device)
    model.to(dev).eval()
    perm = FLIP_PERMS.get(model.config.n_points) if flip_test else None
    out = np.empty((len(images), model.config.n_points, 2), np.float32)
    for i in range(0, len(images), batch_size):
        u8 = torch.from_numpy(np.array(images[i:i + batch_size])).to(dev)  # copy: memmaps are read-only
        x = u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        pred = model(x)
        if perm is not None:
            mirrored = model(x.flip(3))[:, torch.as_tensor(perm, device=dev)]
            mirrored[..., 0] = 1 - mirrored[..., 0]
            pred = (pred + mirrored) / 2
        out[i:i + len(u8)] = pred.float().cpu().numpy()
    return out


# ---------------------------------------------------------------------------------- files
def save_detector(path: str | Path, model: LandmarkDetector) -> None:
    """Write the weights as safetensors with the constructor arguments in the metadata."""
    save_weights(path, model.state_dict(),
                 {"format": FORMAT, "version": VERSION, "config": asdict(model.config)})


def load_detector(path: str | Path, device: str | torch.device | None = None) -> LandmarkDetector:
    """Rebuild a detector from a file written by :func:`save_detector`, in eval mode."""
    state, meta = load_weights(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a facelm detector file (format {meta.get('format')!r})")
    model = LandmarkDetector(**meta["config"])
    model.load_state_dict(state)
    return model.to(pick_device(device)).eval()

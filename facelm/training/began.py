"""BEGAN loss and trainer: checkpoint/resume, DistributedDataParallel under torchrun,
channels_last + bf16 autocast (+ optional torch.compile) on CUDA, plain fp32 on CPU.

Single process::

    result = train_began(images, out_dir="models/began", size=32, steps=8000)

Several GPUs (or CPU processes, gloo) on one machine::

    torchrun --standalone --nproc_per_node 4 -m facelm.training.began \
        --images faces.npy --out models/began --size 128 --width 64 --steps 200000
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel as DDP

from facelm.models.began import SIZES, Discriminator, Generator, save_model
from facelm.checkpoint import config_hash, load_state, save_state, state_digest
from facelm.tensors import pick_device, sample_z, to_uint8

__all__ = ["BEGANLoss", "BEGANResult", "train_began", "main"]

log = logging.getLogger(__name__)
Callback = Callable[[str, dict], None]
# columns of the per-step history, in order ("lr" is appended on the host)
HISTORY_COLUMNS = ("loss_D", "loss_G", "L_real", "L_fake", "k", "M", "lr")
_CKPT_FORMAT = 1


# ----------------------------------------------------------------------------- loss
class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` (a tensor)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def _strip_ddp(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, DDP) else m


class BEGANLoss:
    """BEGAN objective (Berthelot et al. 2017) with auto-encoder loss L(v) = mean |v - D(v)|^eta.

    - ``L_D = L(x) - k_t * L(G(z_D))``, ``L_G = L(G(z_G))``;
    - ``k_{t+1} = clip(k_t + lambda_k * (gamma * L(x) - L(G(z_G))), 0, 1)``;
    - convergence ``M = L(x) + |gamma * L(x) - L(G(z_G))|``.

    ``eta``: BEGAN's authors and the facelm paper's own code use eta = 1 (pixel-mean L1);
    the paper's text writes eta = 2. The mean runs over pixels and channels.
    """

    def __init__(self, gamma: float = 0.5, lambda_k: float = 0.001, eta: float = 1.0):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        if lambda_k < 0.0:
            raise ValueError(f"lambda_k must be >= 0, got {lambda_k!r}")
        if eta <= 0.0:
            raise ValueError(f"eta must be > 0, got {eta!r}")
        self.gamma, self.lambda_k, self.eta = float(gamma), float(lambda_k), float(eta)

    def recon(self, v: torch.Tensor, v_rec: torch.Tensor) -> torch.Tensor:
        """L(v) given v and D(v), in float32 even under bf16 autocast."""
        d = (v.float() - v_rec.float()).abs()
        return (d if self.eta == 1.0 else d.pow(self.eta)).mean()

    def update_k(self, k: torch.Tensor, L_real: torch.Tensor, L_fake: torch.Tensor
                 ) -> torch.Tensor:
        """k_{t+1}, clipped to [0, 1] (stays on the device: no host sync)."""
        return (k + self.lambda_k * (self.gamma * L_real - L_fake)).clamp(0.0, 1.0)

    def convergence(self, L_real: torch.Tensor, L_fake: torch.Tensor) -> torch.Tensor:
        """M = L(x) + |gamma * L(x) - L(G(z))|."""
        return L_real + (self.gamma * L_real - L_fake).abs()

    def joint(self, G: nn.Module, D: nn.Module, x: torch.Tensor, z: torch.Tensor,
              k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The authors' joint step: one G(z), D on real and fake, z_D = z_G.

        Returns ``(objective, L_real, L_fake)``. A single ``objective.backward()`` leaves
        dL_D/dtheta_D in D's ``.grad`` and dL_G/dtheta_G in G's ``.grad``, as two
        backward passes over the authors' graph would, but at the cost of one: D's pass
        on the fake batch uses its parameters through an identity whose gradient is
        scaled by -k, so theta_D receives dL(x) - k dL(G(z)) while G, upstream of
        D's *input*, receives the unscaled dL(G(z)). G and D may be DDP-wrapped.
        """
        fake = G(z)
        L_real = self.recon(x, D(x))
        D_inner = _strip_ddp(D)
        scale = (-k).detach().to(torch.float32)
        params = {n: _ScaleGrad.apply(p, scale) for n, p in D_inner.named_parameters()}
        L_fake = self.recon(fake, functional_call(D_inner, params, (fake,)))
        return L_real + L_fake, L_real, L_fake

    __call__ = joint

    def d_loss(self, D: nn.Module, x: torch.Tensor, fake: torch.Tensor, k: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L_D, L_real, L_fake)`` with ``fake`` detached; one D pass on both batches."""
        n = x.shape[0]
        rec = D(torch.cat([x, fake.detach()]))
        L_real, L_fake = self.recon(x, rec[:n]), self.recon(fake, rec[n:])
        return L_real - k * L_fake, L_real, L_fake

    def g_loss(self, D: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """L_G = L(G(z)); backpropagate it to G's parameters only."""
        return self.recon(fake, D(fake))


# ----------------------------------------------------------------------------- data
def _derive_seed(seed: int, *keys: int) -> int:
    """Independent 32-bit seeds for the different random streams (and ranks)."""
    return int(np.random.SeedSequence([int(seed), *keys]).generate_state(1)[0])


class _EpochSampler:
    """Batches of indices from shuffled epochs (the last partial batch of an epoch is
    dropped). Its whole state (generator, permutation, position) is checkpointable."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.batch_size].numpy()
        self.pos += self.batch_size
        return np.sort(idx)  # sorted: sequential reads from a memmap; the loss is order-free

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"].clone(), int(s["pos"])


def _fingerprint(images: np.ndarray) -> dict:
    """Cheap identity of a data set: shape and a hash of three images."""
    n = images.shape[0]
    picks = np.ascontiguousarray(images[[0, n // 2, n - 1]])
    return {"shape": list(images.shape), "sha256": state_digest({"x": torch.from_numpy(picks)})}


# ----------------------------------------------------------------------------- result
@dataclass
class BEGANResult:
    """What :func:`train_began` returns (histories cover all steps, resumed ones too)."""

    steps: int                      # optimiser steps taken in total
    M: np.ndarray                   # [steps] convergence measure per step
    k: np.ndarray                   # [steps] k_t after each step's update
    L_real: np.ndarray              # [steps] L(x)
    L_fake: np.ndarray              # [steps] L(G(z_G)) (= loss_G)
    loss_D: np.ndarray              # [steps] L_D = L(x) - k_t L(G(z_D))
    loss_G: np.ndarray              # [steps] L_G = L(G(z_G))
    lr: np.ndarray                  # [steps] learning rate used
    best_step: int                  # step at the end of the best M window (= saved G)
    best_M: float                   # that window's mean M
    resumed_from: int | None        # checkpoint step this call started from, else None
    seconds: float                  # wall time of this call's training loop
    images_per_s: float             # real images consumed per second in this call (all ranks)
    total_seconds: float            # training-loop time summed over all resumed calls
    weights_digest: str             # sha256 of final G and D weights (equal on all ranks)
    out_dir: Path = field(default_factory=Path)

    @property
    def M_final(self) -> float:
        """M averaged over the last 1 % of steps (at least one): the ``began_M_final`` metric."""
        n = max(1, len(self.M) // 100)
        return float(np.mean(self.M[-n:])) if len(self.M) else float("nan")


# ----------------------------------------------------------------------------- trainer
def _auto(flag: bool | str, dev: torch.device, name: str) -> bool:
    """True/False, "on"/"off", or "auto" (= on for CUDA)."""
    if isinstance(flag, bool):
        return flag
    if flag in ("auto", "on", "off"):
        return dev.type == "cuda" if flag == "auto" else flag == "on"
    raise ValueError(f"{name} must be True, False, 'on', 'off' or 'auto', got {flag!r}")


def _validate(images, size, width, z_dim, steps, batch_size, lr, betas, gamma, lambda_k,
              k0, eta, update, lr_decay, lr_decay_every, best_window, checkpoint_every,
              sample_every, n_sample) -> None:
    def pos_int(name, v, allow_zero=False):
        lo = 0 if allow_zero else 1
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    for name, v in [("width", width), ("z_dim", z_dim), ("steps", steps),
                    ("batch_size", batch_size), ("best_window", best_window),
                    ("n_sample", n_sample)]:
        pos_int(name, v)
    for name, v in [("lr_decay_every", lr_decay_every), ("checkpoint_every", checkpoint_every),
                    ("sample_every", sample_every)]:
        pos_int(name, v, allow_zero=True)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if not lambda_k >= 0:
        raise ValueError(f"lambda_k must be >= 0, got {lambda_k!r}")
    if not 0.0 <= k0 <= 1.0:
        raise ValueError(f"k0 must be in [0, 1], got {k0!r}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    if update not in ("joint", "alternate"):
        raise ValueError(f"update must be 'joint' or 'alternate', got {update!r}")
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1] (a multiplicative factor), got {lr_decay!r}")
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array (np.memmap is fine), got {type(images)}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 [N, {size}, {size}, 3], got "
                         f"{images.dtype} {list(images.shape)}")
    if images.shape[0] < batch_size:
        raise ValueError(f"batch_size ({batch_size}) exceeds the number of images "
                         f"({images.shape[0]})")


def _setup_distributed(device) -> tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, we_initialised): torchrun sets WORLD_SIZE/RANK/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return 0, 1, dev, False
    local = int(os.environ.get("LOCAL_RANK", "0"))  # the rank comes from the process group
    if dev.type == "cuda":
        dev = torch.device("cuda", local)  # one GPU per process
        torch.cuda.set_device(dev)
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return dist.get_rank(), dist.get_world_size(), dev, own


def train_began(
    images: np.ndarray,            # uint8 [N, size, size, 3] (np.memmap is fine: read per batch)
    *,
    out_dir: str | os.PathLike,    # weights + checkpoint/ go here
    size: int,                     # image side in px: 32, 64 or 128
    width: int = 16,               # conv filters w (paper: 64)
    z_dim: int = 64,               # latent and D-bottleneck size
    steps: int,                    # total optimiser steps (resumed steps included)
    batch_size: int = 16,          # per process; DDP's effective batch is batch_size * world
    lr: float = 1e-4,              # Adam learning rate, G and D
    betas: Sequence[float] = (0.5, 0.999),
    gamma: float = 0.5,            # diversity ratio
    lambda_k: float = 0.001,       # k_t learning rate
    k0: float = 0.0,               # initial k
    eta: float = 1.0,              # exponent in L(v) = mean |v - D(v)|^eta
    update: str = "joint",         # "joint" (authors: one forward, same z) | "alternate"
    lr_decay: float = 1.0,         # lr *= lr_decay every lr_decay_every steps
    lr_decay_every: int = 0,       # 0: constant lr
    best_window: int = 500,        # keep the G with the lowest mean M over such windows
    checkpoint_every: int = 1000,  # steps between checkpoints (0: only at the end)
    sample_every: int = 500,       # steps between "sample" callbacks (0: never)
    n_sample: int = 64,            # images per sample grid (fixed z from `seed`)
    seed: int = 0,
    device: str | torch.device | None = None,
    channels_last: bool | str = "auto",  # True/"on", False/"off", "auto": on for CUDA
    bf16: bool | str = "auto",     # bf16 autocast; same values ("auto": on for CUDA)
    compile: bool | str = False,   # torch.compile G and D (a str names the backend)
    sync_every: int | None = None,  # steps between host syncs of the stats (None: 1 CPU, 50 CUDA)
    progress: bool = True,         # tqdm bar (rank 0)
    callbacks: Iterable[Callback] = (),
) -> BEGANResult:
    """Train a BEGAN on ``images`` and write its weights to ``out_dir``.

    Files: ``generator.safetensors`` (G of the best M window), ``generator_last.safetensors``,
    ``discriminator.safetensors`` (final D), ``checkpoint/state.pt`` (full training state,
    every ``checkpoint_every`` steps and at the end).

    Resume: if ``checkpoint/state.pt`` exists and its config hash equals this call's
    (every argument that changes the numbers except ``steps``, plus the world size and a
    fingerprint of ``images``; not device/speed options), training continues from it and
    gives the same weights as an uninterrupted run (bit-exact on CPU with equal thread
    counts). Otherwise a stale checkpoint is moved to ``checkpoint/stale-<hash>.pt`` with
    a warning and training starts fresh. ``steps`` may grow between calls to extend a run.

    Callbacks ``cb(event, state)`` run on rank 0 only: "start" {step, resumed_from,
    config, world_size, device}; "resume" {step, path}; "step" {step, loss_D, loss_G,
    L_real, L_fake, k, M, lr} as floats; "best" {step, M}; "sample" {step, images:
    uint8 NHWC of G(fixed z)}; "checkpoint" {step, path}; "end" {step, result}.
    To avoid a GPU->host sync per step, the per-step stats stay on the device and are
    copied in one transfer every ``sync_every`` steps (and at best-window, sample,
    checkpoint and final steps); the "step" callbacks for those steps then run in order,
    so on CUDA they lag the GPU by at most ``sync_every`` steps.

    Under torchrun (WORLD_SIZE > 1) the process group is initialised here (NCCL on
    CUDA, gloo on CPU), G and D are wrapped in DistributedDataParallel, every rank draws
    its own batches and z (streams seeded by rank), L(x) and L(G(z)) are averaged over
    ranks so k_t stays identical, and only rank 0 writes files and calls callbacks.
    """
    _validate(images, size, width, z_dim, steps, batch_size, lr, tuple(betas), gamma,
              lambda_k, k0, eta, update, lr_decay, lr_decay_every, best_window,
              checkpoint_every, sample_every, n_sample)
    for name, flag in (("channels_last", channels_last), ("bf16", bf16)):
        _auto(flag, torch.device("cpu"), name)  # checks the value before any work
    if sync_every is not None and not (isinstance(sync_every, int) and sync_every >= 1):
        raise ValueError(f"sync_every must be None or an int >= 1, got {sync_every!r}")
    rank, world, dev, own_pg = _setup_distributed(device)
    use_cl = _auto(channels_last, dev, "channels_last")
    use_bf16 = _auto(bf16, dev, "bf16")
    use_bf16 = use_bf16 and (dev.type != "cuda" or torch.cuda.is_bf16_supported())
    if dev.type == "cuda" and sync_every is None:
        sync_every = 50
    sync_every = max(1, int(sync_every or 1))
    callbacks = list(callbacks) if rank == 0 else []
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint" / "state.pt"

    def emit(event: str, state: dict) -> None:
        for cb in callbacks:
            cb(event, state)

    config = {"size": int(size), "width": int(width), "z_dim": int(z_dim),
              "batch_size": int(batch_size),
              "lr": float(lr), "betas": [float(b) for b in betas], "gamma": float(gamma),
              "lambda_k": float(lambda_k), "k0": float(k0), "eta": float(eta),
              "update": update, "lr_decay": float(lr_decay),
              "lr_decay_every": int(lr_decay_every), "best_window": int(best_window),
              "seed": int(seed), "world_size": world, "data": _fingerprint(images)}
    chash = config_hash(config)

    prev_benchmark = torch.backends.cudnn.benchmark
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
        fmt = torch.channels_last if use_cl else torch.contiguous_format
        G = Generator(size, width, z_dim, seed=_derive_seed(seed, 1)).to(dev, memory_format=fmt)
        D = Discriminator(size, width, z_dim, seed=_derive_seed(seed, 2)).to(dev, memory_format=fmt)
        G_best = Generator(size, width, z_dim).to(dev, memory_format=fmt)
        G_best.load_state_dict(G.state_dict())
        # fused Adam: one kernel per step on CUDA; the CPU keeps the plain for-each path
        adam = dict(lr=lr, betas=tuple(betas), **({"fused": True} if dev.type == "cuda" else {}))
        opt_G = torch.optim.Adam(G.parameters(), **adam)
        opt_D = torch.optim.Adam(D.parameters(), **adam)
        sampler = _EpochSampler(images.shape[0], batch_size, _derive_seed(seed, 3, rank))
        zgen = torch.Generator().manual_seed(_derive_seed(seed, 4, rank))
        k = torch.tensor(float(k0), device=dev)
        loss_fn = BEGANLoss(gamma, lambda_k, eta)
        history = np.zeros((steps, len(HISTORY_COLUMNS)), np.float32)  # row s-1 = step s
        best_M, best_step, total_seconds = math.inf, None, 0.0

        # ---- resume or start fresh (rank 0 decides, every rank loads the same file)
        decision, st = [None], None
        if rank == 0:
            decision[0], st = _resume_decision(ckpt_path, chash, config, steps)
        if world > 1:
            dist.broadcast_object_list(decision, src=0)
        start = 0
        if decision[0] == "resume":
            st = st if st is not None else load_state(ckpt_path)
            G.load_state_dict(st["G"]); D.load_state_dict(st["D"])
            G_best.load_state_dict(st["G_best"])
            for opt, key in ((opt_G, "opt_G"), (opt_D, "opt_D")):
                opt.load_state_dict(st[key])
                _match_layout(opt)
            k.copy_(st["k"])
            start = int(st["step"])
            history[:start] = st["history"].numpy()[:start]
            best_M, best_step = float(st["best_M"]), st["best_step"]
            total_seconds = float(st["seconds"])
            r = st["rng"][rank]
            sampler.load_state_dict(r["sampler"]); zgen.set_state(r["z"])
            torch.set_rng_state(r["torch"])
            if r["cuda"] is not None and dev.type == "cuda":
                torch.cuda.set_rng_state(r["cuda"], dev)
            st = None
            log.info("resuming BEGAN training from %s at step %d", ckpt_path, start)
        resumed_from = start if decision[0] == "resume" else None
        emit("start", {"step": start, "resumed_from": resumed_from, "config": config,
                       "config_hash": chash, "world_size": world, "device": str(dev)})
        if resumed_from is not None:
            emit("resume", {"step": start, "path": str(ckpt_path)})

        # ---- runtime wrappers: compiled modules, DDP replicas
        G_run, D_run = G, D
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            G_run, D_run = torch.compile(G, backend=backend), torch.compile(D, backend=backend)
        G_train, D_train = G_run, D_run
        if world > 1:
            ids = [dev.index] if dev.type == "cuda" else None
            G_train = DDP(G_run, device_ids=ids)
            D_train = DDP(D_run, device_ids=ids)
        G_params = list(G.parameters())
        autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if use_bf16
                    else contextlib.nullcontext())
        z_fixed = sample_z(n_sample, z_dim, seed).to(dev)
        pin = dev.type == "cuda"

        def batch() -> torch.Tensor:
            x = torch.from_numpy(images[sampler.next()])
            x = x.pin_memory().to(dev, non_blocking=True) if pin else x.to(dev)
            # NHWC bytes permuted to NCHW are already channels_last in memory
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            return x.contiguous(memory_format=fmt)

        def draw_z() -> torch.Tensor:
            z = torch.rand(batch_size, z_dim, generator=zgen) * 2.0 - 1.0
            return z.to(dev, non_blocking=pin)

        def lr_at(step: int) -> float:
            return lr * lr_decay ** (step // lr_decay_every) if lr_decay_every else lr

        pending: list[torch.Tensor] = []
        pending_lr: list[float] = []
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=steps, initial=start, desc="BEGAN", disable=not progress)

        def flush(step: int) -> None:
            """Copy buffered stats to the host (one sync) and run the "step" callbacks."""
            if not pending:
                return
            rows = torch.stack(pending).cpu().numpy()
            rows = np.concatenate([rows, np.asarray(pending_lr, np.float32)[:, None]], 1)
            first = step - len(rows) + 1
            history[first - 1:step] = rows
            pending.clear(); pending_lr.clear()
            for i, row in enumerate(rows):
                emit("step", {"step": first + i,
                              **{c: float(v) for c, v in zip(HISTORY_COLUMNS, row)}})
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(M=f"{rows[-1, 5]:.4f}", k=f"{rows[-1, 4]:.4f}", refresh=False)

        def checkpoint(step: int) -> None:
            rng = {"sampler": sampler.state_dict(), "z": zgen.get_state(),
                   "torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
            rngs = [None] * world
            if world > 1:
                dist.all_gather_object(rngs, rng)
            else:
                rngs = [rng]
            if rank == 0:
                save_state(ckpt_path, {
                    "format": _CKPT_FORMAT, "config_hash": chash, "config": json.dumps(config),
                    "step": step, "G": G.state_dict(), "D": D.state_dict(),
                    "G_best": G_best.state_dict(), "opt_G": opt_G.state_dict(),
                    "opt_D": opt_D.state_dict(), "k": k.detach().cpu(),
                    "history": torch.from_numpy(history[:step].copy()), "best_M": best_M,
                    "best_step": best_step, "seconds": total_seconds + time.perf_counter() - t0,
                    "rng": rngs})
                emit("checkpoint", {"step": step, "path": str(ckpt_path)})

        # ---- training loop
        t0 = time.perf_counter()
        step, saved_at = start, start
        while step < steps:
            lr_now = lr_at(step)
            for opt in (opt_G, opt_D):
                for g in opt.param_groups:
                    g["lr"] = lr_now
            x = batch()
            opt_G.zero_grad(set_to_none=True)
            opt_D.zero_grad(set_to_none=True)
            if update == "joint":
                z = draw_z()
                with autocast:
                    objective, L_real, L_fake = loss_fn.joint(G_train, D_train, x, z, k)
                objective.backward()
                opt_G.step(); opt_D.step()
            else:
                z_D, z_G = draw_z(), draw_z()
                with torch.no_grad(), autocast:
                    fake = G_run(z_D)
                with autocast:
                    loss_D, L_real, _ = loss_fn.d_loss(D_train, x, fake, k)
                loss_D.backward()
                opt_D.step()
                with autocast:
                    L_fake = loss_fn.g_loss(D_run, G_train(z_G))
                L_fake.backward(inputs=G_params)  # D's grads are not needed here
                opt_G.step()
            if update == "joint":
                loss_D = (L_real - k * L_fake).detach()
            stats = torch.stack([loss_D, L_real, L_fake]).detach().float()
            if world > 1:  # mean over ranks (gloo has no AVG): keeps k_t equal everywhere
                dist.all_reduce(stats)
                stats = stats / world
            loss_D_m, L_real_m, L_fake_m = stats.unbind()
            k = loss_fn.update_k(k, L_real_m, L_fake_m)
            M = loss_fn.convergence(L_real_m, L_fake_m)
            pending.append(torch.stack([loss_D_m, L_fake_m, L_real_m, L_fake_m, k, M]))
            pending_lr.append(lr_now)
            step += 1

            window_end = step % best_window == 0
            do_sample = bool(sample_every) and step % sample_every == 0
            do_ckpt = bool(checkpoint_every) and step % checkpoint_every == 0
            if step % sync_every == 0 or window_end or do_sample or do_ckpt or step == steps:
                flush(step)
            if window_end:
                window_M = float(history[step - best_window:step, 5].mean())
                if window_M < best_M:
                    best_M, best_step = window_M, step
                    G_best.load_state_dict(G.state_dict())
                    emit("best", {"step": step, "M": window_M})
            if do_sample and rank == 0:
                emit("sample", {"step": step, "images": _sample(G, z_fixed)})
            if do_ckpt:
                checkpoint(step)
                saved_at = step
        flush(step)
        seconds = time.perf_counter() - t0

        if saved_at != step:
            checkpoint(step)  # lets a re-run see the finished state and return at once
        if best_step is None:  # no full window yet: the final G, judged on all its steps
            best_M, best_step = float(history[:step, 5].mean()), step
            G_best.load_state_dict(G.state_dict())
        if bar is not None:
            bar.close()
        if rank == 0:
            save_model(out_dir / "generator.safetensors", G_best,
                       {"step": best_step, "M": best_M, "role": "best"})
            save_model(out_dir / "generator_last.safetensors", G, {"step": step, "role": "last"})
            save_model(out_dir / "discriminator.safetensors", D, {"step": step, "role": "last"})
            if sample_every and step % sample_every != 0:
                emit("sample", {"step": step, "images": _sample(G, z_fixed)})
        digest = state_digest(G.state_dict(), D.state_dict())
        if world > 1:
            digests = [None] * world
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"DDP replicas diverged: weight digests {digests}")
        done = step - start
        result = BEGANResult(
            steps=step, M=history[:step, 5].copy(), k=history[:step, 4].copy(),
            L_real=history[:step, 2].copy(), L_fake=history[:step, 3].copy(),
            loss_D=history[:step, 0].copy(), loss_G=history[:step, 1].copy(),
            lr=history[:step, 6].copy(),
            best_step=int(best_step),
            best_M=float(best_M), resumed_from=resumed_from, seconds=seconds,
            images_per_s=done * batch_size * world / seconds if done and seconds > 0 else 0.0,
            total_seconds=total_seconds + seconds, weights_digest=digest, out_dir=out_dir)
        emit("end", {"step": step, "result": result})
        return result
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark
        if own_pg and dist.is_initialized():
            dist.destroy_process_group()


@torch.no_grad()
def _sample(G: nn.Module, z: torch.Tensor) -> np.ndarray:
    return to_uint8(G(z))


def _match_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded Adam moments their parameter's strides (a CPU checkpoint resumed with
    channels_last on CUDA): multi-tensor kernels pair elements by memory position."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p).copy_(v)


def _resume_decision(path: Path, chash: str, config: dict, steps: int
                     ) -> tuple[str, dict | None]:
    """("resume", state) or ("fresh", None); a checkpoint that cannot be resumed is moved
    aside, with a warning."""
    try:
        st = load_state(path)
    except Exception as e:  # unreadable: never silently overwrite it
        raise RuntimeError(f"cannot read checkpoint {path} ({e}); move or delete it") from e
    if st is None:
        return "fresh", None
    if st.get("format") == _CKPT_FORMAT and st.get("config_hash") == chash \
            and int(st["step"]) <= steps:
        return "resume", st
    if st.get("config_hash") != chash:
        old = json.loads(st["config"]) if isinstance(st.get("config"), str) else {}
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        why = f"a different configuration (differs in: {', '.join(diff) or 'format'})"
    else:
        why = f"step {int(st['step'])} > steps={steps}"
    stale = path.with_name(f"stale-{str(st.get('config_hash', 'unknown'))[:12]}.pt")
    os.replace(path, stale)
    warnings.warn(f"BEGAN checkpoint {path} was made with {why}: not resuming, starting "
                  f"fresh; the old checkpoint was moved to {stale}", stacklevel=3)
    return "fresh", None


# ----------------------------------------------------------------------------- CLI
def _flag(s: str) -> bool | str:
    s = s.lower()
    if s in ("auto",):
        return "auto"
    if s in ("1", "true", "on", "yes"):
        return True
    if s in ("0", "false", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto/on/off, got {s!r}")


def main(argv: Sequence[str] | None = None) -> BEGANResult:
    """``python -m facelm.training.began`` (plain, or under ``torchrun`` for DDP)."""
    p = argparse.ArgumentParser(prog="python -m facelm.training.began",
                                description="Train BEGAN on a uint8 [N, S, S, 3] .npy file.")
    p.add_argument("--images", required=True,
                   help=".npy of uint8 [N, size, size, 3] (memory-mapped)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, required=True, choices=SIZES)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--z-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999))
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--lambda-k", type=float, default=0.001)
    p.add_argument("--k0", type=float, default=0.0)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--update", choices=("joint", "alternate"), default="joint")
    p.add_argument("--lr-decay", type=float, default=1.0)
    p.add_argument("--lr-decay-every", type=int, default=0)
    p.add_argument("--best-window", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--channels-last", type=_flag, default="auto")
    p.add_argument("--bf16", type=_flag, default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    path = Path(a.images)
    if not path.is_file():
        raise FileNotFoundError(f"--images: no such file: {path}")
    if a.threads:
        torch.set_num_threads(a.threads)
    images = np.load(path, mmap_mode="r")
    res = train_began(
        images, out_dir=a.out, size=a.size, width=a.width, z_dim=a.z_dim, steps=a.steps,
        batch_size=a.batch_size, lr=a.lr, betas=tuple(a.betas), gamma=a.gamma,
        lambda_k=a.lambda_k, k0=a.k0, eta=a.eta, update=a.update, lr_decay=a.lr_decay,
        lr_decay_every=a.lr_decay_every, best_window=a.best_window,
        checkpoint_every=a.checkpoint_every, sample_every=a.sample_every, seed=a.seed,
        device=a.device, channels_last=a.channels_last, bf16=a.bf16, compile=a.compile,
        progress=not a.no_progress)
    # one JSON line per rank: lets a launcher check that the replicas agree
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)),
                      "world_size": int(os.environ.get("WORLD_SIZE", 1)),
                      "steps": res.steps, "best_step": res.best_step,
                      "resumed_from": res.resumed_from, "M_final": res.M_final,
                      "images_per_s": res.images_per_s,
                      "weights_digest": res.weights_digest}), flush=True)
    return res


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()

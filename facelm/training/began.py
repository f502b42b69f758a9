"""BEGAN trainer: a loop of named steps (setup, resume, step, log, checkpoint, sample).

Checkpoint/resume, DistributedDataParallel under torchrun, channels_last (CPU and CUDA),
bf16 autocast on CUDA, torch.compile on long CPU runs (``began.compile: auto``). The loss is
:class:`facelm.training.loss.BEGANLoss`; every setting is a field of ``BEGANParams``.

In a notebook or script::

    scorer = dlib_scorer(params.evaluation, params.began, params.seed)  # quality.dlib_scorer; None for M
    result = train_began(images, params.began, "data/began", seed=params.seed, scorer=scorer)

Several GPUs (or CPU processes, gloo) on one machine, same params file
(:mod:`facelm.training.began_cli`)::

    torchrun --standalone --nproc-per-node 4 -m facelm train-began \
        --params params.yaml --images faces.npy --out data/began [--steps 200000 ...]
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelm.checkpoint import state_digest
from facelm.config import COMPILE_MIN_STEPS, BEGANParams
from facelm.models.began import SIZES, save_model
from facelm.training.began_run import HISTORY_COLUMNS, BEGANRun, Scorer
from facelm.training.common import gather_objects, setup_distributed, teardown_distributed

__all__ = ["BEGANResult", "train_began", "m_final", "HISTORY_COLUMNS"]

Callback = Callable[[str, dict], None]


def m_final(M: np.ndarray) -> float:
    """M averaged over the last 1 % of steps (at least one): the ``began_M_final`` metric."""
    n = max(1, len(M) // 100)
    return float(np.mean(M[-n:])) if len(M) else float("nan")


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
    best_step: int                  # step at the end of the kept window (= saved G; cfg.best_by)
    best_M: float                   # that window's mean M
    resumed_from: int | None        # checkpoint step this call started from, else None
    seconds: float                  # wall time of this call's training loop
    images_per_s: float             # real images consumed per second in this call (all ranks)
    total_seconds: float            # training-loop time summed over all resumed calls
    weights_digest: str             # sha256 of final G and D weights (equal on all ranks)
    out_dir: Path = field(default_factory=Path)
    resume_message: str = ""        # "BEGAN: resumed from step N (...)" or "...starting fresh"

    @property
    def M_final(self) -> float:
        """:func:`m_final` of :attr:`M`: the ``began_M_final`` metric."""
        return m_final(self.M)


def _auto(flag: bool | str, dev: torch.device, name: str, auto: bool | None = None) -> bool:
    """True/False, "on"/"off", or "auto" (= ``auto``; None: on for CUDA)."""
    if isinstance(flag, bool):
        return flag
    if flag in ("auto", "on", "off"):
        if flag == "auto":
            return dev.type == "cuda" if auto is None else auto
        return flag == "on"
    raise ValueError(f"{name} must be True, False, 'on', 'off' or 'auto', got {flag!r}")


def _compile_auto(dev: torch.device, steps: int) -> bool:
    """``compile: auto``: on for CPU runs long enough to repay the compile, when inductor
    finds the C++ compiler it needs; off on CUDA, where it has not been measured."""
    has_cxx = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return dev.type == "cpu" and steps >= COMPILE_MIN_STEPS and has_cxx


def _check_images(images: Any, batch_size: int) -> int:
    """The image side in px; raises ValueError unless ``images`` is uint8 [N, S, S, 3]."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array (np.memmap is fine), got {type(images)}")
    size = images.shape[1] if images.ndim == 4 else None
    if images.dtype != np.uint8 or size not in SIZES or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be uint8 [N, S, S, 3] with S in {SIZES}, got "
                         f"{images.dtype} {list(images.shape)}")
    if images.shape[0] < batch_size:
        raise ValueError(f"batch_size ({batch_size}) exceeds the number of images "
                         f"({images.shape[0]})")
    return int(size)


# ----------------------------------------------------------------------------- trainer
def train_began(
    images: np.ndarray,             # uint8 [N, S, S, 3], S in SIZES (np.memmap: read per batch)
    cfg: BEGANParams,               # params.began: architecture, Adam, BEGAN, schedule, speed
    out_dir: str | os.PathLike,     # weights + checkpoint/ go here
    *,
    seed: int,                      # params.seed: weights, batches, z (each rank its own)
    device: str | torch.device | None = None,  # None: CUDA when available, else CPU
    sync_every: int | None = None,  # steps between host syncs of the stats (None: 1 CPU, 50 CUDA)
    n_sample: int = 64,             # images per "sample" grid (a fixed z from `seed`)
    progress: bool = True,          # tqdm bar (rank 0)
    callbacks: Iterable[Callback] = (),
    scorer: Scorer | None = None,   # G's quality for ``cfg.best_by: dlib`` (quality.dlib_scorer)
) -> BEGANResult:
    """Train a BEGAN on ``images`` with the settings ``cfg``; write its weights to ``out_dir``.

    Files: ``generator.safetensors`` (G of the kept window: the lowest mean M, or with
    ``cfg.best_by: dlib`` the highest ``scorer(G)``, among windows ending at >= ``cfg.best_from``
    (``best_after * steps``); with ``cfg.ema``, the moving average of G's weights at that
    window's end), ``generator_last.safetensors`` (the trained G),
    ``discriminator.safetensors`` (final D), with ``cfg.recon_weight`` > 0
    ``encoder.safetensors`` (the mode regulariser's E as it was when G_best was kept; a
    `CodeEncoder`), ``checkpoint/state.pt`` (full training state,
    every ``cfg.checkpoint_every`` steps and at the end).

    Resume: if ``checkpoint/state.pt`` exists and its config hash equals this call's
    (every setting that changes the numbers except ``steps``, plus the world size and a
    fingerprint of ``images``; not device/speed options), training continues from it,
    prints "BEGAN: resumed from step N", and gives the same weights as an uninterrupted
    run (bit-exact on CPU with equal thread counts). Otherwise a stale checkpoint is moved
    to ``checkpoint/stale-<hash>.pt`` with a warning and training starts fresh. ``steps``
    may grow between calls to extend a run.

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
    # ---- setup: check everything before any work
    size = _check_images(images, cfg.batch_size)
    for name in ("channels_last", "bf16", "compile"):
        _auto(getattr(cfg, name), torch.device("cpu"), name)
    if sync_every is not None and not (isinstance(sync_every, int) and sync_every >= 1):
        raise ValueError(f"sync_every must be None or an int >= 1, got {sync_every!r}")
    if cfg.best_by != "M" and scorer is None:
        raise ValueError(f"began.best_by: {cfg.best_by} needs a scorer (facelm.evaluation.quality.dlib_scorer)")
    d = setup_distributed(device)
    use_cl = _auto(cfg.channels_last, d.device, "channels_last", auto=True)
    use_bf16 = _auto(cfg.bf16, d.device, "bf16")
    use_bf16 = use_bf16 and (d.device.type != "cuda" or torch.cuda.is_bf16_supported())
    if sync_every is None:
        sync_every = 50 if d.device.type == "cuda" else 1
    callbacks = list(callbacks) if d.is_main else []

    def emit(event: str, state: dict) -> None:
        for cb in callbacks:
            cb(event, state)

    prev_benchmark = torch.backends.cudnn.benchmark
    try:
        if d.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
        run = BEGANRun(images, cfg, Path(out_dir), seed, d, size=size, channels_last=use_cl,
                       n_sample=n_sample, scorer=scorer)
        # ---- resume or start fresh (rank 0 decides, every rank loads the same file)
        resumed_from, message = run.resume()
        if d.is_main:
            print(message, flush=True)
        emit("start", {"step": run.step, "resumed_from": resumed_from, "config": run.config,
                       "config_hash": run.chash, "world_size": d.world, "device": str(d.device)})
        if resumed_from is not None:
            emit("resume", {"step": run.step, "path": str(run.ckpt_path)})
        run.wrap(_auto(cfg.compile, d.device, "compile", _compile_auto(d.device, cfg.steps)))
        autocast = (torch.autocast(d.device.type, dtype=torch.bfloat16) if use_bf16
                    else contextlib.nullcontext())
        bar = None
        if progress and d.is_main:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=run.step, desc="BEGAN")
        seconds = _loop(run, emit, bar, autocast, sync_every)
        if bar is not None:
            bar.close()
        return _finish(run, emit, seconds, resumed_from, message)
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark
        teardown_distributed(d)


def _loop(run: BEGANRun, emit: Callable[[str, dict], None], bar, autocast, sync_every: int
          ) -> float:
    """Steps until ``cfg.steps``: step, log, keep the best G, sample, checkpoint.
    Returns the loop's wall time in seconds."""
    cfg = run.cfg
    t0 = time.perf_counter()
    saved_at = run.step
    while run.step < cfg.steps:
        run.train_step(autocast)
        step = run.step
        window_end = step % cfg.best_window == 0
        do_sample = bool(cfg.sample_every) and step % cfg.sample_every == 0
        do_ckpt = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
        if step % sync_every == 0 or window_end or do_sample or do_ckpt or step == cfg.steps:
            run.flush(emit, bar)
        if window_end:
            run.keep_if_best(emit)
        if do_sample and run.d.is_main:
            emit("sample", {"step": step, "images": run.sample()})
        if do_ckpt:
            run.checkpoint(emit, time.perf_counter() - t0)
            saved_at = step
    run.flush(emit, bar)
    seconds = time.perf_counter() - t0
    if saved_at != run.step:
        run.checkpoint(emit, seconds)  # lets a re-run see the finished state and return at once
    return seconds


def _finish(run: BEGANRun, emit: Callable[[str, dict], None], seconds: float,
            resumed_from: int | None, message: str) -> BEGANResult:
    """Write the weights (rank 0), check that the replicas agree, build the result."""
    cfg, step, h, d = run.cfg, run.step, run.history, run.d
    if run.best_step is None:  # no full window yet: the final G, judged on all its steps
        run.best_M, run.best_step = float(h[:step, 5].mean()), step
        run.G_best.load_state_dict(run.G_ema.state_dict())
        if run.E is not None:
            run.E_best.load_state_dict(run.E.state_dict())
    if d.is_main:
        save_model(run.out_dir / "generator.safetensors", run.G_best,
                   {"step": run.best_step, "M": run.best_M, "role": "best"})
        save_model(run.out_dir / "generator_last.safetensors", run.G, {"step": step, "role": "last"})
        save_model(run.out_dir / "discriminator.safetensors", run.D, {"step": step, "role": "last"})
        if run.E is not None:  # the mode regulariser's encoder, paired with G_best
            save_model(run.out_dir / "encoder.safetensors", run.E_best,
                       {"step": run.best_step, "role": "best"})
        if cfg.sample_every and step % cfg.sample_every != 0:
            emit("sample", {"step": step, "images": run.sample()})
    digest = state_digest(run.G.state_dict(), run.D.state_dict())
    digests = gather_objects(digest, d.world)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas diverged: weight digests {digests}")
    done = step - (resumed_from or 0)
    result = BEGANResult(
        steps=step, M=h[:step, 5].copy(), k=h[:step, 4].copy(), L_real=h[:step, 2].copy(),
        L_fake=h[:step, 3].copy(), loss_D=h[:step, 0].copy(), loss_G=h[:step, 1].copy(),
        lr=h[:step, 6].copy(), best_step=int(run.best_step), best_M=float(run.best_M),
        resumed_from=resumed_from, seconds=seconds,
        images_per_s=done * cfg.batch_size * d.world / seconds if done and seconds > 0 else 0.0,
        total_seconds=run.total_seconds + seconds, weights_digest=digest, out_dir=run.out_dir,
        resume_message=message)
    emit("end", {"step": step, "result": result})
    return result

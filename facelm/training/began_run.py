"""One BEGAN training run's state and its named steps, driven by :func:`train_began`.

:class:`BEGANRun` holds the models, optimisers, random streams, loss (with k_t) and
history, and does one thing per method: ``resume``, ``wrap`` (compile, DDP),
``train_step``, ``flush`` (log), ``keep_if_best``, ``checkpoint``, ``sample``. The order
of random draws and float operations is the trainer's contract (resume is bit-exact), so
change it only on purpose.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from facelm.checkpoint import config_hash
from facelm.config import BEGANParams
from facelm.models.began import CodeEncoder, Discriminator, Generator
from facelm.models.common import glorot_init_
from facelm.tensors import sample_z, to_tensor, to_uint8
from facelm.training.common import (Distributed, all_reduce_mean, array_fingerprint,
                                    derive_seed, gather_objects, global_rng_state,
                                    match_layout, restore_global_rng, resume_or_fresh,
                                    save_checkpoint)
from facelm.training.loss import BEGANLoss

__all__ = ["BEGANRun", "EpochSampler", "HISTORY_COLUMNS", "Scorer"]

Emit = Callable[[str, dict], None]
# a generator's quality, higher is better (``best_by: dlib``; see quality.dlib_scorer)
Scorer = Callable[[torch.nn.Module], float]
# columns of the per-step history, in order ("lr" is appended on the host)
HISTORY_COLUMNS = ("loss_D", "loss_G", "L_real", "L_fake", "k", "M", "lr")
CKPT_FORMAT = 1


class EpochSampler:
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


def _run_config(cfg: BEGANParams, size: int, seed: int, world: int, images: np.ndarray) -> dict:
    """Everything that changes the numbers except ``steps`` (a run may be extended)."""
    return {"size": size, "width": int(cfg.width), "z_dim": int(cfg.z_dim),
            "batch_size": int(cfg.batch_size), "lr": float(cfg.lr),
            "betas": [float(cfg.beta1), float(cfg.beta2)], "gamma": float(cfg.gamma),
            "lambda_k": float(cfg.lambda_k), "k0": float(cfg.k0), "eta": float(cfg.eta),
            "update": cfg.update, "lr_decay": float(cfg.lr_decay),
            "lr_decay_every": int(cfg.lr_decay_every), "best_window": int(cfg.best_window),
            "seed": int(seed), "world_size": world, "data": array_fingerprint(images),
            **({"skip": True} if cfg.skip else {}),  # absent when off: old checkpoints resume
            **({"d_width": int(cfg.d_width)} if cfg.d_width else {}),
            **({"h_dim": int(cfg.h_dim)} if cfg.h_dim else {}),
            **({"ema": float(cfg.ema)} if cfg.ema else {}),
            **({"recon_weight": float(cfg.recon_weight), "recon_pool": int(cfg.recon_pool)}
               if cfg.recon_weight else {}),
            **({"recon_batch": int(cfg.recon_batch)} if cfg.recon_weight and cfg.recon_batch else {}),
            # absent when kept by M from step 0 (the authors): their checkpoints resume
            **({"best_by": cfg.best_by, "best_dlib_n": int(cfg.best_dlib_n)} if cfg.best_by != "M" else {}),
            # the fraction, not the step it gives: a longer run of the same settings resumes
            **({"best_after": float(cfg.best_after)} if cfg.best_after else {})}


class BEGANRun:
    """The state of one training call: models, optimisers, random streams, history."""

    def __init__(self, images: np.ndarray, cfg: BEGANParams, out_dir: Path, seed: int,
                 d: Distributed, *, size: int, channels_last: bool, n_sample: int,
                 scorer: Scorer | None = None):
        dev, s, w, zd = d.device, size, cfg.width, cfg.z_dim
        self.images, self.cfg, self.d, self.dev, self.out_dir = images, cfg, d, dev, out_dir
        self.ckpt_path = out_dir / "checkpoint" / "state.pt"
        self.config = _run_config(cfg, size, seed, d.world, images)
        self.chash = config_hash(self.config)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.G = Generator(s, w, zd, seed=derive_seed(seed, 1), skip=cfg.skip).to(dev, memory_format=self.fmt)
        self.D = Discriminator(s, cfg.d_width or w, cfg.h_dim or zd, seed=derive_seed(seed, 2),
                               skip=cfg.skip).to(dev, memory_format=self.fmt)
        self.G_best = Generator(s, w, zd, skip=cfg.skip).to(dev, memory_format=self.fmt)
        self.G_best.load_state_dict(self.G.state_dict())
        # the averaged G (began.ema), else G itself: what is kept as best and sampled
        self.G_ema = self.G
        if cfg.ema:
            self.G_ema = Generator(s, w, zd, skip=cfg.skip).to(dev, memory_format=self.fmt)
            self.G_ema.load_state_dict(self.G.state_dict())
            self.G_ema.requires_grad_(False)
        # fused Adam: one kernel per step on CUDA; the CPU keeps the plain for-each path
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                    **({"fused": True} if dev.type == "cuda" else {}))
        self.opt_G = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **adam)
        # began.recon_weight: the encoder E whose codes G must turn back into the batch
        # and E_best, the copy paired with G_best (the inversion's start, stage 03)
        self.E: CodeEncoder | None = None
        if cfg.recon_weight:
            # init after the move: filling a channels_last weight draws its values in another order
            self.E = glorot_init_(CodeEncoder(s, w, zd).to(dev, memory_format=self.fmt), derive_seed(seed, 5))
            self.E_best = copy.deepcopy(self.E)  # a copy draws no init from the global RNG
            self.opt_E = torch.optim.Adam(self.E.parameters(), **adam)
        self.sampler = EpochSampler(images.shape[0], cfg.batch_size, derive_seed(seed, 3, d.rank))
        self.zgen = torch.Generator().manual_seed(derive_seed(seed, 4, d.rank))
        self.loss = BEGANLoss(cfg, dev)
        self.history = np.zeros((cfg.steps, len(HISTORY_COLUMNS)), np.float32)  # row s-1 = step s
        self.best_M, self.best_step, self.total_seconds = math.inf, None, 0.0
        # the kept window's criterion, lower is better: its mean M, or minus G's score
        self.best_score, self.scorer = math.inf, scorer
        self.step = 0
        self.z_fixed = sample_z(n_sample, zd, seed).to(dev)
        self.pin = dev.type == "cuda"
        self.pending: list[torch.Tensor] = []   # per-step stats still on the device
        self.pending_lr: list[float] = []

    # ---- resume
    def resume(self) -> tuple[int | None, str]:
        """Load the checkpoint if it belongs to this run (see :func:`resume_or_fresh`);
        return ``(resumed_from, message)``: the step it resumed from (None: a fresh start)
        and the line that says so."""
        res = resume_or_fresh(self.ckpt_path, self.chash, config=self.config, name="BEGAN",
                              limit=self.cfg.steps, fmt=CKPT_FORMAT, rank=self.d.rank,
                              world=self.d.world)
        st = res.state
        if st is not None:
            self.G.load_state_dict(st["G"]); self.D.load_state_dict(st["D"])
            self.G_best.load_state_dict(st["G_best"])
            if self.cfg.ema:
                self.G_ema.load_state_dict(st["G_ema"])
            if self.E is not None:
                self.E.load_state_dict(st["E"])
                self.E_best.load_state_dict(st["E_best"])
            for opt, key in self._optimisers():
                opt.load_state_dict(st[key])
                match_layout(opt)
            self.loss.k.copy_(st["k"])
            self.step = int(st["step"])
            self.history[:self.step] = st["history"].numpy()[:self.step]
            self.best_M, self.best_step = float(st["best_M"]), st["best_step"]
            self.best_score = float(st.get("best_score", self.best_M))
            if self.best_step is not None and self.best_step < self.cfg.best_from:
                # a longer run moved best_from past the kept window: only later windows count
                self.best_M, self.best_step, self.best_score = math.inf, None, math.inf
            self.total_seconds = float(st["seconds"])
            r = st["rng"][self.d.rank]
            self.sampler.load_state_dict(r["sampler"]); self.zgen.set_state(r["z"])
            restore_global_rng(r, self.dev)
        return res.step, res.message()

    def _optimisers(self) -> list[tuple[torch.optim.Optimizer, str]]:
        """``(optimiser, checkpoint key)`` of every trained model."""
        opts = [(self.opt_G, "opt_G"), (self.opt_D, "opt_D")]
        return opts + ([(self.opt_E, "opt_E")] if self.E is not None else [])

    # ---- runtime wrappers
    def wrap(self, compile: bool | str) -> None:
        """Compiled modules and DDP replicas around G, D (and E) (the plain ones are kept)."""
        self.G_run, self.D_run, self.E_run = self.G, self.D, self.E
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self.G_run = torch.compile(self.G, backend=backend)
            self.D_run = torch.compile(self.D, backend=backend)
            if self.E is not None:
                self.E_run = torch.compile(self.E, backend=backend)
        self.G_train, self.D_train, self.E_train = self.G_run, self.D_run, self.E_run
        if self.d.world > 1:
            ids = [self.dev.index] if self.dev.type == "cuda" else None
            self.G_train = DDP(self.G_run, device_ids=ids)
            self.D_train = DDP(self.D_run, device_ids=ids)
            if self.E is not None:
                self.E_train = DDP(self.E_run, device_ids=ids)

    # ---- data
    def encode(self, x: torch.Tensor) -> torch.Tensor | None:
        """E's codes of the batch's first ``began.recon_batch`` faces (all when null), the ones
        the mode regulariser asks G to redraw; None when the regulariser is off."""
        if self.E is None:
            return None
        return self.E_train(x[:self.cfg.recon_batch] if self.cfg.recon_batch else x)

    def batch(self) -> torch.Tensor:
        """The next real batch, NCHW float in [-1, 1] (channels_last when asked)."""
        x = torch.from_numpy(self.images[self.sampler.next()])
        x = x.pin_memory().to(self.dev, non_blocking=True) if self.pin else x.to(self.dev)
        # NHWC bytes permuted to NCHW are already channels_last in memory
        return to_tensor(x).contiguous(memory_format=self.fmt)

    def draw_z(self) -> torch.Tensor:
        z = torch.rand(self.cfg.batch_size, self.cfg.z_dim, generator=self.zgen) * 2.0 - 1.0
        return z.to(self.dev, non_blocking=self.pin)

    def lr_at(self, step: int) -> float:
        c = self.cfg
        return c.lr * c.lr_decay ** (step // c.lr_decay_every) if c.lr_decay_every else c.lr

    # ---- one optimiser step
    def train_step(self, autocast) -> None:
        """One BEGAN step: lr, batch, G and D updates, k_t and M (stats stay on the device)."""
        lr_now = self.lr_at(self.step)
        for opt in (self.opt_G, self.opt_D):
            for g in opt.param_groups:
                g["lr"] = lr_now
        x = self.batch()
        opts = [opt for opt, _ in self._optimisers()]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss, k = self.loss, self.loss.k
        if self.cfg.update == "joint":
            z = self.draw_z()
            with autocast:
                z_x = self.encode(x)
                objective, L_real, L_fake, _ = loss(self.G_train, self.D_train, x, z, z_x)
            objective.backward()
            for opt in opts:
                opt.step()
            loss_D = (L_real - k * L_fake).detach()
        else:
            z_D, z_G = self.draw_z(), self.draw_z()
            with torch.no_grad(), autocast:
                fake = self.G_run(z_D)
            with autocast:
                loss_D, L_real, _ = loss.d_loss(self.D_train, x, fake)
            loss_D.backward()
            self.opt_D.step()
            trained = list(self.G.parameters())  # D's grads are not needed here
            with autocast:
                z_x = self.encode(x)
                fake_G, L_recon = loss.draw(self.G_train, z_G, x, z_x)
                L_fake = loss.g_loss(self.D_run, fake_G)
            if L_recon is None:
                L_fake.backward(inputs=trained)
            else:
                (L_fake + L_recon).backward(inputs=trained + list(self.E.parameters()))
                self.opt_E.step()
            self.opt_G.step()
        if self.cfg.ema:
            self.update_ema()
        stats = torch.stack([loss_D, L_real, L_fake]).detach().float()
        # mean over ranks: keeps k_t equal everywhere
        loss_D_m, L_real_m, L_fake_m = all_reduce_mean(stats, self.d.world).unbind()
        M = loss.update(L_real_m, L_fake_m)
        self.pending.append(torch.stack([loss_D_m, L_fake_m, L_real_m, L_fake_m, loss.k, M]))
        self.pending_lr.append(lr_now)
        self.step += 1

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G, after G's update (one fused op)."""
        avg, cur = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(avg, cur, 1.0 - self.cfg.ema)

    # ---- logging, best window, checkpoint
    def flush(self, emit: Emit, bar) -> None:
        """Copy buffered stats to the host (one sync) and run the "step" callbacks."""
        if not self.pending:
            return
        rows = torch.stack(self.pending).cpu().numpy()
        rows = np.concatenate([rows, np.asarray(self.pending_lr, np.float32)[:, None]], 1)
        first = self.step - len(rows) + 1
        self.history[first - 1:self.step] = rows
        self.pending.clear(); self.pending_lr.clear()
        for i, row in enumerate(rows):
            emit("step", {"step": first + i, **{c: float(v) for c, v in zip(HISTORY_COLUMNS, row)}})
        if bar is not None:
            bar.update(len(rows))
            bar.set_postfix(M=f"{rows[-1, 5]:.4f}", k=f"{rows[-1, 4]:.4f}", refresh=False)

    def keep_if_best(self, emit: Emit) -> None:
        """At the end of a window (from ``best_from`` on): keep G if it is the best yet, by
        the window's mean M (lowest) or by the scorer (``best_by: dlib``, highest)."""
        if self.step < self.cfg.best_from:
            return
        window_M = float(self.history[self.step - self.cfg.best_window:self.step, 5].mean())
        score = None
        if self.cfg.best_by == "M":
            criterion = window_M
        else:
            score = float(self.scorer(self.G_ema))  # every rank: the replicas stay alike
            criterion = -score
        if criterion < self.best_score:
            self.best_score, self.best_M, self.best_step = criterion, window_M, self.step
            self.G_best.load_state_dict(self.G_ema.state_dict())
            if self.E is not None:
                self.E_best.load_state_dict(self.E.state_dict())
            emit("best", {"step": self.step, "M": window_M, **({"score": score} if score is not None else {})})

    def checkpoint(self, emit: Emit, seconds: float) -> None:
        """Write the full training state (every rank's random streams; rank 0 writes)."""
        rng = {"sampler": self.sampler.state_dict(), "z": self.zgen.get_state(),
               **global_rng_state(self.dev)}
        rngs = gather_objects(rng, self.d.world)
        if not self.d.is_main:
            return
        save_checkpoint(self.ckpt_path, {
            "format": CKPT_FORMAT, "config_hash": self.chash,
            "config": json.dumps(self.config), "step": self.step,
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_best": self.G_best.state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.cfg.ema else {}),
            **({"E": self.E.state_dict(), "E_best": self.E_best.state_dict()}
               if self.E is not None else {}),
            **{key: opt.state_dict() for opt, key in self._optimisers()},
            "k": self.loss.k.detach().cpu(),
            "history": torch.from_numpy(self.history[:self.step].copy()),
            "best_M": self.best_M, "best_step": self.best_step, "best_score": self.best_score,
            "seconds": self.total_seconds + seconds, "rng": rngs})
        emit("checkpoint", {"step": self.step, "path": str(self.ckpt_path)})

    @torch.no_grad()
    def sample(self) -> np.ndarray:
        """uint8 NHWC images of G(fixed z): the "sample" grids."""
        return to_uint8(self.G_ema(self.z_fixed))



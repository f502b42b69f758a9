"""What facelm's trainers share: seeds, fingerprints, resume-or-start-fresh, checkpoints, DDP.

The BEGAN, L-Gen and detector trainers all (1) derive their random streams from one seed,
(2) hash everything that changes their numbers into a fingerprint, (3) on start decide
whether a checkpoint on disk belongs to this run (resume) or not (start afresh, and say
so), (4) write their training state atomically, and (5) BEGAN also runs under torchrun.
The helpers here are those five steps, so a trainer reads as its algorithm::

    config = {"lr": cfg.lr, ..., "seed": seed, "data": array_fingerprint(x)}
    chash = config_hash(config)
    dist_ = setup_distributed(device)
    res = resume_or_fresh(ckpt, chash, config=..., limit=cfg.steps, name="BEGAN",
                          rank=dist_.rank, world=dist_.world)
    print(res.message())                 # "BEGAN: resumed from step 4000 (...)"
    if res.resumed: model.load_state_dict(res.state["G"]) ...
    ... save_checkpoint(ckpt, {...}, config_hash=chash, config=...) ...
    teardown_distributed(dist_)
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from facelm.checkpoint import config_hash, load_state, save_state, state_digest
from facelm.models.common import unwrap
from facelm.tensors import pick_device

__all__ = [
    "derive_seed", "config_hash", "array_fingerprint", "tensor_fingerprint",
    "Resume", "resume_or_fresh", "save_checkpoint", "EpochProgress", "resume_epochs",
    "global_rng_state", "restore_global_rng", "match_layout",
    "Distributed", "setup_distributed", "teardown_distributed", "unwrap",
    "broadcast_object", "gather_objects", "all_reduce_mean",
]


# ----------------------------------------------------------------------------- seeds
def derive_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for the random stream named by ``keys`` (e.g. rank).

    ``np.random.SeedSequence([seed, *keys])``: streams of different keys do not overlap,
    and the same ``(seed, keys)`` always gives the same seed.
    """
    return int(np.random.SeedSequence([int(seed), *keys]).generate_state(1)[0])


# ----------------------------------------------------------------------- fingerprints
def array_fingerprint(images: np.ndarray) -> dict:
    """Cheap identity of an image array (a memmap is fine): its shape and a sha256 of its
    first, middle and last images. Reads three images, not the data set."""
    n = images.shape[0]
    picks = np.ascontiguousarray(images[[0, n // 2, n - 1]])
    return {"shape": list(images.shape), "sha256": state_digest({"x": torch.from_numpy(picks)})}


def tensor_fingerprint(*tensors: torch.Tensor | None) -> str:
    """sha1 over every byte of ``tensors`` (``None`` counts as a marker): for small data
    such as (z, landmarks) pairs, where hashing all of it costs nothing."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(b"none" if t is None else t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- resume
@dataclass
class Resume:
    """What :func:`resume_or_fresh` decided.

    ``state`` is the loaded checkpoint when resuming, else ``None``; ``reason`` says why a
    checkpoint was not resumed ("" when there was none); ``moved_to`` is where a stale
    checkpoint was moved (``on_mismatch="move"``).
    """

    path: Path
    name: str
    state: dict | None = None
    progress_key: str = "step"
    reason: str = ""
    moved_to: Path | None = None

    @property
    def resumed(self) -> bool:
        """True when training continues from :attr:`state`."""
        return self.state is not None

    @property
    def step(self) -> int | None:
        """The step (or epoch) the checkpoint had reached: ``resumed_from``; None if fresh."""
        return int(self.state[self.progress_key]) if self.state is not None else None

    def message(self) -> str:
        """One line for the console and the stage report, e.g. "BEGAN: resumed from step 4000
        (data/began/checkpoint/state.pt)" or "BEGAN: starting fresh (no checkpoint)"."""
        if self.resumed:
            return f"{self.name}: resumed from {self.progress_key} {self.step} ({self.path})"
        if not self.reason:
            return f"{self.name}: starting fresh (no checkpoint at {self.path})"
        moved = f"; it was moved to {self.moved_to}" if self.moved_to else ""
        return f"{self.name}: starting fresh (checkpoint {self.path} was made with {self.reason}{moved})"


def _mismatch(state: dict, chash: str, config: Mapping | None, hash_key: str,
              fmt: Any, progress_key: str, limit: int | None) -> str:
    """Why ``state`` cannot be resumed by this run, or "" when it can."""
    if fmt is not None and state.get("format") != fmt:
        return f"checkpoint format {state.get('format')!r} (expected {fmt!r})"
    if state.get(hash_key) != chash:
        old = state.get("config")
        old = json.loads(old) if isinstance(old, str) else old if isinstance(old, Mapping) else None
        if old is None or config is None:
            return "a different configuration"
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        return f"a different configuration (differs in: {', '.join(diff) or 'format'})"
    if limit is not None and int(state[progress_key]) > limit:
        return f"{progress_key} {int(state[progress_key])} > {limit} asked for"
    return ""


def _decide(path: Path, chash: str, config: Mapping | None, *, name: str, limit: int | None,
            progress_key: str, hash_key: str, fmt: Any,
            on_mismatch: Literal["move", "overwrite", "raise"], map_location) -> Resume:
    try:
        state = load_state(path, map_location=map_location)
    except Exception as e:  # unreadable (or not a plain-tensor file): never overwrite it
        raise RuntimeError(f"cannot read {name} checkpoint {path} ({type(e).__name__}); "
                           "move or delete it") from None
    res = Resume(path, name, progress_key=progress_key)
    if state is None:
        return res
    res.reason = _mismatch(state, chash, config, hash_key, fmt, progress_key, limit)
    if not res.reason:
        res.state = state
        return res
    if on_mismatch == "raise":
        raise ValueError(f"{path} was written by a training run with other data or settings "
                         f"({res.reason}); remove it or pass another checkpoint_dir")
    if on_mismatch == "move":
        res.moved_to = path.with_name(f"stale-{str(state.get(hash_key, 'unknown'))[:12]}.pt")
        os.replace(path, res.moved_to)
        tail = f"the old checkpoint was moved to {res.moved_to}"
    else:
        tail = "it will be overwritten"
    warnings.warn(f"{name} checkpoint {path} was made with {res.reason}: not resuming, "
                  f"starting afresh; {tail}", stacklevel=4)
    return res


def resume_or_fresh(
    path: str | os.PathLike,        # the training-state file (may not exist)
    chash: str,                     # this run's config_hash(...)
    *,
    config: Mapping | None = None,  # the hashed config: names the keys that differ
    name: str = "training",         # who is talking, in messages ("BEGAN", "L-Gen")
    limit: int | None = None,       # a checkpoint past this step/epoch is not resumed
    progress_key: str = "step",     # the state's step/epoch entry
    hash_key: str = "config_hash",  # the state's fingerprint entry
    fmt: Any = None,                # required value of state["format"] (None: not checked)
    on_mismatch: Literal["move", "overwrite", "raise"] = "move",
    map_location: str | torch.device = "cpu",
    rank: int = 0,                  # under DDP, rank 0 decides and every rank loads
    world: int = 1,
) -> Resume:
    """Resume when the checkpoint's fingerprint matches this run's, else start afresh.

    A missing checkpoint means a fresh start. One with another fingerprint (or format, or
    past ``limit``) is, by ``on_mismatch``: ``"move"``d aside to ``stale-<hash>.pt`` with
    a warning (BEGAN), left to be ``"overwrite"``n with a warning (L-Gen), or ``"raise"``s
    ValueError (the detector). An unreadable file raises RuntimeError naming it: it is
    never silently replaced. Under DDP (``world > 1``) rank 0 decides (and moves files),
    the decision is broadcast, and the other ranks load the same file. Print
    :meth:`Resume.message` to report the decision.
    """
    path = Path(path)
    kw = dict(name=name, limit=limit, progress_key=progress_key, hash_key=hash_key, fmt=fmt,
              on_mismatch=on_mismatch, map_location=map_location)
    res = _decide(path, chash, config, **kw) if rank == 0 else Resume(path, name, progress_key=progress_key)
    if world > 1:
        resumed = broadcast_object(res.resumed, world)
        if rank != 0 and resumed:
            res.state = load_state(path, map_location=map_location)
    return res


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write a training state (tensors and plain containers) atomically; read it back with
    :func:`resume_or_fresh`. Store the run's fingerprint under ``"config_hash"`` (or the
    ``hash_key`` given there), its step/epoch, and the hashed ``"config"`` (a dict or its
    JSON) so that a mismatch can name the keys that changed."""
    return save_state(path, state)


@dataclass
class EpochProgress:
    """What an epoch-based trainer (L-Gen, feature L-Gen) carries across a resume."""

    loss: list[float]     # training loss per finished epoch
    val: list[float]      # validation loss per finished epoch (empty without validation)
    best: dict            # {"val", "epoch", "state"} of the best-validation epoch so far
    start: int = 0        # the next epoch to run


def resume_epochs(path: Path | None, chash: str, *, config: Mapping, name: str, limit: int,
                  module: torch.nn.Module, module_key: str, opt: torch.optim.Optimizer,
                  gen: torch.Generator, device: torch.device) -> EpochProgress:
    """Restore ``module`` (saved under ``module_key``), ``opt``, ``gen`` and the histories from
    the checkpoint at ``path`` when it belongs to this run (:func:`resume_or_fresh`; another
    config's file is overwritten later); otherwise a fresh :class:`EpochProgress`."""
    fresh = EpochProgress([], [], {"val": float("inf"), "epoch": None, "state": None})
    if path is None:
        return fresh
    res = resume_or_fresh(path, chash, config=config, name=name, limit=limit,
                          progress_key="epoch", on_mismatch="overwrite", map_location=device)
    if not res.resumed:
        return fresh
    ck = res.state
    module.load_state_dict(ck[module_key])
    opt.load_state_dict(ck["optimizer"])
    gen.set_state(ck["generator"].cpu())
    return EpochProgress(list(ck["loss"]), list(ck["val_loss"]),
                         {"val": ck["best_val"], "epoch": ck["best_epoch"], "state": ck["best_state"]},
                         int(ck["epoch"]))


def global_rng_state(device: torch.device) -> dict:
    """The global torch (and, on CUDA, the device's) RNG states, for a checkpoint."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_global_rng(state: Mapping[str, Any], device: torch.device) -> None:
    """Set the RNG states saved by :func:`global_rng_state` (CUDA's only on CUDA)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def match_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimiser moments their parameter's strides (a CPU/NCHW checkpoint
    resumed with channels_last on CUDA): multi-tensor kernels pair elements by memory
    position, so moments with other strides would be silently misapplied."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p).copy_(v)


# ------------------------------------------------------------------------------- DDP
@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this process initialised the process group: it must destroy it

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and runs callbacks."""
        return self.rank == 0


def setup_distributed(device: str | torch.device | None = None) -> Distributed:
    """Join the torchrun job described by WORLD_SIZE / LOCAL_RANK, if any.

    Plain runs get rank 0 of 1 on ``pick_device(device)``. Under torchrun each process
    takes GPU ``LOCAL_RANK`` on CUDA, and the process group is initialised here (NCCL on
    CUDA, gloo on CPU) unless the caller already did.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return Distributed(0, 1, dev, False)
    local = int(os.environ.get("LOCAL_RANK", "0"))  # the rank comes from the process group
    if dev.type == "cuda":
        dev = torch.device("cuda", local)  # one GPU per process
        torch.cuda.set_device(dev)
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return Distributed(dist.get_rank(), dist.get_world_size(), dev, own)


def teardown_distributed(d: Distributed) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; a no-op when ``world == 1``)."""
    if world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: int) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when plain)."""
    if world <= 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    """Mean of ``t`` over ranks (sum then divide: gloo has no AVG); ``t`` when plain."""
    if world <= 1:
        return t
    dist.all_reduce(t)
    return t / world

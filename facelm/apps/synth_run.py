""":func:`synth`, the Python side of ``facelm synth``: models in, an annotated face set out.

The story of a run: check every argument, load both models, take the output folder's lock,
find what an earlier run left (:mod:`facelm.apps.synth_folder`) and which of its shards
verify (:mod:`facelm.apps.synth_shards`), then make the missing shards batch by batch,
recording each in the manifest as it completes. The folder layout and the z rule are
described in :mod:`facelm.apps.synth`.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelm import __version__
from facelm.apps.synth_folder import (LAYOUT, check_writable, folder_lock, previous_run,
                                      refuse_foreign, shard_plan, write_manifest)
from facelm.apps.synth_shards import FORMATS, FaceArrays, NpyWriter, PtsWriter, carry_over

if TYPE_CHECKING:  # torch and cv2 load lazily: `facelm --help` should not wait for them
    import torch

__all__ = ["Z_BLOCK", "FORMATS", "latents", "synth"]

Z_BLOCK = 1024                     # latents are drawn in blocks of this many faces


def latents(start: int, stop: int, *, seed: int = 0, truncation: float = 1.0,
            z_dim: int = 64) -> np.ndarray:
    """The latents of faces ``start .. stop-1``: float32 ``[stop - start, z_dim]``.

    Face ``i`` gets row ``i % Z_BLOCK`` of ``default_rng([seed, i // Z_BLOCK])``'s uniform
    draws, mapped to ``[-truncation, truncation)``: a function of ``(seed, i)`` only.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    blocks = []
    for b in range(start // Z_BLOCK, -(-stop // Z_BLOCK)):
        u = np.random.default_rng([seed, b]).random((Z_BLOCK, z_dim), dtype=np.float32)
        lo, hi = max(start - b * Z_BLOCK, 0), min(stop - b * Z_BLOCK, Z_BLOCK)
        blocks.append(u[lo:hi])
    u = np.concatenate(blocks) if blocks else np.zeros((0, z_dim), np.float32)
    return ((u * 2 - 1) * np.float32(truncation)).astype(np.float32)


# ------------------------------------------------------------------------ small helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA when available else CPU; refuses a CUDA device that is absent."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) here")
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return dev


def load_models(generator: Path, lgen: Path, device: torch.device):
    """Load both models, turning any failure into one ValueError naming the file."""
    from facelm.models.began import load_generator
    from facelm.models.lgen import load_lgen

    for name, path in (("generator", generator), ("lgen", lgen)):
        if not path.is_file():
            raise FileNotFoundError(f"{name} model not found: {path}")
    models = []
    for name, path, load in (("generator", generator, load_generator),
                             ("lgen", lgen, load_lgen)):
        try:
            models.append(load(path, device))
        except Exception as err:  # a safetensors/JSON/shape error: not a facelm model
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path} is not a facelm {name} model ({detail})") from None
    G, L = models
    if G.z_dim != L.z_dim:
        raise ValueError(f"the generator takes z of {G.z_dim} dims but the L-Gen takes "
                         f"{L.z_dim}: they were not trained together")
    return G, L


def _check_args(*, n, seed, truncation, batch_size, shard_size, fmt, workers) -> None:
    def integer(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    for name, value in (("n", n), ("batch_size", batch_size), ("shard_size", shard_size),
                        ("workers", workers)):
        if not integer(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) \
            or not 0 < truncation <= 1:
        raise ValueError(f"truncation must be in (0, 1], got {truncation!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _infer(G, L, z_np: np.ndarray, dev, bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """One batch: G(z) as uint8 NHWC and L-Gen(z) as float32 ``[B, P, 2]``."""
    import torch

    from facelm.tensors import to_uint8

    with torch.inference_mode():
        z = torch.from_numpy(z_np).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            x = G(z)
        lm = L(z).float().cpu().numpy()  # fp32 always: bf16 would cost landmark precision
        return to_uint8(x), lm


def _new_manifest(identity: dict, old: dict | None, plan: list[dict], G, L, generator: Path,
                  lgen: Path, command: str | None) -> dict:
    """The manifest of this run (complete: False), carrying over the old one's history."""
    return {
        **identity,
        "facelm_version": __version__,
        "created": old["created"] if old else _now(),
        "updated": _now(),
        "command": command,
        "generator": {"path": str(generator.resolve()), "sha256": identity["generator_sha256"],
                      **G.config()},
        "lgen": {"path": str(lgen.resolve()), "sha256": identity["lgen_sha256"],
                 **L.config()},
        "image_size": G.size,
        "n_points": L.n_points,
        "z_dim": G.z_dim,
        "z_rule": (f"face i: row i % {Z_BLOCK} of numpy default_rng([seed, i // {Z_BLOCK}])"
                   f".random(({Z_BLOCK}, z_dim), float32) u; z = (2u - 1) * truncation"),
        "landmarks": "unit coordinates x / W, y / H (pixel centres at (i + 0.5) / W); "
                     ".pts files in pixels, 300-W convention (+0.5)",
        "files": old.get("files") if old else None,
        "runs": (old.get("runs", []) if old else []),
        "complete": False,
        "shards": plan,
    }


# -------------------------------------------------------------------------------- synth
def synth(
    generator: str | os.PathLike,          # generator .safetensors (facelm.models.began.save_model)
    lgen: str | os.PathLike,               # L-Gen .safetensors (facelm.models.lgen.save_lgen)
    out: str | os.PathLike,                # output folder (created if missing)
    n: int,                                # number of faces
    *,
    seed: int = 0,                         # z for face i depends only on (seed, i)
    truncation: float = 1.0,               # z uniform in [-t, t]^z_dim, 0 < t <= 1
    batch_size: int = 256,                 # faces per forward pass
    device: str | torch.device | None = None,  # None/"auto": CUDA if available, else CPU
    shard_size: int = 1000,                # faces per shard (the unit of resumption)
    fmt: str = "pts",                      # "pts": PNG + .pts per face; "npz": .npy arrays
    overwrite: bool = False,               # replace an existing, different output
    progress: bool = True,                 # tqdm bar (faces/s) on stderr
    bf16: bool = False,                    # run G under bf16 autocast (meant for CUDA)
    workers: int | None = None,            # PNG-writing threads (default: min(8, CPUs))
    callbacks: Iterable[Callable[[str, dict], None]] = (),
    command: str | None = None,            # the command line, recorded in the manifest
) -> dict:
    """Write ``n`` synthetic faces with their L-Gen landmarks to ``out``; return the manifest.

    Resumes an interrupted run with the same arguments, re-making any shard whose files do
    not verify (see :mod:`facelm.apps.synth` for the folder layout and the z rule). Arguments
    are all checked before any work; a bad one raises ValueError or FileNotFoundError
    naming it; a folder another run is writing raises
    :class:`facelm.apps.synth_folder.OutputInUse` (a ValueError). Callbacks ``cb(event,
    state)`` get "shard" after each completed shard ({index, start, stop, done, total,
    manifest}) and "end" ({manifest, faces, seconds, faces_per_second}).
    """
    import torch

    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    _check_args(n=n, seed=seed, truncation=truncation, batch_size=batch_size,
                shard_size=shard_size, fmt=fmt, workers=workers)
    n, seed, batch_size, shard_size = int(n), int(seed), int(batch_size), int(shard_size)
    truncation = float(truncation)
    dev = resolve_device(device)
    generator, lgen, out = Path(generator), Path(lgen), Path(out)
    G, L = load_models(generator, lgen, dev)
    check_writable(out)
    refuse_foreign(out, overwrite)  # before the lock: a refused folder gets no lock file
    # NHWC convolutions: ~1.5-2x faster on CPU (oneDNN) and the layout tensor cores want;
    # the uint8 NHWC copy-out then needs no transpose
    G = G.to(memory_format=torch.channels_last)
    identity = {"layout": LAYOUT, "generator_sha256": _sha256(generator),
                "lgen_sha256": _sha256(lgen), "seed": seed, "n": n, "truncation": truncation,
                "format": fmt, "shard_size": shard_size, "bf16": bool(bf16)}
    faces = FaceArrays(G.size, L.n_points, G.z_dim)
    with folder_lock(out):  # one run per folder, until this one ends
        old = previous_run(out, identity, overwrite)  # refuses a different synthesis
        plan = shard_plan(n, shard_size)
        if old is not None:
            carry_over(plan, old, out, fmt, faces)  # only shards that verify on disk
        todo = [s for s in plan if s["state"] != "complete"]
        if not todo and old is not None and old.get("complete"):
            for cb in callbacks:
                cb("end", {"manifest": old, "faces": 0, "seconds": 0.0, "faces_per_second": 0.0})
            return old  # already finished and every shard verified: nothing to redo
        manifest = _new_manifest(identity, old, plan, G, L, generator, lgen, command)
        write_manifest(out, manifest)  # before any shard file: the folder says what it holds
        done = n - sum(s["stop"] - s["start"] for s in todo)
        if fmt == "pts":
            writer: Any = PtsWriter(out, n, G.size, workers)
        else:
            writer = NpyWriter(out, n, faces, fresh=done == 0)
        run = {"started": _now(), "command": command, "device": str(dev),
               "batch_size": batch_size, "first_face": todo[0]["start"] if todo else n,
               "faces": 0, "seconds": 0.0}
        return _make_shards(G, L, dev, out, manifest, todo, writer, run, seed=seed,
                            truncation=truncation, batch_size=batch_size, bf16=bf16,
                            progress=progress, callbacks=callbacks)


def _make_shards(G, L, dev, out: Path, manifest: dict, todo: list[dict], writer: Any,
                 run: dict, *, seed: int, truncation: float, batch_size: int, bf16: bool,
                 progress: bool, callbacks: Iterable[Callable[[str, dict], None]]) -> dict:
    """Make the ``todo`` shards in order, the manifest rewritten after each; then complete it."""
    import torch
    from tqdm import tqdm  # plain bar on stderr (no notebook widget from a library)

    n = manifest["n"]
    done = n - sum(s["stop"] - s["start"] for s in todo)
    bar = tqdm(total=n, initial=done, unit="face", desc="synth", disable=not progress,
               smoothing=0.1)
    manifest["runs"].append(run)
    t0 = time.perf_counter()
    old_bench = torch.backends.cudnn.benchmark
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
        for shard in todo:
            writer.begin(shard)
            z_all = latents(shard["start"], shard["stop"], seed=seed, truncation=truncation,
                            z_dim=G.z_dim)
            for s in range(0, len(z_all), batch_size):
                z_np = z_all[s:s + batch_size]
                writer.add(shard["start"] + s, z_np, *_infer(G, L, z_np, dev, bf16))
                bar.update(len(z_np))
            writer.commit(shard)
            shard["state"] = "complete"
            done += shard["stop"] - shard["start"]
            run["faces"] += shard["stop"] - shard["start"]
            run["seconds"] = round(time.perf_counter() - t0, 3)
            manifest["updated"] = _now()
            write_manifest(out, manifest)
            for cb in callbacks:
                cb("shard", {"index": shard["index"], "start": shard["start"],
                             "stop": shard["stop"], "done": done, "total": n,
                             "manifest": manifest})
        manifest["files"] = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        torch.backends.cudnn.benchmark = old_bench

    seconds = time.perf_counter() - t0
    run["seconds"] = round(seconds, 3)
    run["faces_per_second"] = round(run["faces"] / seconds, 1) if seconds > 0 else None
    manifest["complete"] = True
    manifest["updated"] = _now()
    write_manifest(out, manifest)
    for cb in callbacks:
        cb("end", {"manifest": manifest, "faces": run["faces"], "seconds": seconds,
                   "faces_per_second": run["faces_per_second"]})
    return manifest

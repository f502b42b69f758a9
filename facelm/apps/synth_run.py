""":func:`synth`, the Python side of ``facelm synth``: models in, an annotated face set out.

The story of a run: check every argument, load both models, take the output folder's lock,
find what an earlier run left (:mod:`facelm.apps.synth_folder`) and which of its shards
verify (:mod:`facelm.apps.synth_shards`), then make the missing shards batch by batch,
recording each in the manifest as it completes. The folder layout and the z rule are
described in :mod:`facelm.apps.synth`; keeping only the most certain faces of a label
generator on G's features (``keep_frac``) in :mod:`facelm.apps.synth_certain`.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelm import __version__
from facelm.apps.synth_checks import check_args, check_kind, load_models, resolve_device
from facelm.apps.synth_certain import (Z_BLOCK, calibrate, certain_batches, record_acceptance,
                                       uniform_stream)
from facelm.apps.synth_folder import (LAYOUT, check_writable, folder_lock, previous_run,
                                      refuse_foreign, shard_plan, write_manifest)
from facelm.apps.synth_shards import FORMATS, FaceArrays, NpyWriter, PtsWriter, carry_over

if TYPE_CHECKING:  # torch and cv2 load lazily: `facelm --help` should not wait for them
    import torch

__all__ = ["Z_BLOCK", "FORMATS", "latents", "synth"]


def latents(start: int, stop: int, *, z_dim: int, seed: int = 0,
            truncation: float = 1.0) -> np.ndarray:
    """The latents of faces ``start .. stop-1``: float32 ``[stop - start, z_dim]``.

    Face ``i`` gets row ``i % Z_BLOCK`` of ``default_rng([seed, i // Z_BLOCK])``'s uniform
    draws, mapped to ``[-truncation, truncation)``: a function of ``(seed, i)`` only.
    """
    return uniform_stream(start, stop, [seed], truncation=truncation, z_dim=z_dim)


# ------------------------------------------------------------------------ small helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _infer(G, L, z_np: np.ndarray, dev, bf16: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """One batch: G(z) as uint8 NHWC, the landmarks as float32 ``[B, P, 2]`` and, from a label
    generator on G's features, their uncertainty float32 ``[B]`` (None from an L-Gen on z)."""
    import torch

    from facelm.tensors import to_uint8

    with torch.inference_mode():
        z = torch.from_numpy(z_np).to(dev, non_blocking=True)
        if L.kind == "features":  # one pass of its own copy of G (the same weights as G)
            x, lm, u = L.generate(z)
            return to_uint8(x), lm.float().cpu().numpy(), u.float().cpu().numpy()
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            x = G(z)
        lm = L(z).float().cpu().numpy()  # fp32 always: bf16 would cost landmark precision
        return to_uint8(x), lm, None


def _new_manifest(identity: dict, old: dict | None, plan: list[dict], G, L, generator: Path,
                  lgen: Path, command: str | None, keep: dict | None) -> dict:
    """The manifest of this run (complete: False), carrying over the old one's history."""
    features = L.kind == "features"
    return {
        **identity,
        "facelm_version": __version__,
        "created": old["created"] if old else _now(),
        "updated": _now(),
        "command": command,
        "generator": {"path": str(generator.resolve()), "sha256": identity["generator_sha256"],
                      **G.config()},
        "lgen": {"path": str(lgen.resolve()), "sha256": identity["lgen_sha256"], "kind": L.kind,
                 **L.config(), **({"generator_digest": L.generator_digest} if features else {})},
        "image_size": G.size,
        "n_points": L.n_points,
        "z_dim": G.z_dim,
        "z_rule": keep["candidate_rule"] if keep else
        (f"face i: row i % {Z_BLOCK} of numpy default_rng([seed, i // {Z_BLOCK}])"
         f".random(({Z_BLOCK}, z_dim), float32) u; z = (2u - 1) * truncation"),
        "uncertainty": ("float32 per face (uncertainty.npy): the spread of the label generator's "
                        "ensemble, in NME units" if features else None),
        "keep": keep,
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
    bf16: bool = False,                    # run G under bf16 autocast (meant for CUDA; z kind)
    workers: int | None = None,            # PNG-writing threads (default: min(8, CPUs))
    callbacks: Iterable[Callable[[str, dict], None]] = (),
    command: str | None = None,            # the command line, recorded in the manifest
    keep_frac: float | None = None,        # keep the most certain share (features kind only)
    calibration: int = 4096,               # random z whose uncertainty sets keep_frac's threshold
) -> dict:
    """Write ``n`` synthetic faces with their label generator's landmarks to ``out`` (and,
    from a label generator on G's features, each face's uncertainty); return the manifest.

    Resumes an interrupted run with the same arguments, re-making any shard whose files do
    not verify (see :mod:`facelm.apps.synth` for the folder layout and the z rule, and
    :mod:`facelm.apps.synth_certain` for ``keep_frac``). Arguments
    are all checked before any work; a bad one raises ValueError or FileNotFoundError
    naming it; a folder another run is writing raises
    :class:`facelm.apps.synth_folder.OutputInUse` (a ValueError). Callbacks ``cb(event,
    state)`` get "shard" after each completed shard ({index, start, stop, done, total,
    manifest}) and "end" ({manifest, faces, seconds, faces_per_second}).
    """
    import torch

    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    check_args(n=n, seed=seed, truncation=truncation, batch_size=batch_size,
               shard_size=shard_size, fmt=fmt, workers=workers, keep_frac=keep_frac,
               calibration=calibration)
    n, seed, batch_size, shard_size = int(n), int(seed), int(batch_size), int(shard_size)
    truncation = float(truncation)
    keep_frac = None if keep_frac is None else float(keep_frac)
    dev = resolve_device(device)
    generator, lgen, out = Path(generator), Path(lgen), Path(out)
    G, L = load_models(generator, lgen, dev)
    check_kind(L, lgen, keep_frac, bf16)
    check_writable(out)
    refuse_foreign(out, overwrite)  # before the lock: a refused folder gets no lock file
    # NHWC convolutions: ~1.5-2x faster on CPU (oneDNN) and the layout tensor cores want;
    # the uint8 NHWC copy-out then needs no transpose
    G = G.to(memory_format=torch.channels_last)
    if L.kind == "features":
        L.G.to(memory_format=torch.channels_last)  # the copy of G that draws its faces
    identity = {"layout": LAYOUT, "generator_sha256": _sha256(generator),
                "lgen_sha256": _sha256(lgen), "seed": seed, "n": n, "truncation": truncation,
                "format": fmt, "shard_size": shard_size, "bf16": bool(bf16),
                "keep_frac": keep_frac,
                "calibration_size": None if keep_frac is None else int(calibration)}
    faces = FaceArrays(G.size, L.n_points, G.z_dim, uncertainty=L.kind == "features")
    job = _Job(G, L, dev, seed, truncation, batch_size, bool(bf16))
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
        if keep_frac is not None:  # the threshold is fixed once per folder, then reused
            job.keep = old["keep"] if old is not None and old.get("keep") else calibrate(
                job.infer, keep_frac=keep_frac, size=int(calibration), seed=seed,
                truncation=truncation, z_dim=G.z_dim, batch_size=batch_size)
        manifest = _new_manifest(identity, old, plan, G, L, generator, lgen, command, job.keep)
        write_manifest(out, manifest)  # before any shard file: the folder says what it holds
        done = n - sum(s["stop"] - s["start"] for s in todo)
        if fmt == "pts":
            writer: Any = PtsWriter(out, n, G.size, workers)
        else:
            writer = NpyWriter(out, n, faces, fresh=done == 0)
        run = {"started": _now(), "command": command, "device": str(dev),
               "batch_size": batch_size, "first_face": todo[0]["start"] if todo else n,
               "faces": 0, "seconds": 0.0}
        return _make_shards(job, out, manifest, todo, writer, run, progress=progress,
                            callbacks=callbacks)


@dataclass
class _Job:
    """The models and the settings that decide a shard's faces."""

    G: Any
    L: Any
    dev: Any
    seed: int
    truncation: float
    batch_size: int
    bf16: bool
    keep: dict | None = None  # the manifest's keep record (keep_frac runs)

    def infer(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        return _infer(self.G, self.L, z, self.dev, self.bf16)

    def batches(self, shard: dict) -> Iterator[tuple]:
        """``(z, images, landmarks, uncertainty or None)`` batches of the shard's faces, in order."""
        if self.keep is not None:
            yield from certain_batches(self.infer, shard, self.keep, seed=self.seed,
                                       truncation=self.truncation, z_dim=self.G.z_dim,
                                       batch_size=self.batch_size)
            return
        z_all = latents(shard["start"], shard["stop"], seed=self.seed,
                        truncation=self.truncation, z_dim=self.G.z_dim)
        for s in range(0, len(z_all), self.batch_size):
            z = z_all[s:s + self.batch_size]
            yield (z, *self.infer(z))


def _make_shards(job: _Job, out: Path, manifest: dict, todo: list[dict], writer: Any,
                 run: dict, *, progress: bool,
                 callbacks: Iterable[Callable[[str, dict], None]]) -> dict:
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
        if job.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
        for shard in todo:
            writer.begin(shard)
            first = shard["start"]
            for z, images, lm, u in job.batches(shard):
                writer.add(first, z, images, lm, u)
                first += len(z)
                bar.update(len(z))
            writer.commit(shard)
            shard["state"] = "complete"
            if job.keep is not None:
                record_acceptance(job.keep, manifest["shards"])
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

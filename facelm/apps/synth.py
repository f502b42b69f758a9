"""``facelm synth``: turn a trained generator and L-Gen into an annotated synthetic face set.

One latent z per face feeds both G (the face) and L-Gen (its landmarks), as in the paper's
Fig. 7. Faces are written in shards so that a long run can be interrupted and resumed.

    facelm synth --out synth/ -n 100000 --seed 0            # inside the project: data/ models
    facelm synth --generator G.safetensors --lgen L.safetensors --out synth/ -n 5000
    facelm synth --out synth/ -n 1000000 --format npz --device cuda --batch-size 1024 --bf16
    python -m facelm.apps.synth ...                               # the same, without facelm.cli
    synth("G.safetensors", "L.safetensors", "synth/", 5000)  # Python; returns the manifest

Latents. z for face ``i`` depends only on ``(seed, i)``: faces are grouped in fixed blocks
of :data:`Z_BLOCK` (1024) and block ``b`` draws ``u = default_rng([seed, b]).random((1024,
z_dim), float32)``; face ``i`` takes row ``i % 1024`` of block ``i // 1024`` and
``z = (2u - 1) * truncation``. So the same seed gives the same faces whatever the shard
size, the batch size or where a run was interrupted, and a smaller truncation only shrinks
the same z towards 0 (less varied, more typical faces).

Output folder (``--out``)::

    manifest.json              what was made, from what, and which shards are complete
    --format pts (default)     one folder per shard of --shard-size faces:
      shard_00000/00000000.png   the face, RGB PNG (lossless)
      shard_00000/00000000.pts   its landmarks, 300-W .pts in pixels (read with landmarks.read_pts)
      shard_00000/z.npy          float32 [faces in shard, z_dim], the latents, in face order
      shard_00000/landmarks.npy  float32 [faces in shard, P, 2], unit coordinates (exact)
    --format npz               one set of arrays for all N faces, as memory-mappable .npy
      images.npy                 uint8 [N, S, S, 3] RGB
      landmarks.npy              float32 [N, P, 2] unit coordinates (x / W, y / H)
      z.npy                      float32 [N, z_dim]
                               (read with ``np.load(path, mmap_mode="r")``; plain .npy rather
                               than a .npz zip, because a zip can be neither memory-mapped nor
                               filled in place, and N may exceed memory)

Crash safety. A pts shard is written into ``.shard_00000.tmp/`` and renamed to
``shard_00000/`` once all its files are written; npz arrays are filled in place as
``images.partial.npy`` etc. and renamed to their final names only when every shard is done.
The manifest (replaced atomically after every shard) lists each shard's state and has
``"complete": true`` only at the very end. Re-running the same command resumes after the
shards recorded complete; anything else in the folder is regenerated. An existing output
folder made with another seed, N, truncation, format, shard size, precision or other models
is refused unless ``overwrite`` (which removes only what synth writes).

Speed. Batched inference under ``torch.inference_mode``, G in channels-last memory format
(G optionally under bf16 autocast;
L-Gen always in float32, since bf16 would cost ~0.5 px of landmark precision at 128 px);
PNG encoding and file writes run in a thread pool (OpenCV releases the GIL) while the
device computes the next batch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facelm import __version__
from facelm.landmarks import to_pixels, write_pts

if TYPE_CHECKING:  # torch and cv2 load lazily: `facelm --help` should not wait for them
    import torch

__all__ = ["Z_BLOCK", "FORMATS", "synth", "latents", "add_parser", "run_cli", "main"]

Z_BLOCK = 1024                     # latents are drawn in blocks of this many faces
FORMATS = ("pts", "npz")
MANIFEST = "manifest.json"
LAYOUT = "facelm.apps.synth/1"          # bump when the folder layout or the z rule changes
_ARRAYS = ("images", "landmarks", "z")
# what a fresh run (or --overwrite) may find and remove: only names synth itself writes
_OURS = re.compile(r"(\.?shard_\d+(\.tmp)?|(images|landmarks|z)(\.partial)?\.npy|"
                   + re.escape(MANIFEST) + r"|\." + re.escape(MANIFEST) + r"\..*\.tmp)")
# manifest fields that must match for a run to resume an existing folder
_IDENTITY = ("layout", "generator_sha256", "lgen_sha256", "seed", "n", "truncation",
             "format", "shard_size", "bf16")


# ------------------------------------------------------------------------------ latents
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


def _write_json(path: Path, obj: dict) -> None:
    """Replace ``path`` atomically, so a reader never sees half a manifest."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a manifest is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _ours(path: Path) -> bool:
    return _OURS.fullmatch(path.name) is not None


def _resolve_device(device: str | torch.device | None) -> torch.device:
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


def _load_models(generator: Path, lgen: Path, device: torch.device):
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


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"output folder {out} is not writable ({err.strerror or err})") from None


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


def _shard_plan(n: int, shard_size: int) -> list[dict]:
    return [{"index": k, "start": s, "stop": min(s + shard_size, n), "state": "pending"}
            for k, s in enumerate(range(0, n, shard_size))]


def _previous(out: Path, identity: dict, overwrite: bool) -> dict | None:
    """The manifest of a run to resume in ``out``, or None after clearing the way for a new one.

    Refuses (ValueError) a folder holding another synthesis, an unreadable manifest or
    other people's files, unless ``overwrite``; removes only names synth writes.
    """
    mpath, old = out / MANIFEST, None
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if not overwrite:
                raise ValueError(f"{mpath} is unreadable ({err}); pass --overwrite "
                                 f"(overwrite=True) to start afresh") from None
            old = None
    else:
        # our own leftovers (a run killed before its first manifest) are simply cleaned
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p))
        if foreign and not overwrite:
            raise ValueError(f"output folder {out} is not empty and holds no {MANIFEST} "
                             f"(e.g. {foreign[0]}); choose another folder or pass "
                             f"--overwrite (overwrite=True)")
    if old is not None and any(old.get(k) != identity[k] for k in _IDENTITY):
        if not overwrite:
            raise ValueError(f"{out} already holds a different synthesis "
                             f"({_describe_mismatch(old, identity)}); pass --overwrite "
                             f"(overwrite=True) to replace it, or choose another folder")
        old = None
    if old is None:
        # fresh start: the manifest goes first, so a crash mid-cleanup leaves no stale claim
        for p in sorted(out.iterdir(), key=lambda p: p.name != MANIFEST):
            if _ours(p):
                _remove(p)
    for p in out.glob(f".{MANIFEST}.*.tmp"):  # from a run killed while writing the manifest
        p.unlink()
    return old


def _carry_over(plan: list[dict], old: dict, out: Path, fmt: str) -> None:
    """Mark complete the shards the old manifest says are complete AND whose data exist."""
    if len(old.get("shards", [])) != len(plan):
        return
    suffix = ".npy" if old.get("complete") else ".partial.npy"
    arrays_there = all((out / f"{a}{suffix}").is_file() for a in _ARRAYS)
    for s, o in zip(plan, old["shards"]):
        there = (out / f"shard_{s['index']:05d}").is_dir() if fmt == "pts" else arrays_there
        if o.get("state") == "complete" and there:
            s.update(o)


def _describe_mismatch(old: dict, new: dict) -> str:
    diffs = []
    for key in _IDENTITY:
        a, b = old.get(key), new.get(key)
        if a != b:
            if key.endswith("sha256"):
                a, b = str(a)[:12], str(b)[:12]
            diffs.append(f"{key} {a} (there) vs {b} (now)")
    return ", ".join(diffs)


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


# ----------------------------------------------------------------------------- writers
def _write_faces(folder: Path, first: int, images: np.ndarray, points_px: np.ndarray,
                 digits: int) -> None:
    """PNG + .pts for consecutive faces starting at global index ``first`` (runs in a thread)."""
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for j, (img, pts) in enumerate(zip(images, points_px)):
        stem = folder / f"{first + j:0{digits}d}"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise OSError(f"PNG encoding failed for {stem}.png")
        with open(f"{stem}.png", "wb") as f:
            f.write(buf.tobytes())
        write_pts(f"{stem}.pts", pts)


class _PtsWriter:
    """Writes shards as folders of PNG + .pts files through a bounded thread pool."""

    def __init__(self, out: Path, n: int, image_size: int, workers: int):
        self.out, self.size = out, image_size
        self.digits = max(8, len(str(n - 1)))
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="synth-png")
        self.pending: deque[Future] = deque()

    def shard_name(self, k: int) -> str:
        return f"shard_{k:05d}"

    def begin(self, shard: dict) -> None:
        k = shard["index"]
        self.tmp = self.out / f".{self.shard_name(k)}.tmp"
        _remove(self.tmp)
        _remove(self.out / self.shard_name(k))  # an unrecorded (maybe partial) earlier try
        self.tmp.mkdir()
        self.z, self.lm = [], []

    def add(self, first: int, z: np.ndarray, images: np.ndarray, lm: np.ndarray) -> None:
        self.z.append(z)
        self.lm.append(lm)
        px = to_pixels(lm, self.size, self.size)
        step = -(-len(images) // self.workers)
        for s in range(0, len(images), step):
            self.pending.append(self.pool.submit(_write_faces, self.tmp, first + s,
                                                 images[s:s + step], px[s:s + step],
                                                 self.digits))
        # backpressure: keep the device busy but never hold more than ~2 batches in RAM
        while len(self.pending) > 2 * self.workers:
            self.pending.popleft().result()

    def commit(self, shard: dict) -> None:
        while self.pending:
            self.pending.popleft().result()
        np.save(self.tmp / "z.npy", np.concatenate(self.z))
        np.save(self.tmp / "landmarks.npy", np.concatenate(self.lm))
        name = self.shard_name(shard["index"])
        os.replace(self.tmp, self.out / name)  # the shard appears whole or not at all
        shard["path"] = name

    def abort(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        if getattr(self, "tmp", None) is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self) -> dict:
        self.pool.shutdown(wait=True)
        return {"layout": "shard_NNNNN/IIIIIIII.png + .pts, shard_NNNNN/z.npy, landmarks.npy"}


class _NpyWriter:
    """Fills memory-mapped .npy arrays in place; renames them to final names at the end."""

    def __init__(self, out: Path, n: int, image_size: int, n_points: int, z_dim: int,
                 fresh: bool):
        self.out = out
        specs = {"images": (np.uint8, (n, image_size, image_size, 3)),
                 "landmarks": (np.float32, (n, n_points, 2)),
                 "z": (np.float32, (n, z_dim))}
        self.arrays = {}
        for name, (dtype, shape) in specs.items():
            path = self.partial(name)
            mode = "r+" if path.is_file() and not fresh else "w+"
            arr = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)
            if arr.dtype != dtype or arr.shape != shape:
                raise ValueError(f"{path} has {arr.dtype} {arr.shape}, expected {shape}")
            self.arrays[name] = arr

    def partial(self, name: str) -> Path:
        return self.out / f"{name}.partial.npy"

    def begin(self, shard: dict) -> None:
        pass

    def add(self, first: int, z: np.ndarray, images: np.ndarray, lm: np.ndarray) -> None:
        stop = first + len(z)
        self.arrays["images"][first:stop] = images
        self.arrays["landmarks"][first:stop] = lm
        self.arrays["z"][first:stop] = z

    def commit(self, shard: dict) -> None:
        for arr in self.arrays.values():
            arr.flush()  # on disk before the manifest says the shard is complete
        shard["rows"] = [shard["start"], shard["stop"]]

    def abort(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()

    def finish(self) -> dict:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()  # drop the maps before renaming their files
        for name in _ARRAYS:
            os.replace(self.partial(name), self.out / f"{name}.npy")
        return {name: f"{name}.npy" for name in _ARRAYS}


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

    Resumes an interrupted run with the same arguments (see the module docstring for the
    folder layout and the z rule). Arguments are all checked before any work; a bad one
    raises ValueError or FileNotFoundError naming it. Callbacks ``cb(event, state)`` get
    "shard" after each completed shard ({index, start, stop, done, total, manifest}) and
    "end" ({manifest, faces, seconds, faces_per_second}).
    """
    import torch
    from tqdm import tqdm  # plain bar on stderr (no notebook widget from a library)

    # ---- arguments, all before any work
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    _check_args(n=n, seed=seed, truncation=truncation, batch_size=batch_size,
                shard_size=shard_size, fmt=fmt, workers=workers)
    n, seed, batch_size, shard_size = int(n), int(seed), int(batch_size), int(shard_size)
    truncation = float(truncation)
    dev = _resolve_device(device)
    generator, lgen, out = Path(generator), Path(lgen), Path(out)
    G, L = _load_models(generator, lgen, dev)
    _check_writable(out)
    # NHWC convolutions: ~1.5-2x faster on CPU (oneDNN) and the layout tensor cores want;
    # the uint8 NHWC copy-out then needs no transpose
    G = G.to(memory_format=torch.channels_last)

    identity = {"layout": LAYOUT, "generator_sha256": _sha256(generator),
                "lgen_sha256": _sha256(lgen), "seed": seed, "n": n, "truncation": truncation,
                "format": fmt, "shard_size": shard_size, "bf16": bool(bf16)}
    mpath = out / MANIFEST
    old = _previous(out, identity, overwrite)  # refuses a different synthesis
    plan = _shard_plan(n, shard_size)
    if old is not None:
        _carry_over(plan, old, out, fmt)

    # ---- the manifest
    manifest = {
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
    todo = [s for s in plan if s["state"] != "complete"]
    done = n - sum(s["stop"] - s["start"] for s in todo)
    if not todo and old is not None and old.get("complete") and all(
            (out / f"{a}.npy").is_file() for a in (_ARRAYS if fmt == "npz" else ())):
        for cb in callbacks:
            cb("end", {"manifest": old, "faces": 0, "seconds": 0.0, "faces_per_second": 0.0})
        return old  # already finished: nothing to redo
    _write_json(mpath, manifest)

    if fmt == "pts":
        writer: Any = _PtsWriter(out, n, G.size, workers)
    else:
        writer = _NpyWriter(out, n, G.size, L.n_points, G.z_dim, fresh=done == 0)

    bar = tqdm(total=n, initial=done, unit="face", desc="synth", disable=not progress,
               smoothing=0.1)
    run = {"started": _now(), "command": command, "device": str(dev), "batch_size": batch_size,
           "first_face": todo[0]["start"] if todo else n, "faces": 0, "seconds": 0.0}
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
            _write_json(mpath, manifest)
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
    _write_json(mpath, manifest)
    for cb in callbacks:
        cb("end", {"manifest": manifest, "faces": run["faces"], "seconds": seconds,
                   "faces_per_second": run["faces_per_second"]})
    return manifest


# ---------------------------------------------------------------------------------- CLI
def _default_model(rel: str) -> str | None:
    from facelm.paths import project_root

    try:
        return str(project_root() / rel)
    except FileNotFoundError:
        return None


def _command_line() -> str:
    """This process's command line as a user would retype it (no absolute script paths)."""
    argv0 = Path(sys.argv[0] if sys.argv else "facelm")
    if argv0.name == "synth.py":
        head = ["python", "-m", "facelm.apps.synth"]
    elif argv0.name == "__main__.py":
        head = ["python", "-m", argv0.parent.name]
    else:
        head = [argv0.name]
    return shlex.join([*head, *sys.argv[1:]])


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse's own errors one line on stderr (no usage dump), exit status 2."""
    def error(message: str):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", metavar="PATH",
                   help="trained generator weights (.safetensors from facelm.models.began.save_model);"
                        " default: data/began/generator.safetensors under the project root "
                        "when run inside a facelm project, else required")
    p.add_argument("--lgen", metavar="PATH",
                   help="trained L-Gen weights (.safetensors from facelm.models.lgen.save_lgen); "
                        "default: data/lgen/lgen.safetensors under the project root when run "
                        "inside a facelm project, else required")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="output folder (created if missing); holds manifest.json and the faces")
    p.add_argument("-n", "--num", type=int, default=1000, metavar="N",
                   help="number of faces to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="non-negative integer; face i's z depends only on (seed, i), so the "
                        "same seed gives the same faces (default: %(default)s)")
    p.add_argument("--truncation", type=float, default=1.0, metavar="T",
                   help="z is uniform in [-T, T]^64, 0 < T <= 1; smaller T gives more typical, "
                        "less varied faces (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B",
                   help="faces per forward pass; raise it on a GPU (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N; auto = CUDA when available, else CPU "
                        "(default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="K",
                   help="faces per shard, the unit written atomically and resumed "
                        "(default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="pts",
                   help="pts: per face a PNG + 300-W .pts (pixels) in shard_NNNNN/ folders; "
                        "npz: arrays images.npy uint8 [N,S,S,3], landmarks.npy float32 "
                        "[N,P,2] (unit coords), z.npy float32 [N,64], memory-mappable with "
                        "np.load(mmap_mode='r') (default: %(default)s)")
    p.add_argument("--bf16", action="store_true",
                   help="run the generator under bf16 autocast (faster on recent GPUs; "
                        "landmarks stay float32); off by default")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="threads encoding and writing PNG files (default: min(8, CPU count))")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output made with other settings or models "
                        "(removes only files synth writes); without it such a folder is "
                        "refused, and the same command resumes an interrupted run")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (faces/s) on stderr")
    p.set_defaults(func=run_cli)
    _one_line_errors(p)


_DESCRIPTION = ("Write N synthetic faces with their 49 L-Gen landmarks: one uniform z per "
                "face feeds the generator and the L-Gen. Sharded and resumable: re-run the "
                "same command after an interruption to continue.")


def add_parser(subparsers) -> None:
    """Add the ``synth`` subcommand (all options, ``func=run_cli``) to an argparse subparsers."""
    p = subparsers.add_parser("synth", help="write an annotated synthetic face data set",
                              description=_DESCRIPTION)
    _configure(p)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``facelm synth`` from parsed arguments; one ``error:`` line and status 2 on bad input."""
    prog = "facelm synth"
    ended: dict = {}
    try:
        # the same checks synth() makes, but worded with the command's option names
        for flag, value, ok, want in (
                ("-n/--num", args.num, args.num >= 1, "a positive integer"),
                ("--seed", args.seed, args.seed >= 0, "a non-negative integer"),
                ("--truncation", args.truncation, 0 < args.truncation <= 1, "in (0, 1]"),
                ("--batch-size", args.batch_size, args.batch_size >= 1, "a positive integer"),
                ("--shard-size", args.shard_size, args.shard_size >= 1, "a positive integer"),
                ("--workers", args.workers, args.workers is None or args.workers >= 1,
                 "a positive integer")):
            if not ok:
                raise ValueError(f"{flag} must be {want}, got {value}")
        generator = args.generator or _default_model("data/began/generator.safetensors")
        lgen = args.lgen or _default_model("data/lgen/lgen.safetensors")
        if generator is None or lgen is None:
            missing = " and ".join(f"--{k}" for k, v in (("generator", generator),
                                                           ("lgen", lgen)) if v is None)
            raise ValueError(f"{missing} required outside a facelm project")
        for flag, given, path in (("--generator", args.generator, generator),
                                  ("--lgen", args.lgen, lgen)):
            if given is None and not Path(path).is_file():
                raise FileNotFoundError(f"no {flag} given and the project's {path} does not "
                                        f"exist yet (train it with `dvc repro`)")
        manifest = synth(generator, lgen, args.out, args.num, seed=args.seed,
                         truncation=args.truncation, batch_size=args.batch_size,
                         device=args.device, shard_size=args.shard_size, fmt=args.format,
                         overwrite=args.overwrite, progress=not args.no_progress,
                         bf16=args.bf16, workers=args.workers, command=_command_line(),
                         callbacks=[lambda event, state: ended.update(state)
                                    if event == "end" else None])
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    run = manifest["runs"][-1]
    if ended.get("faces") == 0:
        print(f"{args.out}: already complete ({manifest['n']} faces); nothing to do")
    else:
        rate = run.get("faces_per_second")
        resumed = f", resumed at face {run['first_face']}" if run["first_face"] else ""
        print(f"{args.out}: {run['faces']} faces ({manifest['image_size']} px, "
              f"{manifest['n_points']} points, {manifest['format']}) in {run['seconds']:.1f} s"
              f" = {rate} faces/s on {run['device']}{resumed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m facelm.apps.synth [options]``: the subcommand without the ``facelm`` wrapper."""
    parser = argparse.ArgumentParser(prog="facelm synth", description=_DESCRIPTION)
    _configure(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

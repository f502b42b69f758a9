"""The shards of a ``facelm synth`` output: how each format writes them and how to check one.

A shard is ``--shard-size`` consecutive faces, the unit that is written atomically and
resumed. Two formats (see :mod:`facelm.apps.synth` for the folder layout):

- ``pts``: :class:`PtsWriter` writes each shard into a temporary folder named for this run
  (``.shard_00000.<pid>-<uuid>.tmp``) and renames the finished folder to ``shard_00000``.
  A folder rename is atomic on one file system, so a shard appears whole or not at all;
  this is the one place synth writes files without :func:`facelm.checkpoint.atomic_write`
  (each file in the folder is private to the run until the rename).
- ``npz``: :class:`NpyWriter` fills memory-mapped ``*.partial.npy`` arrays in place and
  renames them to their final names when every shard is done.

:func:`carry_over` decides which shards a resumed run may keep: those the old manifest
records complete *and* whose files verify on disk (every PNG and .pts present and
non-empty, the .npy arrays of the right dtype, shape and byte size, and the byte total the
manifest recorded), so a damaged shard is made again instead of trusted.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelm.apps.face_drawing import encode_png
from facelm.landmarks import to_pixels, write_pts

FORMATS = ("pts", "npz")


@dataclass(frozen=True)
class FaceArrays:
    """What each face holds: an RGB image, its landmarks and its latent, and with a label
    generator on G's features (``uncertainty``) the landmarks' uncertainty."""

    image_size: int
    n_points: int
    z_dim: int
    uncertainty: bool = False

    def specs(self, rows: int) -> dict[str, tuple[type, tuple[int, ...]]]:
        """``{array name: (dtype, shape)}`` for ``rows`` faces."""
        s = self.image_size
        specs = {"images": (np.uint8, (rows, s, s, 3)),
                 "landmarks": (np.float32, (rows, self.n_points, 2)),
                 "z": (np.float32, (rows, self.z_dim))}
        if self.uncertainty:
            specs["uncertainty"] = (np.float32, (rows,))
        return specs

    def shard_arrays(self) -> list[str]:
        """The .npy files of a pts shard (everything but the images, which are PNG files)."""
        return [name for name in self.specs(0) if name != "images"]


def shard_name(k: int) -> str:
    """The folder of shard ``k`` in the pts format."""
    return f"shard_{k:05d}"


def face_digits(n: int) -> int:
    """Digits of the zero-padded face numbers in file names (at least 8)."""
    return max(8, len(str(n - 1)))


def remove_path(path: Path) -> None:
    """Remove a file, a link or a folder tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -------------------------------------------------------------------------- verification
def npy_holds(path: Path, dtype: type, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a whole .npy file of ``dtype`` and ``shape`` (header and size only)."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if major == 1
                    else np.lib.format.read_array_header_2_0)
            got_shape, fortran, got_dtype = read(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except (OSError, ValueError, EOFError):
        return False
    want = np.dtype(dtype)
    return (got_shape == tuple(shape) and got_dtype == want and not fortran
            and size == offset + int(np.prod(shape)) * want.itemsize)


def _pts_shard_files(shard: dict, digits: int, faces: FaceArrays) -> list[str]:
    stems = [f"{i:0{digits}d}" for i in range(shard["start"], shard["stop"])]
    return ([f"{s}{ext}" for s in stems for ext in (".png", ".pts")]
            + [f"{a}.npy" for a in faces.shard_arrays()])


def pts_shard_whole(folder: Path, shard: dict, digits: int, faces: FaceArrays) -> bool:
    """Whether a pts shard folder holds every file of ``shard`` (its manifest entry), whole.

    Counts one PNG and one .pts per face (each non-empty), checks z.npy and landmarks.npy
    (and uncertainty.npy with a features label generator) against the shard's shape, and compares the files' byte total with the ``"bytes"`` the
    manifest recorded when the shard was written (absent in manifests of older versions).
    Reads only directory entries and two .npy headers, so a resume of a million faces stays quick.
    """
    if not folder.is_dir():
        return False
    sizes = {e.name: e.stat().st_size for e in os.scandir(folder) if e.is_file()}
    names = _pts_shard_files(shard, digits, faces)
    if any(sizes.get(name, 0) == 0 for name in names):
        return False
    specs = faces.specs(shard["stop"] - shard["start"])
    if not all(npy_holds(folder / f"{a}.npy", *specs[a]) for a in faces.shard_arrays()):
        return False
    total = sum(sizes[name] for name in names)
    return shard.get("bytes", total) == total


def arrays_whole(out: Path, suffix: str, n: int, faces: FaceArrays) -> bool:
    """Whether the npz format's arrays (``images{suffix}`` ...) are whole, for ``n`` faces."""
    return all(npy_holds(out / f"{name}{suffix}", *spec) for name, spec in faces.specs(n).items())


def carry_over(plan: list[dict], old: dict, out: Path, fmt: str, faces: FaceArrays) -> None:
    """Mark complete the shards the old manifest says are complete AND that verify on disk."""
    if len(old.get("shards", [])) != len(plan):
        return
    n = plan[-1]["stop"]
    suffix = ".npy" if old.get("complete") else ".partial.npy"
    arrays_ok = fmt == "npz" and arrays_whole(out, suffix, n, faces)
    digits = face_digits(n)
    for s, o in zip(plan, old["shards"]):
        if o.get("state") != "complete" or (o.get("start"), o.get("stop")) != (s["start"], s["stop"]):
            continue
        if arrays_ok if fmt == "npz" else pts_shard_whole(out / shard_name(s["index"]), o,
                                                          digits, faces):
            s.update(o)


# ------------------------------------------------------------------------------ writers
def write_faces(folder: Path, first: int, images: np.ndarray, points_px: np.ndarray,
                digits: int) -> None:
    """PNG + .pts for consecutive faces starting at global index ``first`` (runs in a thread)."""
    for j, (img, pts) in enumerate(zip(images, points_px)):
        stem = folder / f"{first + j:0{digits}d}"
        with open(f"{stem}.png", "wb") as f:
            f.write(encode_png(img, compression=1))
        write_pts(f"{stem}.pts", pts)


class PtsWriter:
    """Writes shards as folders of PNG + .pts files through a bounded thread pool."""

    def __init__(self, out: Path, n: int, image_size: int, workers: int):
        self.out, self.size = out, image_size
        self.digits = face_digits(n)
        self.workers = workers
        self.run_tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # temporaries no other run shares
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="synth-png")
        self.pending: deque[Future] = deque()
        self.tmp: Path | None = None

    def begin(self, shard: dict) -> None:
        name = shard_name(shard["index"])
        self.tmp = self.out / f".{name}.{self.run_tag}.tmp"
        remove_path(self.tmp)
        remove_path(self.out / name)  # an unrecorded, partial or damaged earlier try
        self.tmp.mkdir()
        self.z, self.lm, self.u = [], [], []

    def add(self, first: int, z: np.ndarray, images: np.ndarray, lm: np.ndarray,
            u: np.ndarray | None = None) -> None:
        self.z.append(z)
        self.lm.append(lm)
        if u is not None:
            self.u.append(u)
        px = to_pixels(lm, self.size, self.size)
        step = -(-len(images) // self.workers)
        for s in range(0, len(images), step):
            self.pending.append(self.pool.submit(write_faces, self.tmp, first + s,
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
        if self.u:
            np.save(self.tmp / "uncertainty.npy", np.concatenate(self.u).astype(np.float32))
        sizes = [e.stat().st_size for e in os.scandir(self.tmp) if e.is_file()]
        name = shard_name(shard["index"])
        os.replace(self.tmp, self.out / name)  # the shard appears whole or not at all
        self.tmp = None
        shard.update(path=name, files=len(sizes), bytes=sum(sizes))

    def abort(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self) -> dict:
        self.pool.shutdown(wait=True)
        return {"layout": "shard_NNNNN/IIIIIIII.png + .pts, shard_NNNNN/z.npy, landmarks.npy"
                          + (", uncertainty.npy" if self.u else "")}


class NpyWriter:
    """Fills memory-mapped .npy arrays in place; renames them to final names at the end."""

    def __init__(self, out: Path, n: int, faces: FaceArrays, fresh: bool):
        self.out = out
        self.arrays = {}
        for name, (dtype, shape) in faces.specs(n).items():
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

    def add(self, first: int, z: np.ndarray, images: np.ndarray, lm: np.ndarray,
            u: np.ndarray | None = None) -> None:
        stop = first + len(z)
        self.arrays["images"][first:stop] = images
        self.arrays["landmarks"][first:stop] = lm
        self.arrays["z"][first:stop] = z
        if u is not None:
            self.arrays["uncertainty"][first:stop] = u

    def commit(self, shard: dict) -> None:
        for arr in self.arrays.values():
            arr.flush()  # on disk before the manifest says the shard is complete
        shard["rows"] = [shard["start"], shard["stop"]]

    def abort(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()

    def finish(self) -> dict:
        names = list(self.arrays)
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()  # drop the maps before renaming their files
        for name in names:
            # a rename of a finished file, as atomic_write's last step
            os.replace(self.partial(name), self.out / f"{name}.npy")
        return {name: f"{name}.npy" for name in names}

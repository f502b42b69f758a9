"""The output folder of ``facelm synth``: its lock, its manifest, and what a new run may do there.

One run at a time: :func:`folder_lock` holds an exclusive ``flock`` on ``<out>/.synth.lock``
for the whole run, and a second run into the same folder is refused in one line
(:class:`OutputInUse`) instead of treating the first one's manifest as a run to resume.
The kernel drops the lock when the process ends, however it ends (exit, crash, SIGKILL),
so no stale lock ever blocks a resume. The lock file itself is never removed: unlinking
it could let two runs lock two different files of the same name.

Under the lock, :func:`previous_run` reads the manifest of an earlier run to resume (or
refuses a folder holding something else), and removes temporaries of dead runs. Only
names synth itself writes are ever removed.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facelm.apps.synth_shards import remove_path

__all__ = ["MANIFEST", "LOCK", "LAYOUT", "IDENTITY", "OutputInUse", "folder_lock",
           "check_writable", "refuse_foreign", "previous_run", "shard_plan", "write_manifest"]

MANIFEST = "manifest.json"
LOCK = ".synth.lock"
LAYOUT = "facelm.apps.synth/1"     # bump when the folder layout or the z rule changes
# manifest fields that must match for a run to resume an existing folder
IDENTITY = ("layout", "generator_sha256", "lgen_sha256", "seed", "n", "truncation",
            "format", "shard_size", "bf16", "keep_frac", "calibration_size")
# temporaries of runs that ended (under the lock, no other run is alive to own them):
# shard folders (.shard_00000.<pid>-<uuid>.tmp; .shard_00000.tmp before per-run names)
# and the manifest's (atomic_write's .manifest.json.<random>.tmp)
_STALE = re.compile(r"\.shard_\d+(\.[0-9a-z-]+)?\.tmp|\." + re.escape(MANIFEST) + r"\..*\.tmp")
# the writability probe another run may hold for an instant: ours, but never removed
_PROBE = ".write-probe."
# what a fresh run (or --overwrite) may find and remove: only names synth itself writes
_OURS = re.compile(r"\.?shard_\d+(\.tmp)?|(images|landmarks|z|uncertainty)(\.partial)?\.npy|"
                   + re.escape(MANIFEST) + "|" + re.escape(LOCK) + "|" + re.escape(_PROBE)
                   + ".*|" + _STALE.pattern)


class OutputInUse(ValueError):
    """Another synth run holds the output folder's lock."""


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``out`` for the with-block, or raise :class:`OutputInUse`."""
    import fcntl

    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUse(f"output folder {out} is in use by another facelm synth run "
                              f"(it holds {out / LOCK}); wait for it to end, or choose "
                              f"another folder") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def check_writable(out: Path) -> None:
    """Create ``out`` if missing and make sure files can be written there (else ValueError)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_PROBE, dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"output folder {out} is not writable ({err.strerror or err})") from None


def _ours(path: Path) -> bool:
    return _OURS.fullmatch(path.name) is not None


def refuse_foreign(out: Path, overwrite: bool) -> None:
    """Refuse a folder without a manifest that holds files synth did not write (unless overwrite)."""
    if overwrite or (out / MANIFEST).is_file():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p))
    if foreign:
        raise ValueError(f"output folder {out} is not empty and holds no {MANIFEST} "
                         f"(e.g. {foreign[0]}); choose another folder or pass "
                         f"--overwrite (overwrite=True)")


def _read_manifest(mpath: Path, overwrite: bool) -> dict | None:
    try:
        old = json.loads(mpath.read_text())
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
        return old
    except ValueError as err:
        if not overwrite:
            raise ValueError(f"{mpath} is unreadable ({err}); pass --overwrite "
                             f"(overwrite=True) to start afresh") from None
        return None


def describe_mismatch(old: dict, new: dict) -> str:
    """The identity fields that differ, e.g. ``seed 0 (there) vs 1 (now)``."""
    diffs = []
    for key in IDENTITY:
        a, b = old.get(key), new.get(key)
        if a != b:
            if key.endswith("sha256"):
                a, b = str(a)[:12], str(b)[:12]
            diffs.append(f"{key} {a} (there) vs {b} (now)")
    return ", ".join(diffs)


def previous_run(out: Path, identity: dict, overwrite: bool) -> dict | None:
    """The manifest of a run to resume in ``out``, or None after clearing the way for a new one.

    Call it holding :func:`folder_lock`. Refuses (ValueError) a folder holding another
    synthesis, an unreadable manifest or other people's files, unless ``overwrite``;
    removes only names synth writes, and never the lock file.
    """
    mpath, old = out / MANIFEST, None
    if mpath.is_file():
        old = _read_manifest(mpath, overwrite)
    else:
        refuse_foreign(out, overwrite)  # our own leftovers (killed before a manifest) go
    if old is not None and any(old.get(k) != identity[k] for k in IDENTITY):
        if not overwrite:
            raise ValueError(f"{out} already holds a different synthesis "
                             f"({describe_mismatch(old, identity)}); pass --overwrite "
                             f"(overwrite=True) to replace it, or choose another folder")
        old = None
    if old is None:
        # fresh start: the manifest goes first, so a crash mid-cleanup leaves no stale claim
        for p in sorted(out.iterdir(), key=lambda p: p.name != MANIFEST):
            if _ours(p) and p.name != LOCK and not p.name.startswith(_PROBE):
                remove_path(p)
    for p in out.iterdir():
        if _STALE.fullmatch(p.name):
            remove_path(p)
    return old


def shard_plan(n: int, shard_size: int) -> list[dict]:
    """The shards of ``n`` faces, all pending: ``[{index, start, stop, state}, ...]``."""
    return [{"index": k, "start": s, "stop": min(s + shard_size, n), "state": "pending"}
            for k, s in enumerate(range(0, n, shard_size))]


def write_manifest(out: Path, manifest: dict) -> None:
    """Replace ``out/manifest.json`` atomically, so a reader never sees half a manifest."""
    from facelm.checkpoint import atomic_write  # torch-heavy: only when a run writes

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")

    atomic_write(out / MANIFEST, write)

"""Arrays and text written atomically, through the project's one writer (``checkpoint.atomic_write``).

Each helper hands ``atomic_write`` a function that writes the temporary file through an open
handle (``np.save`` given a *name* would append ``.npy`` to the temporary name), so a reader
never sees half a file and a killed run leaves no file under the final name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facelm.checkpoint import atomic_write


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` ``array`` to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], fsync: bool = False) -> Path:
    """``np.savez`` ``arrays`` to ``path`` atomically; ``fsync``: on disk before the rename
    (for files a resumed run trusts, such as shards)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    return atomic_write(path, write)


def stream_npy(path: str | Path, dtype: Any, shape: tuple[int, ...],
               fill: Callable[[np.ndarray], None]) -> Path:
    """Write a ``.npy`` file of ``shape`` too large for memory: ``fill(memmap)`` writes its rows."""
    def write(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out

    return atomic_write(path, write)


def save_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def save_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """``json.dumps(obj, **dumps)`` plus a newline, written atomically."""
    return save_text(path, json.dumps(obj, **dumps) + "\n")

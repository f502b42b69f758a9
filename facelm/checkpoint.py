"""Atomic files: safetensors weights with metadata, and torch training-state checkpoints.

Every writer goes through a temporary file in the destination folder and ``os.replace``,
so a reader (or a run killed mid-write) never sees half a file. Training states are read
back with ``torch.load(weights_only=True)``: only tensors and plain Python containers,
never arbitrary pickled objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "atomic_write",
    "save_weights",
    "load_weights",
    "save_state",
    "load_state",
    "config_hash",
    "state_digest",
]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it what a plain open() would (umask)
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


META_KEY = "facelm"


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` as safetensors, ``metadata`` as one sorted JSON entry.

    safetensors keeps metadata in a hash map whose order changes between processes, so one
    entry (not one per key) makes equal weights give equal bytes, and DVC's cache hold.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {META_KEY: json.dumps({str(k): v for k, v in metadata.items()}, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_weights`: ``(state_dict, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        raw = f.metadata() or {}
        # files written before META_KEY held one JSON string per key
        meta = json.loads(raw[META_KEY]) if META_KEY in raw else {k: json.loads(v) for k, v in raw.items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """``torch.save`` a training state (tensors and plain containers only), atomically."""
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> dict[str, Any] | None:
    """Load a state written by :func:`save_state`, or ``None`` when there is none.

    Uses ``weights_only=True``, so a file holding anything but tensors and plain
    containers raises instead of executing code.
    """
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location=map_location, weights_only=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable sha256 (hex) of a JSON-serialisable configuration (key order irrelevant)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def state_digest(*state_dicts: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and exact bytes of tensors: equal iff identical."""
    h = hashlib.sha256()
    for sd in state_dicts:
        for name in sorted(sd):
            t = sd[name].detach().to("cpu").contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

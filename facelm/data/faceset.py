"""On-disk face sets: the output of stage 01, whichever data set produced it.

A face set is a folder holding, for each split (``train``, ``heldout``):

- ``{split}_images.npy``    uint8 ``[N, S, S, 3]`` RGB,
- ``{split}_landmarks.npy`` float32 ``[N, P, 2]`` unit coordinates (P = 49, or 5 for CelebA),

and ``meta.json`` (data set, size, counts, provenance). Arrays are opened memory-mapped,
so stages stream through data sets larger than memory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "heldout")


@dataclass
class FaceSplit:
    """One split of a face set (arrays may be read-only memory maps)."""

    images: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def save_split(folder: str | Path, split: str, images: np.ndarray, landmarks: np.ndarray) -> None:
    """Write one split after checking shapes and dtypes (each file appears atomically)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (got {split!r})")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be uint8 [N, S, S, 3], got {images.dtype} {images.shape}")
    if landmarks.ndim != 3 or landmarks.shape[0] != len(images) or landmarks.shape[2] != 2:
        raise ValueError(f"landmarks must be [N, P, 2] with N = {len(images)}, got {landmarks.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(folder / f"{split}_images.npy", np.ascontiguousarray(images))
    _atomic_save(folder / f"{split}_landmarks.npy", np.ascontiguousarray(landmarks, dtype=np.float32))


def save_meta(folder: str | Path, meta: dict) -> None:
    path = Path(folder) / "meta.json"
    tmp = path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def load_split(folder: str | Path, split: str, mmap: bool = True) -> FaceSplit:
    """Open one split; a missing file names what stage 01 should have written."""
    folder = Path(folder)
    paths = [folder / f"{split}_images.npy", folder / f"{split}_landmarks.npy"]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"missing {p}: a face set folder holds {{train,heldout}}_images.npy and "
                "{train,heldout}_landmarks.npy (run stage 01_preprocess: `dvc repro 01_preprocess`)"
            )
    mode = "r" if mmap else None
    return FaceSplit(np.load(paths[0], mmap_mode=mode), np.load(paths[1], mmap_mode=mode))


def write_metrics(path: str | Path, metrics: dict) -> dict:
    """Write a flat metrics JSON (the DVC metrics file of a stage); values become plain floats/ints."""
    clean = {}
    for key, value in metrics.items():
        value = value.item() if hasattr(value, "item") else value
        clean[key] = round(value, 6) if isinstance(value, float) else value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2) + "\n")
    os.replace(tmp, path)
    return clean

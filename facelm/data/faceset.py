"""On-disk face sets: the output of stage 01, whichever data set produced it.

A face set is a folder holding, for each split (``train``, ``heldout``):

- ``{split}_images.npy``    uint8 ``[N, S, S, 3]`` RGB,
- ``{split}_landmarks.npy`` float32 ``[N, P, 2]`` unit coordinates (P = 49, or 5 for CelebA),

and ``meta.json`` (data set, size, counts, skipped and unused faces). Arrays are opened
memory-mapped, so stages stream through data sets larger than memory.

Faces cropped from photos (``dataset: celeba``) also have ``{split}_provenance.csv``, one
row per face in the split's order: ``row, file, x0, y0, side, annotator`` -- the source
image (relative to the CelebA image folder), the square crop box in that image's pixels
(``crop_square(photo, x0, y0, side, S)`` gives the face back) and who made its points
(``celeba5``: CelebA's own annotation, ``detector``: the stage-00 CNN, ``dlib``: dlib's
300-W predictor). Rendered faces need none: train face ``i`` is world face ``i`` and
held-out face ``j`` is world face ``n_train + j`` of ``meta.json``'s seed.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelm.data.files import save_json, save_npy, save_text

SPLITS = ("train", "heldout")
PROVENANCE_COLUMNS = ("row", "file", "x0", "y0", "side", "annotator")


@dataclass
class FaceSplit:
    """One split of a face set (arrays may be read-only memory maps)."""

    images: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


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
    save_npy(folder / f"{split}_images.npy", np.ascontiguousarray(images))
    save_npy(folder / f"{split}_landmarks.npy", np.ascontiguousarray(landmarks, dtype=np.float32))


def save_meta(folder: str | Path, meta: dict) -> None:
    """Write the face set's ``meta.json`` (sorted keys: equal content gives equal bytes)."""
    save_json(Path(folder) / "meta.json", meta, indent=2, sort_keys=True)


def load_meta(folder: str | Path) -> dict:
    """The face set's ``meta.json`` as a dict."""
    return json.loads((Path(folder) / "meta.json").read_text())


@dataclass
class Provenance:
    """Where each face of a split came from (rows in the split's order)."""

    files: list[str]          # source image, relative to the data set's image folder
    crop_boxes: np.ndarray    # int32 [N, 3]: x0, y0, side of the square crop in source pixels
    annotators: list[str]     # who made the face's points: celeba5, detector or dlib

    def __len__(self) -> int:
        return len(self.files)


def save_provenance(folder: str | Path, split: str, files: list[str], crop_boxes: np.ndarray,
                    annotators: list[str]) -> None:
    """Write ``{split}_provenance.csv`` (columns :data:`PROVENANCE_COLUMNS`), atomically."""
    boxes = np.asarray(crop_boxes).reshape(-1, 3)
    if not len(files) == len(boxes) == len(annotators):
        raise ValueError(f"provenance columns differ in length: {len(files)} files, {len(boxes)} boxes, "
                         f"{len(annotators)} annotators")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PROVENANCE_COLUMNS)
    for row, (name, (x0, y0, side), who) in enumerate(zip(files, boxes.tolist(), annotators)):
        writer.writerow((row, name, x0, y0, side, who))
    save_text(Path(folder) / f"{split}_provenance.csv", buf.getvalue())


def load_provenance(folder: str | Path, split: str) -> Provenance:
    """Read ``{split}_provenance.csv``; a missing file says which face sets have one."""
    path = Path(folder) / f"{split}_provenance.csv"
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: face sets cropped from photos (dataset: celeba) list "
                                "each face's source there; rendered faces are world faces by index")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    boxes = np.array([[int(r["x0"]), int(r["y0"]), int(r["side"])] for r in rows], dtype=np.int32).reshape(-1, 3)
    return Provenance([r["file"] for r in rows], boxes, [r["annotator"] for r in rows])


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

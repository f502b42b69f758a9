"""Stage 01 for ``dataset: celeba``: Haar crops of CelebA on disk, split and annotated.

The crops and their shards live in ``data/faces/celeba_work`` (kept between runs, so a
re-run after an interruption continues from the finished shards); the face set itself is
written in the same format as the rendered world's, so stages 02+ do not care which they get.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facelm.config import Params
from facelm.data.faceset import save_meta
from facelm.paths import project_root

HELDOUT_PARTITION = {"valid": 1, "test": 2}


def _write_rows(path: Path, source: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> None:
    """Copy ``source[rows]`` into a new .npy file chunk by chunk (never all in memory), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=(len(rows), *source.shape[1:]))
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = source[rows[s:s + chunk]]
    out.flush()
    del out
    os.replace(tmp, path)


def annotate_with_detector(images: np.ndarray, detector_path: Path, batch_size: int = 512) -> np.ndarray:
    """49 landmarks for every crop from the stage-00 detector (the paper's 300-W detector's role)."""
    from facelm.models.detector import load_detector, predict_landmarks

    if not detector_path.is_file():
        raise FileNotFoundError(f"celeba.landmarks is 'detector' but {detector_path} is missing: run `dvc repro 00_detector`")
    model = load_detector(detector_path)
    if model.size != images.shape[1]:
        raise ValueError(f"the detector works at {model.size} px but the crops are {images.shape[1]} px")
    return predict_landmarks(model, images, batch_size=batch_size)


def prepare_celeba(params: Params, out_dir: str | Path, detector_path: Path | None = None) -> dict:
    """Crop CelebA (``params.celeba``) into the face set at ``out_dir``; returns a summary dict.

    With ``celeba.landmarks: detector`` every crop is annotated with 49 points by the stage-00
    detector (``detector_path``, default ``data/detector/detector.safetensors``).
    """
    from facelm.data.crops import preprocess_celeba

    c, out_dir = params.celeba, Path(out_dir)
    root = Path(c.root) if Path(c.root).is_absolute() else project_root() / c.root
    detector_path = detector_path or project_root() / "data" / "detector" / "detector.safetensors"
    if c.landmarks == "detector" and not detector_path.is_file():  # before hours of cropping
        raise FileNotFoundError(f"celeba.landmarks is 'detector' but {detector_path} is missing: run `dvc repro 00_detector`")
    crops = preprocess_celeba(
        root, out_dir / "celeba_work", layout=c.layout, size=params.image_size,
        scale_factor=c.scale_factor, min_neighbors=c.min_neighbors, min_size=c.min_size,
        margin=c.margin, shard_size=c.shard_size, n_workers=c.n_workers, limit=c.limit,
    )
    landmarks = crops.landmarks
    if c.landmarks == "detector":
        landmarks = annotate_with_detector(crops.images, detector_path)
    heldout = crops.partition == HELDOUT_PARTITION[c.heldout]
    train = crops.partition == 0
    for split, rows in (("train", np.flatnonzero(train)), ("heldout", np.flatnonzero(heldout))):
        if len(rows) == 0:
            raise ValueError(f"no {split} faces after cropping {root} (partition file and kept images disagree?)")
        _write_rows(out_dir / f"{split}_images.npy", crops.images, rows)
        _write_rows(out_dir / f"{split}_landmarks.npy", np.asarray(landmarks, dtype=np.float32), rows)
    summary = {"dataset": "celeba", "layout": c.layout, "image_size": params.image_size,
               "n_points": int(landmarks.shape[1]), "landmarks": c.landmarks,
               "n_images": int(crops.n_total), "n_train": int(train.sum()), "n_heldout": int(heldout.sum()),
               "n_skipped": int(sum(crops.skipped.values())), "skipped_by_reason": crops.skipped,
               "skipped_files": crops.skip_list[:1000]}
    save_meta(out_dir, summary)
    return summary

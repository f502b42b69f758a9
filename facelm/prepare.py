"""Stage 01: make the face set (images + 49 landmarks, train / held-out) from the chosen data set."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import Params
from .faceset import save_meta, save_split


def prepare_world(params: Params, out_dir: str | Path, chunk: int = 2000) -> dict:
    """Render the embedded face world: ``world.n_train`` training and ``world.n_heldout`` held-out faces.

    Face ``i`` depends only on (seed, i); held-out faces are indices after the training
    ones, so the two splits never share a face and growing one split leaves the other as is.
    """
    from .world import render_faces

    w, size, seed = params.world, params.image_size, params.seed
    pose = dict(yaw_max=w.yaw_max, pitch_max=w.pitch_max, roll_max=w.roll_max)
    start_time = time.time()
    for split, start, n in (("train", 0, w.n_train), ("heldout", w.n_train, w.n_heldout)):
        parts = [render_faces(min(chunk, n - s), size, seed, start + s, **pose) for s in range(0, n, chunk)]
        save_split(out_dir, split, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    seconds = time.time() - start_time
    summary = {"dataset": "world", "image_size": size, "n_points": 49, "seed": seed,
               "n_train": w.n_train, "n_heldout": w.n_heldout, "n_skipped": 0,
               "render_seconds": round(seconds, 2)}
    save_meta(out_dir, summary)
    return summary


def prepare_faces(params: Params, out_dir: str | Path) -> dict:
    """Build the face set for ``params.dataset`` into ``out_dir``; returns a summary dict."""
    if params.dataset == "world":
        return prepare_world(params, out_dir)
    from .prepare_celeba import prepare_celeba

    return prepare_celeba(params, out_dir)

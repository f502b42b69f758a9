"""Stage 01: make the face set (images + 49 landmarks, train / held-out) from the chosen data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facelm.config import Params
from facelm.data.faceset import save_meta, save_split


def prepare_world(params: Params, out_dir: str | Path, chunk: int = 2000) -> dict:
    """Render the embedded face world: ``world.n_train`` training and ``world.n_heldout`` held-out faces.

    Face ``i`` depends only on (seed, i); held-out faces are indices after the training
    ones, so the two splits never share a face and growing one split leaves the other as is.
    """
    from facelm.data.world import render_faces

    w, size, seed = params.world, params.image_size, params.seed
    pose = dict(yaw_max=w.yaw_max, pitch_max=w.pitch_max, roll_max=w.roll_max)
    for split, start, n in (("train", 0, w.n_train), ("heldout", w.n_train, w.n_heldout)):
        parts = [render_faces(min(chunk, n - s), size, seed, start + s, **pose) for s in range(0, n, chunk)]
        save_split(out_dir, split, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    # no timings in the metadata: the folder must hash the same whenever the faces are the same,
    # or DVC would re-run every later stage after an identical re-render
    summary = {"dataset": "world", "image_size": size, "n_points": 49, "seed": seed,
               "n_train": w.n_train, "n_heldout": w.n_heldout, "n_skipped": 0}
    save_meta(out_dir, summary)
    return summary


def prepare_faces(params: Params, out_dir: str | Path) -> dict:
    """Build the face set for ``params.dataset`` into ``out_dir``; returns a summary dict."""
    if params.dataset == "world":
        import shutil

        # the folder persists between runs (CelebA shards resume); drop what a CelebA run left
        shutil.rmtree(Path(out_dir) / "celeba_work", ignore_errors=True)
        return prepare_world(params, out_dir)
    from facelm.data.prepare_celeba import prepare_celeba

    return prepare_celeba(params, out_dir)


# The detector learns from rendered faces far from stage 01's index range, so the judge
# never saw the faces the GAN learned from.
DETECTOR_WORLD_START = 1_000_000


def detector_faces(params: Params) -> dict:
    """Ground-truth annotated faces for the detector: ``{train: (x, y), val: (x, y), source: str}``."""
    d, size = params.detector, params.image_size
    if d.data == "world":
        from facelm.data.world import render_faces

        w = params.world
        pose = dict(yaw_max=w.yaw_max, pitch_max=w.pitch_max, roll_max=w.roll_max)
        train = render_faces(d.n_train, size, params.seed, DETECTOR_WORLD_START, **pose)
        val = render_faces(d.n_val, size, params.seed, DETECTOR_WORLD_START + d.n_train, **pose)
        return {"train": train, "val": val, "source": f"rendered world, faces {DETECTOR_WORLD_START}+"}
    from facelm.paths import project_root
    from facelm.data.pts import load_pts_folder

    root = Path(d.pts_root) if Path(d.pts_root).is_absolute() else project_root() / d.pts_root
    images, points, report = load_pts_folder(root, size)
    n_val = min(d.n_val, len(images) // 5)
    order = np.random.default_rng(params.seed).permutation(len(images))
    tr, va = order[n_val:][:d.n_train], order[:n_val]
    return {"train": (images[tr], points[tr]), "val": (images[va], points[va]),
            "source": f"{root}: {report['used']} faces, {len(report['skipped'])} skipped"}

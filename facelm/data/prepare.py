"""Stage 01's entry: the face set (images + landmarks, train / held-out) for ``params.dataset``;
and stage 00's annotated faces for the landmark detector.

Stage 01 by file, from this entry down:

- ``prepare.py`` (here): which data set; the rendered world is written here directly;
- ``world/``: the rendered face world (exact 49 landmarks);
- ``prepare_celeba.py``: CelebA -> annotated, split face set with provenance, using
  ``celeba_crops.py`` (the whole tree, sharded, on all cores, resumable), ``face_crop.py``
  (one photo -> one crop: face boxes, choice, square crop, landmark checks), ``celeba.py``
  (reading CelebA's list files) and ``annotators.py`` (who puts the points on a crop);
- ``faceset.py``: the face-set folder every later stage reads.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from facelm.config import Params
from facelm.data.faceset import save_meta, save_split
from facelm.data.world import render_faces

RENDER_CHUNK = 2000  # faces rendered per call (bounds memory, changes no face)
# The detector learns from rendered faces far from stage 01's index range, so the judge
# never saw the faces the GAN learned from.
DETECTOR_WORLD_START = 1_000_000


def prepare_world(params: Params, out_dir: str | Path) -> dict:
    """Render the embedded face world: ``world.n_train`` training and ``world.n_heldout`` held-out faces.

    Face ``i`` depends only on (seed, i); held-out faces are indices after the training
    ones, so the two splits never share a face and growing one split leaves the other as is.
    """
    w, size, seed = params.world, params.image_size, params.seed
    for split, start, n in (("train", 0, w.n_train), ("heldout", w.n_train, w.n_heldout)):
        parts = [render_faces(min(RENDER_CHUNK, n - s), size, seed, start + s, world=w)
                 for s in range(0, n, RENDER_CHUNK)]
        save_split(out_dir, split, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    # no timings in the metadata: the folder must hash the same whenever the faces are the same,
    # or DVC would re-run every later stage after an identical re-render
    summary = {"dataset": "world", "image_size": size, "n_points": 49, "seed": seed,
               "n_train": w.n_train, "n_heldout": w.n_heldout, "n_skipped": 0}
    save_meta(out_dir, summary)
    return summary


def check_sources(params: Params, project: Path | None = None) -> None:
    """Stage 01's inputs are there (cheap: nothing is read). The stage runner calls this
    before starting the notebook, so a missing input stops it with one line.

    For ``dataset: celeba``: the CelebA tree's image folder, landmarks and partition files
    (FileNotFoundError naming the path and the expected layout) and the annotator's model
    (the stage-00 detector file, or dlib's model). Nothing to check for the rendered world.
    """
    if params.dataset != "celeba":
        return
    from facelm.data.annotators import make_annotator
    from facelm.data.celeba import check_tree
    from facelm.data.prepare_celeba import celeba_root

    check_tree(celeba_root(params, project), params.celeba.layout)
    make_annotator(params, project=(lambda: project) if project is not None else None)


def prepare_faces(params: Params, out_dir: str | Path) -> dict:
    """Build the face set for ``params.dataset`` into ``out_dir``; returns a summary dict."""
    if params.dataset == "world":
        # the folder persists between runs (CelebA shards resume); drop what a CelebA run left
        shutil.rmtree(Path(out_dir) / "celeba_work", ignore_errors=True)
        for stale in Path(out_dir).glob("*_provenance.csv"):
            stale.unlink()
        return prepare_world(params, out_dir)
    from facelm.data.prepare_celeba import prepare_celeba

    return prepare_celeba(params, out_dir)


def detector_faces(params: Params) -> dict:
    """Ground-truth annotated faces for the detector: ``{train: (x, y), val: (x, y), source: str}``."""
    d, size = params.detector, params.image_size
    if d.data == "world":
        train = render_faces(d.n_train, size, params.seed, DETECTOR_WORLD_START, world=params.world)
        val = render_faces(d.n_val, size, params.seed, DETECTOR_WORLD_START + d.n_train, world=params.world)
        return {"train": train, "val": val, "source": f"rendered world, faces {DETECTOR_WORLD_START}+"}
    from facelm.data.pts import load_pts_folder
    from facelm.paths import project_root

    root = Path(d.pts_root) if Path(d.pts_root).is_absolute() else project_root() / d.pts_root
    images, points, report = load_pts_folder(root, size)
    n_val = min(d.n_val, len(images) // 5)
    order = np.random.default_rng(params.seed).permutation(len(images))
    tr, va = order[n_val:][:d.n_train], order[:n_val]
    return {"train": (images[tr], points[tr]), "val": (images[va], points[va]),
            "source": f"{root}: {report['used']} faces, {len(report['skipped'])} skipped"}

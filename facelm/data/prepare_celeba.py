"""Stage 01 for ``dataset: celeba``: CelebA on disk -> crops -> annotated, split face set.

1. :func:`facelm.data.celeba_crops.preprocess_celeba` crops every photo (Haar or dlib face
   boxes, landmarks checked to lie in the crop), in shards kept in
   ``data/faces/celeba_work`` between runs, so a re-run after an interruption continues;
2. the annotator ``celeba.landmarks`` names puts the points on every crop
   (:mod:`facelm.data.annotators`); crops it cannot place are skipped and counted;
3. CelebA's partition splits the crops: train (0) and held-out (``celeba.heldout``: valid 1
   or test 2); the faces of the other partition are not used, and ``meta.json`` lists them;
4. the face set is written in the rendered world's format (stages 02+ do not care which
   they get) plus ``{split}_provenance.csv``: each face's photo, crop box and annotator.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facelm.config import Params
from facelm.data.annotators import ANNOTATOR_SKIPS, make_annotator, placed
from facelm.data.celeba import PARTITIONS
from facelm.data.faceset import save_meta, save_provenance
from facelm.data.files import stream_npy

HELDOUT_PARTITION = {"valid": 1, "test": 2}
MAX_LISTED_SKIPS = 1000  # meta.json lists the first skipped files; report.json in celeba_work has all


def celeba_root(params: Params, project: Path | None = None) -> Path:
    """``celeba.root`` as a path: absolute as given, else under the project root (looked up
    only then, so an absolute root works outside a project folder)."""
    root = Path(params.celeba.root)
    if root.is_absolute():
        return root
    if project is None:
        from facelm.paths import project_root

        project = project_root()
    return project / root


def _write_rows(path: Path, source: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> None:
    """Copy ``source[rows]`` into a new .npy file chunk by chunk (never all in memory), atomically."""
    def fill(out: np.ndarray) -> None:
        for s in range(0, len(rows), chunk):
            out[s:s + chunk] = source[rows[s:s + chunk]]

    stream_npy(path, source.dtype, (len(rows), *source.shape[1:]), fill)


def prepare_celeba(params: Params, out_dir: str | Path, detector_path: Path | None = None) -> dict:
    """Crop and annotate CelebA (``params.celeba``) into the face set at ``out_dir``; returns
    the summary written to ``meta.json``.

    ``detector_path``: the stage-00 detector for ``celeba.landmarks: detector`` (default
    ``data/detector/detector.safetensors`` under the project root).
    """
    from facelm.data.celeba_crops import preprocess_celeba

    c, out_dir = params.celeba, Path(out_dir)
    root = celeba_root(params)
    annotate = make_annotator(params, detector_path)  # a missing model stops us before any cropping
    crops = preprocess_celeba(root, out_dir / "celeba_work", c, params.image_size)
    landmarks = np.asarray(annotate(crops.images, crops.landmarks), dtype=np.float32)
    ok, reasons = placed(landmarks)
    used = {"train": 0, "heldout": HELDOUT_PARTITION[c.heldout]}
    for split, code in used.items():
        rows = np.flatnonzero(ok & (crops.partition == code))
        if len(rows) == 0:
            raise ValueError(f"no {split} faces after cropping {root} (partition file and kept images disagree?)")
        _write_rows(out_dir / f"{split}_images.npy", crops.images, rows)
        _write_rows(out_dir / f"{split}_landmarks.npy", landmarks, rows)
        save_provenance(out_dir, split, [crops.files[r] for r in rows], crops.crop_boxes[rows],
                        [c.landmarks] * len(rows))
    unused_code = next(k for k in HELDOUT_PARTITION.values() if k != used["heldout"])
    unused = np.flatnonzero(ok & (crops.partition == unused_code))
    skips = crops.skip_list + [{"file": crops.files[i], "reason": r, "detail": ""}
                               for i, r in enumerate(reasons) if r is not None]
    by_reason = dict(crops.skipped, **{r: reasons.count(r) for r in ANNOTATOR_SKIPS})
    summary = {"dataset": "celeba", "layout": c.layout, "image_size": params.image_size,
               "n_points": int(landmarks.shape[1]), "landmarks": c.landmarks, "face_detector": c.face_detector,
               "n_images": int(crops.n_total), "n_train": int((ok & (crops.partition == 0)).sum()),
               "n_heldout": int((ok & (crops.partition == used["heldout"])).sum()),
               "n_skipped": len(skips), "skipped_by_reason": by_reason, "skipped_files": skips[:MAX_LISTED_SKIPS],
               "unused_split": PARTITIONS[unused_code], "n_unused": int(len(unused)),
               "unused_files": [crops.files[i] for i in unused]}
    save_meta(out_dir, summary)
    return summary

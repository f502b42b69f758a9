"""Annotated faces from a folder of images and 300-W ``.pts`` files (e.g. 300-W, HELEN, LFPW).

Each ``name.png|jpg`` with a ``name.pts`` beside it (68 or 49 points) becomes a square crop
around its landmarks, framed like a face-detector crop, resized to the working size, with
its landmarks in the crop's unit coordinates and the 49-point layout.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facelm.data.face_crop import crop_square, read_image_file, to_crop_units
from facelm.landmarks import read_pts, to_49

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUT = "a folder (searched recursively) of images (.png/.jpg) each with a 300-W .pts file of the same name"
CROP_MARGIN = 0.25  # of the landmarks' box side, on each side: a face-detector-like frame


def crop_around_landmarks(points_px: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int]:
    """A square ``(x0, y0, side)`` around the landmarks' bounding box, enlarged by ``margin`` a side.

    The 49 points span brows to lower lip; the box is shifted down a little so the chin is in
    frame, as in a Haar crop.
    """
    lo, hi = points_px.min(axis=0), points_px.max(axis=0)
    side = float(max(hi - lo)) * (1.0 + 2.0 * margin)
    cx, cy = (lo + hi) / 2.0
    cy += 0.1 * side
    return int(round(cx - side / 2)), int(round(cy - side / 2)), max(1, int(round(side)))


def load_pts_folder(root: str | Path, size: int, limit: int | None = None):
    """Read every annotated image under ``root`` -> (images uint8 [N,S,S,3], landmarks [N,49,2], report).

    Unreadable images and unusable .pts files are skipped and listed in ``report["skipped"]``
    (``file`` relative to ``root``, ``reason``), and so is every ``.pts`` file without an image
    of the same name (reason ``no image of the same name``). ``limit``: only the first ``limit``
    images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}: expected {LAYOUT}")
    images_found = {p.with_suffix("") for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    orphans = sorted(p for p in root.rglob("*.pts") if p.with_suffix("") not in images_found)
    pairs = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(".pts").is_file())
    if not pairs:
        extra = f" ({len(orphans)} .pts files without an image of the same name)" if orphans else ""
        raise FileNotFoundError(f"no annotated images in {root}{extra}: expected {LAYOUT}")
    images, points = [], []
    skipped = [{"file": str(p.relative_to(root)), "reason": "no image of the same name"} for p in orphans]
    for path in pairs[:limit]:
        bgr, reason = read_image_file(path)
        try:
            pts = read_pts(path.with_suffix(".pts"))
            pts = to_49(pts) if len(pts) == 68 else pts
            if len(pts) != 49:
                reason = reason or f"{len(pts)} points (need 68 or 49)"
        except ValueError as err:
            reason = reason or f"bad .pts: {err}"
        if reason:
            skipped.append({"file": str(path.relative_to(root)), "reason": reason})
            continue
        x0, y0, side = crop_around_landmarks(pts)
        images.append(crop_square(bgr, x0, y0, side, size)[..., ::-1])
        points.append(to_crop_units(pts, x0, y0, side))
    if not images:
        raise ValueError(f"none of the {len(pairs)} annotated images in {root} could be used")
    report = {"found": len(pairs[:limit]), "used": len(images), "skipped": skipped}
    return np.stack(images), np.stack(points).astype(np.float32), report

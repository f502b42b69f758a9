"""Who puts the landmarks on a CelebA crop (``celeba.landmarks``), and which crops they place.

- ``celeba5``: CelebA's own 5 points, mapped into the crop (no model);
- ``detector``: the stage-00 49-point CNN (``data/detector/detector.safetensors``), the role
  the paper's 300-W-trained detector played;
- ``dlib``: dlib's 300-W-trained 68-point predictor reduced to 49 points
  (:mod:`facelm.models.dlib_landmarks`), the paper's pipeline without 300-W on disk.

An annotator maps the crops ``uint8 [N, S, S, 3]`` to points ``float32 [N, P, 2]`` in crop
units, with NaN rows for faces it could not place. :func:`placed` then keeps a crop only if
all its points are finite and inside it (``face_crop.IN_CROP_TOLERANCE``); the others are
skipped and counted as ``not_annotated`` or ``annotation_outside``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from facelm.config import Params
from facelm.data.face_crop import points_in_crop

ANNOTATOR_SKIPS = ("not_annotated", "annotation_outside")
DETECTOR_FILE = Path("data") / "detector" / "detector.safetensors"  # stage 00's output, from the root
Annotator = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (crops, celeba5 points) -> points


def annotate_with_detector(images: np.ndarray, detector_path: Path, batch_size: int = 512) -> np.ndarray:
    """49 landmarks for every crop from the stage-00 detector (the paper's 300-W detector's role)."""
    from facelm.models.detector import load_detector, predict_landmarks

    model = load_detector(detector_path)
    if model.size != images.shape[1]:
        raise ValueError(f"the detector works at {model.size} px but the crops are {images.shape[1]} px")
    return predict_landmarks(model, images, batch_size=batch_size)


def annotate_with_dlib(images: np.ndarray, params: Params) -> np.ndarray:
    """dlib's 49 points on every crop, NaN where its HOG detector finds no face in the crop.

    The hook of issue 11: :func:`facelm.models.dlib_landmarks.annotate` detects the face in
    each crop (upscaled to ``evaluation.dlib_size``, the same protocol as the judge of stage
    06) on ``celeba.n_workers`` processes and returns unit coordinates of the crop.
    """
    from facelm.models.dlib_landmarks import annotate

    points, _found = annotate(np.asarray(images), "detect", size=params.evaluation.dlib_size,
                              n_workers=params.celeba.n_workers, progress=False)
    return points


def make_annotator(params: Params, detector_path: Path | None = None,
                   project: Callable[[], Path] | None = None) -> Annotator:
    """The annotator ``params.celeba.landmarks`` names, checked before any cropping.

    ``detector_path``: the stage-00 weights (default :data:`DETECTOR_FILE` under
    ``project()``, the project root, asked only for ``detector``); a missing file raises
    FileNotFoundError in one line, before hours of cropping.
    """
    kind = params.celeba.landmarks
    if kind == "celeba5":
        return lambda images, points5: np.asarray(points5, dtype=np.float32)
    if kind == "detector":
        if detector_path is None:
            from facelm.paths import project_root

            detector_path = (project or project_root)() / DETECTOR_FILE
        if not Path(detector_path).is_file():
            raise FileNotFoundError(f"celeba.landmarks is 'detector' but {detector_path} is missing: "
                                    "run `dvc repro 00_detector`")
        return lambda images, points5: annotate_with_detector(images, Path(detector_path))
    if kind == "dlib":
        from facelm.models.dlib_landmarks import model_path

        model_path()  # a missing model file says how to install it, before any cropping
        return lambda images, points5: annotate_with_dlib(images, params)
    raise ValueError(f"celeba.landmarks must be 'celeba5', 'detector' or 'dlib' (got {kind!r})")


def placed(points: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """``(ok bool [N], reason per row)``: rows whose points are all finite and in the crop are
    ok (reason None); else ``not_annotated`` (the annotator gave NaN) or ``annotation_outside``."""
    points = np.asarray(points)
    ok = points_in_crop(points)
    finite = np.isfinite(points).all(axis=(1, 2))
    reasons = [None if good else ("annotation_outside" if fin else "not_annotated")
               for good, fin in zip(ok.tolist(), finite.tolist())]
    return ok, reasons

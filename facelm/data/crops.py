"""CelebA -> square face crops with their landmarks (paper IV): Haar cascade, crop, resize.

One image goes through :func:`process_image`:

1. read the file; a missing, empty/truncated (``corrupt``) or undecodable (``unreadable``)
   file is skipped with its reason;
2. OpenCV's frontal-face Haar cascade on the histogram-equalised grayscale image
   (``scale_factor``, ``min_neighbors``, ``min_size``; the authors used
   ``detectMultiScale(gray, 5, 5)``); no detection -> skipped as ``no_face``;
3. among several detections, the one whose box holds both annotated eyes (the largest of
   those), else the largest (``choose="first"`` keeps the authors' first detection);
4. a square box (the detection's centre, side ``max(w, h) * (1 + 2 * margin)``, rounded to
   whole pixels) is cut out; parts outside the image are padded (``pad_mode``: ``replicate``
   by default, so no hard black bars that a GAN would learn as content and no mirrored
   ghost features that ``reflect`` makes; ``constant`` pads with black);
5. the crop is resized to ``size`` (area averaging down, bilinear up) and the landmarks are
   mapped exactly: ``u = (x - x0) / side`` in continuous pixel coordinates (the image spans
   ``[0, W]``, pixel ``i`` has its centre at ``i + 0.5``), which is facelm's unit convention.
   OpenCV's resize uses the same pixel-centre convention, so the mapping holds at any size.
   CelebA's integer landmark positions are read as 0-based pixel indices (centre = +0.5).

:func:`preprocess_celeba` runs this over a CelebA tree on all cores, writes shards of
``shard_size`` images atomically (one ``.npz`` each: temp file then ``os.replace``), reuses
finished shards after a kill (checked: same settings, same image list, readable with
intact zip CRCs), and merges them into the stage output (see :class:`PreprocessResult`).
Workers are forked (spawned where fork does not exist; scripts then need the usual
``if __name__ == "__main__":`` guard); kept images are in CelebA's order whatever the number
of workers, so one worker and many give identical arrays.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facelm.data.celeba import CelebA

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CELEBA_PIXEL_OFFSET = 0.5  # CelebA integer positions name pixels; their centres are at i + 0.5
PAD_MODES = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT,
             "reflect": cv2.BORDER_REFLECT_101}
CHOICES = ("eyes", "largest", "first")
SKIP_REASONS = ("missing", "corrupt", "unreadable", "no_face", "error")
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- one image
def load_cascade(path: str | Path | None = None) -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade (or the cascade XML at ``path``)."""
    path = str(path) if path is not None else os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"could not load a Haar cascade from {path} "
                                "(needs opencv-python(-headless) < 5, which ships cv2.data.haarcascades)")
    return cascade


def detect_faces(image_bgr: np.ndarray, cascade: cv2.CascadeClassifier, *, scale_factor: float = 5.0,
                 min_neighbors: int = 5, min_size: int = 0) -> np.ndarray:
    """Face boxes ``int32 [K, 4]`` (x, y, w, h) found on the equalised grayscale image."""
    gray = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    gray = cv2.equalizeHist(gray)
    boxes = cascade.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                     minSize=(min_size, min_size))
    return np.asarray(boxes, dtype=np.int32).reshape(-1, 4)


def boxes_contain(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``bool [K]``: box k (x, y, w, h; continuous extent [x, x + w]) holds every point ``[P, 2]``."""
    b = np.asarray(boxes, dtype=np.float64)[:, None, :]
    p = np.asarray(points, dtype=np.float64)[None]
    inside = ((p[..., 0] >= b[..., 0]) & (p[..., 0] <= b[..., 0] + b[..., 2])
              & (p[..., 1] >= b[..., 1]) & (p[..., 1] <= b[..., 1] + b[..., 3]))
    return inside.all(axis=1)


def choose_face(boxes: np.ndarray, eyes: np.ndarray | None = None, choose: str = "eyes") -> int | None:
    """Index of the face to keep among ``boxes`` (None when there are none).

    ``eyes``: the two annotated eye centres ``[2, 2]`` in continuous pixel coordinates.
    ``"eyes"``: the largest box holding both eyes, else the largest box; ``"largest"``;
    ``"first"`` (the authors' choice: OpenCV's first detection).
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
        if ok.any():
            return int(np.flatnonzero(ok)[np.argmax(area[ok])])
    return int(np.argmax(area))


def square_box(box: np.ndarray, margin: float = 0.0) -> tuple[int, int, int]:
    """Whole-pixel square ``(x0, y0, side)`` centred on ``box`` (x, y, w, h), enlarged by
    ``margin`` times its side on each side."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    x0 = int(round(x + w / 2.0 - side / 2.0))
    y0 = int(round(y + h / 2.0 - side / 2.0))
    return x0, y0, side


def crop_square(image: np.ndarray, x0: int, y0: int, side: int, size: int,
                pad_mode: str = "replicate") -> np.ndarray:
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


def process_image(image_bgr: np.ndarray, points_px: np.ndarray, cascade: cv2.CascadeClassifier, *,
                  size: int = 128, scale_factor: float = 5.0, min_neighbors: int = 5, min_size: int = 0,
                  margin: float = 0.0, pad_mode: str = "replicate", choose: str = "eyes",
                  eye_index: tuple[int, int] = (0, 1)) -> Crop | None:
    """Detect, choose, crop and resize one BGR image; map ``points_px`` (continuous pixel
    coordinates ``[P, 2]``; ``eye_index`` names the two eye centres) into the crop.
    None when no face is found."""
    boxes = detect_faces(image_bgr, cascade, scale_factor=scale_factor, min_neighbors=min_neighbors,
                         min_size=min_size)
    points_px = np.asarray(points_px, dtype=np.float64)
    eyes = points_px[list(eye_index)]
    k = choose_face(boxes, eyes, choose)
    if k is None:
        return None
    x0, y0, side = square_box(boxes[k], margin)
    crop = crop_square(image_bgr, x0, y0, side, size, pad_mode)
    return Crop(image=cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), points=to_crop_units(points_px, x0, y0, side),
                crop_box=(x0, y0, side), face_box=boxes[k],
                eyes_in_box=bool(boxes_contain(boxes[k:k + 1], eyes)[0]))


# ----------------------------------------------------------------- workers (per process)
_WORKER: dict = {}


def _init_worker(settings: dict, single_thread: bool = False) -> None:
    if single_thread:  # a fresh (spawned) process: one image per process, no OpenCV threads
        cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER.update(settings=settings, cascade=load_cascade())


def _work(task: tuple[int, str, np.ndarray]):
    """(index, status, payload): status "ok" with a Crop, or a skip reason with a detail."""
    i, path, points = task
    try:
        image, reason = read_image_file(path)
        if image is None:
            return i, reason, ""
        crop = process_image(image, points, _WORKER["cascade"], **_WORKER["settings"])
        return (i, "ok", crop) if crop is not None else (i, "no_face", "")
    except Exception as exc:  # never let one odd image stop 200k: record it instead
        return i, "error", f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------ shards
def _shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / f"shard_{k:05d}.npz"


def _write_shard(path: Path, results: list, files: list[str], config_json: str, size: int, n_points: int) -> None:
    ok = [(i, c) for i, s, c in results if s == "ok"]
    skips = [(i, s, c) for i, s, c in results if s != "ok"]
    arrays = dict(
        config=np.array(config_json),
        all_files=np.array(files, dtype=str),
        index=np.array([i for i, _ in ok], dtype=np.int64),
        images=np.stack([c.image for _, c in ok]) if ok else np.zeros((0, size, size, 3), np.uint8),
        landmarks=np.stack([c.points for _, c in ok]).astype(np.float32) if ok
        else np.zeros((0, n_points, 2), np.float32),
        crop_boxes=np.array([c.crop_box for _, c in ok], dtype=np.int32).reshape(-1, 3),
        face_boxes=np.array([c.face_box for _, c in ok], dtype=np.int32).reshape(-1, 4),
        eyes_in_box=np.array([c.eyes_in_box for _, c in ok], dtype=bool),
        skip_index=np.array([i for i, _, _ in skips], dtype=np.int64),
        skip_reason=np.array([s for _, s, _ in skips], dtype=str).reshape(-1),
        skip_detail=np.array([d for _, _, d in skips], dtype=str).reshape(-1),
    )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_shard(path: Path, files: list[str], config_json: str) -> dict | None:
    """The shard's arrays if it is complete and was made with these settings for these files."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}  # reading every member checks its zip CRC
    except Exception:
        return None
    try:
        if str(data["config"]) != config_json or data["all_files"].tolist() != files:
            return None
        n = len(data["index"])
        if not (len(data["images"]) == len(data["landmarks"]) == len(data["crop_boxes"]) == n):
            return None
        if n + len(data["skip_index"]) != len(files):
            return None
    except KeyError:
        return None
    return data


# ------------------------------------------------------------------------------ result
@dataclass
class PreprocessResult:
    """The stage output (a folder) and its content.

    Files in ``out_dir``: ``images.npy`` uint8 ``[N, S, S, 3]`` RGB; ``landmarks.npy`` float32
    ``[N, 5, 2]`` unit coordinates of each crop (CelebA's 5 points: lefteye, righteye, nose,
    leftmouth, rightmouth); ``partition.npy`` int8 ``[N]`` (CelebA's 0 train / 1 valid / 2
    test); ``crop_boxes.npy`` int32 ``[N, 3]`` (x0, y0, side of the crop in source pixels);
    ``face_boxes.npy`` int32 ``[N, 4]``; ``eyes_in_box.npy`` bool ``[N]``; ``files.txt``
    (image names, one per line); ``report.json`` (settings, counts, skipped counts by reason
    and the list of skipped images with their reasons), written last.
    """

    out_dir: Path
    images: np.ndarray
    landmarks: np.ndarray
    files: list[str]
    partition: np.ndarray
    crop_boxes: np.ndarray
    face_boxes: np.ndarray
    eyes_in_box: np.ndarray
    n_total: int
    skipped: dict[str, int]
    skip_list: list[dict] = field(repr=False)
    settings: dict = field(repr=False)

    def __len__(self) -> int:
        return len(self.files)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_preprocessed(out_dir: str | Path, mmap: bool = True) -> PreprocessResult:
    """Open what :func:`preprocess_celeba` wrote (images memory-mapped by default)."""
    out = Path(out_dir)
    report_path = out / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"missing {report_path}: not a finished preprocess_celeba output folder")
    report = json.loads(report_path.read_text())
    text = (out / "files.txt").read_text()
    return PreprocessResult(
        out_dir=out,
        images=np.load(out / "images.npy", mmap_mode="r" if mmap else None),
        landmarks=np.load(out / "landmarks.npy"),
        files=text.split("\n")[:-1] if text else [],
        partition=np.load(out / "partition.npy"),
        crop_boxes=np.load(out / "crop_boxes.npy"),
        face_boxes=np.load(out / "face_boxes.npy"),
        eyes_in_box=np.load(out / "eyes_in_box.npy"),
        n_total=report["n_total"],
        skipped=report["skipped"],
        skip_list=report["skip_list"],
        settings=report["settings"],
    )


# ------------------------------------------------------------------------------ driver
def preprocess_celeba(root: str | Path, out_dir: str | Path, *, layout: str = "aligned", size: int = 128,
                      scale_factor: float = 5.0, min_neighbors: int = 5, min_size: int = 0,
                      margin: float = 0.0, pad_mode: str = "replicate", choose: str = "eyes",
                      shard_size: int = 1000, n_workers: int = 0, limit: int | None = None,
                      keep_shards: bool = False, progress: bool = True,
                      callbacks: list[Callable[[str, dict], None]] | None = None) -> PreprocessResult:
    """Haar-crop CelebA at ``root`` into ``out_dir`` (see :class:`PreprocessResult` for the files).

    Defaults are the authors' (``detectMultiScale(gray, 5, 5)``, no margin, 128 px).
    ``n_workers`` processes (0 = all cores; 1 = in this process). Shards of ``shard_size``
    images go to ``out_dir/shards`` as they finish; a re-run after a kill reuses the intact
    ones. ``limit``: only the first ``limit`` images of the landmarks file. ``keep_shards``:
    keep the shard folder after the merge (else it is removed). ``callbacks``: called as
    ``cb("shard", state)`` after each shard is written or reused and ``cb("end", state)``.
    Unreadable, corrupt, missing images and images without a face are skipped, counted
    by reason and listed in ``report.json``.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int (32, 64 or 128), got {size!r}")
    if not scale_factor > 1.0:
        raise ValueError(f"scale_factor must be > 1 (got {scale_factor})")
    if min_neighbors < 0 or min_size < 0:
        raise ValueError(f"min_neighbors and min_size must be >= 0 (got {min_neighbors}, {min_size})")
    if not 0.0 <= margin <= 2.0:
        raise ValueError(f"margin must be in [0, 2] (a fraction of the box side), got {margin}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {tuple(PAD_MODES)} (got {pad_mode!r})")
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {CHOICES} (got {choose!r})")
    if shard_size < 1 or n_workers < 0 or (limit is not None and limit < 0):
        raise ValueError(f"shard_size must be >= 1, n_workers >= 0, limit >= 0 or None "
                         f"(got {shard_size}, {n_workers}, {limit})")
    celeba = CelebA(root, layout)  # checks the tree before any work
    load_cascade()

    n = len(celeba) if limit is None else min(limit, len(celeba))
    points_px = celeba.landmarks5[:n].astype(np.float64) + CELEBA_PIXEL_OFFSET
    settings = dict(size=size, scale_factor=float(scale_factor), min_neighbors=int(min_neighbors),
                    min_size=int(min_size), margin=float(margin), pad_mode=pad_mode, choose=choose)
    config_json = json.dumps(dict(settings, layout=layout, cascade=CASCADE_FILE,
                                  pixel_offset=CELEBA_PIXEL_OFFSET, version=FORMAT_VERSION), sort_keys=True)
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".shard_*.tmp*"):  # temp files of a killed run
        stale.unlink()

    ranges = [(k, s, min(s + shard_size, n)) for k, s in enumerate(range(0, n, shard_size))]
    shard_files = {k: celeba.files[s:e] for k, s, e in ranges}
    done = {k for k, s, e in ranges if _read_shard(_shard_path(shard_dir, k), shard_files[k], config_json) is not None}
    todo = [(k, s, e) for k, s, e in ranges if k not in done]
    callbacks = list(callbacks or [])

    def emit(event: str, **state) -> None:
        for cb in callbacks:
            cb(event, state)

    for k in sorted(done):
        emit("shard", shard=k, path=str(_shard_path(shard_dir, k)), reused=True)

    from tqdm import tqdm

    n_done = sum(e - s for k, s, e in ranges if k in done)
    tasks = ((i, str(celeba.image_dir / celeba.files[i]), points_px[i]) for _, s, e in todo for i in range(s, e))
    n_workers = n_workers or os.cpu_count() or 1
    pool = None
    # One image per process, so OpenCV's own threads would only oversubscribe the cores. The
    # parent drops them *before* forking: a child calling cv2.setNumThreads on a thread pool
    # inherited mid-state can hang (seen after the parent had run detectMultiScale).
    saved_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    if n_workers == 1 or not todo:
        _init_worker(settings)
        results = map(_work, tasks)
    else:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        pool = mp.get_context(method).Pool(n_workers, initializer=_init_worker,
                                           initargs=(settings, method != "fork"))
        results = pool.imap(_work, tasks, chunksize=max(1, min(16, shard_size // (4 * n_workers))))
    try:
        with tqdm(total=n, initial=n_done, unit="img", desc="haar crop", disable=not progress) as bar:
            for k, s, e in todo:
                chunk = []
                for _ in range(s, e):
                    chunk.append(next(results))
                    bar.update(1)
                path = _shard_path(shard_dir, k)
                _write_shard(path, chunk, shard_files[k], config_json, size, points_px.shape[1])
                emit("shard", shard=k, path=str(path), reused=False)
    except BaseException:
        if pool is not None:
            pool.terminate()  # close() would wait for every queued image
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        cv2.setNumThreads(saved_threads)

    result = _merge(celeba, out, shard_dir, ranges, shard_files, config_json, settings, layout, n)
    if not keep_shards:
        shutil.rmtree(shard_dir)
    emit("end", n_total=n, n_kept=len(result), skipped=result.skipped, out_dir=str(out))
    return result


def _merge(celeba: CelebA, out: Path, shard_dir: Path, ranges, shard_files, config_json: str,
           settings: dict, layout: str, n: int) -> PreprocessResult:
    """Concatenate the shards into the output files, streaming the images through a memmap."""
    size = settings["size"]
    shards = []
    n_kept = 0
    for k, _, _ in ranges:  # a first pass for counts (small arrays only)
        data = _read_shard(_shard_path(shard_dir, k), shard_files[k], config_json)
        if data is None:
            raise RuntimeError(f"shard {_shard_path(shard_dir, k)} is missing or damaged after writing")
        data.pop("images")
        shards.append(data)
        n_kept += len(data["index"])
    tmp_images = out / ".images.npy.tmp"
    images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(n_kept, size, size, 3))
    at = 0
    for k, _, _ in ranges:
        with np.load(_shard_path(shard_dir, k)) as z:
            block = z["images"]
        images[at:at + len(block)] = block
        at += len(block)
    images.flush()
    del images
    os.replace(tmp_images, out / "images.npy")

    empty = dict(index=np.zeros(0, np.int64), landmarks=np.zeros((0, 5, 2), np.float32),
                 crop_boxes=np.zeros((0, 3), np.int32), face_boxes=np.zeros((0, 4), np.int32),
                 eyes_in_box=np.zeros(0, bool), skip_index=np.zeros(0, np.int64),
                 skip_reason=np.zeros(0, str), skip_detail=np.zeros(0, str))
    cat = {key: np.concatenate([d[key] for d in shards]) if shards else value for key, value in empty.items()}
    index = cat["index"]
    files = [celeba.files[i] for i in index]
    _save_npy(out / "landmarks.npy", cat["landmarks"].astype(np.float32))
    _save_npy(out / "partition.npy", celeba.partition[index])
    _save_npy(out / "crop_boxes.npy", cat["crop_boxes"])
    _save_npy(out / "face_boxes.npy", cat["face_boxes"])
    _save_npy(out / "eyes_in_box.npy", cat["eyes_in_box"])
    _write_text(out / "files.txt", "".join(f + "\n" for f in files))
    skip_list = [{"file": celeba.files[i], "reason": str(r), "detail": str(d)}
                 for i, r, d in zip(cat["skip_index"], cat["skip_reason"], cat["skip_detail"])]
    skipped = {reason: sum(s["reason"] == reason for s in skip_list) for reason in SKIP_REASONS}
    report = dict(root=str(celeba.root), layout=layout, settings=json.loads(config_json), n_total=n,
                  n_kept=n_kept, skipped=skipped, skip_list=skip_list)
    _write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    return load_preprocessed(out)

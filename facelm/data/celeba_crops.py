"""A whole CelebA tree -> face crops, on all cores, in resumable shards (stage 01's heavy part).

:func:`preprocess_celeba` runs :func:`facelm.data.face_crop.process_image` over every image
of a CelebA tree (``celeba.*`` settings), writes shards of ``celeba.shard_size`` images
atomically (one ``.npz`` each), reuses finished shards after a kill (checked: same settings,
same image list, readable with intact zip CRCs), and merges them into the output folder
(see :class:`PreprocessResult`). A missing, empty/truncated (``corrupt``) or undecodable
(``unreadable``) file, an image without a face (``no_face``), without a face at the annotated
eyes (``no_face_at_eyes``) or whose landmarks leave the crop (``landmarks_outside``) is
skipped, counted by reason and listed with its file name.

CelebA's integer landmark positions are read as 0-based pixel indices (centre = +0.5).
Workers are forked (spawned where fork does not exist; scripts then need the usual
``if __name__ == "__main__":`` guard); kept images are in CelebA's order whatever the number
of workers, so one worker and many give identical arrays.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from facelm.config import CelebAParams
from facelm.data.celeba import CelebA
from facelm.data.face_crop import (CASCADE_FILE, CHOICE, CHOICES, IN_CROP_TOLERANCE, PAD_MODE, PAD_MODES,
                                   make_face_finder, process_image, read_image_file)
from facelm.data.files import save_json, save_npy, save_npz, save_text, stream_npy

CELEBA_PIXEL_OFFSET = 0.5  # CelebA integer positions name pixels; their centres are at i + 0.5
SKIP_REASONS = ("missing", "corrupt", "unreadable", "no_face", "no_face_at_eyes", "landmarks_outside", "error")
FORMAT_VERSION = 2  # 2: no fall-back to a box without the eyes; landmarks must be in the crop


# ----------------------------------------------------------------- workers (per process)
_WORKER: dict = {}


def _init_worker(cfg: CelebAParams, size: int, pad_mode: str, choose: str, single_thread: bool = False) -> None:
    if single_thread:  # a fresh (spawned) process: one image per process, no OpenCV threads
        cv2.setNumThreads(1)
    _WORKER.clear()
    _WORKER.update(cfg=cfg, size=size, options=dict(pad_mode=pad_mode, choose=choose),
                   find_faces=make_face_finder(cfg))


def _work(task: tuple[int, str, np.ndarray]):
    """(index, status, payload): status "ok" with a Crop, or a skip reason with a detail."""
    i, path, points = task
    try:
        image, reason = read_image_file(path)
        if image is None:
            return i, reason, ""
        w = _WORKER
        crop = process_image(image, points, w["find_faces"], w["cfg"], w["size"], **w["options"])
        return (i, crop, "") if isinstance(crop, str) else (i, "ok", crop)
    except Exception as exc:  # never let one odd image stop 200k: record it instead
        return i, "error", f"{type(exc).__name__}: {exc}"


@contextmanager
def _results(tasks: Iterable, init_args: tuple, n_workers: int, chunksize: int) -> Iterator[Iterator]:
    """``_work``'s results over ``tasks`` in order: in this process, or from a pool of workers."""
    pool = None
    # One image per process, so OpenCV's own threads would only oversubscribe the cores. The
    # parent drops them *before* forking: a child calling cv2.setNumThreads on a thread pool
    # inherited mid-state can hang (seen after the parent had run detectMultiScale).
    saved_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if n_workers == 1:
            _init_worker(*init_args)
            yield map(_work, tasks)
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = mp.get_context(method).Pool(n_workers, initializer=_init_worker,
                                               initargs=(*init_args, method != "fork"))
            yield pool.imap(_work, tasks, chunksize=chunksize)
    except BaseException:
        if pool is not None:
            pool.terminate()  # close() would wait for every queued image
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        cv2.setNumThreads(saved_threads)


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
    save_npz(path, arrays, fsync=True)  # a resumed run trusts this file: on disk before its name


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
    """The output folder of :func:`preprocess_celeba` and its content.

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
def preprocess_celeba(root: str | Path, out_dir: str | Path, cfg: CelebAParams, size: int, *,
                      pad_mode: str = PAD_MODE, choose: str = CHOICE, keep_shards: bool = False,
                      progress: bool = True, callbacks: list[Callable[[str, dict], None]] | None = None
                      ) -> PreprocessResult:
    """Crop the CelebA tree at ``root`` (layout, detector and Haar settings, margin, limit,
    workers and shard size from ``cfg``) to ``size`` px into ``out_dir`` (files: see
    :class:`PreprocessResult`).

    ``cfg.n_workers`` processes (0 = all cores; 1 = in this process). Shards go to
    ``out_dir/shards`` as they finish; a re-run after a kill reuses the intact ones.
    ``cfg.limit``: only the first ``limit`` images of the landmarks file. ``keep_shards``: keep
    the shard folder after the merge (else it is removed). ``callbacks``: called as
    ``cb("shard", state)`` after each shard is written or reused and ``cb("end", state)``.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {tuple(PAD_MODES)} (got {pad_mode!r})")
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {CHOICES} (got {choose!r})")
    celeba = CelebA(root, cfg.layout)  # checks the tree before any work
    make_face_finder(cfg)  # and that the face detector loads

    n = len(celeba) if cfg.limit is None else min(cfg.limit, len(celeba))
    points_px = celeba.landmarks5[:n].astype(np.float64) + CELEBA_PIXEL_OFFSET
    settings = dict(size=size, face_detector=cfg.face_detector, scale_factor=float(cfg.scale_factor),
                    min_neighbors=int(cfg.min_neighbors), min_size=int(cfg.min_size), margin=float(cfg.margin),
                    pad_mode=pad_mode, choose=choose, in_crop_tolerance=IN_CROP_TOLERANCE)
    config_json = json.dumps(dict(settings, layout=cfg.layout, cascade=CASCADE_FILE,
                                  pixel_offset=CELEBA_PIXEL_OFFSET, version=FORMAT_VERSION), sort_keys=True)
    out = Path(out_dir)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for stale in shard_dir.glob(".shard_*.tmp*"):  # temp files of a killed run
        stale.unlink()

    ranges = [(k, s, min(s + cfg.shard_size, n)) for k, s in enumerate(range(0, n, cfg.shard_size))]
    shard_files = {k: celeba.files[s:e] for k, s, e in ranges}
    done = {k for k, s, e in ranges if _read_shard(_shard_path(shard_dir, k), shard_files[k], config_json) is not None}
    todo = [(k, s, e) for k, s, e in ranges if k not in done]

    def emit(event: str, **state) -> None:
        for cb in callbacks or []:
            cb(event, state)

    for k in sorted(done):
        emit("shard", shard=k, path=str(_shard_path(shard_dir, k)), reused=True)

    from tqdm import tqdm

    n_done = sum(e - s for k, s, e in ranges if k in done)
    tasks = ((i, str(celeba.image_dir / celeba.files[i]), points_px[i]) for _, s, e in todo for i in range(s, e))
    n_workers = 1 if not todo else cfg.n_workers or os.cpu_count() or 1
    chunksize = max(1, min(16, cfg.shard_size // (4 * n_workers)))
    with _results(tasks, (cfg, size, pad_mode, choose), n_workers, chunksize) as results, \
            tqdm(total=n, initial=n_done, unit="img", desc="face crop", disable=not progress) as bar:
        for k, s, e in todo:
            chunk = []
            for _ in range(s, e):
                chunk.append(next(results))
                bar.update(1)
            path = _shard_path(shard_dir, k)
            _write_shard(path, chunk, shard_files[k], config_json, size, points_px.shape[1])
            emit("shard", shard=k, path=str(path), reused=False)

    result = _merge(celeba, out, shard_dir, [k for k, _, _ in ranges], shard_files, config_json, n)
    if not keep_shards:
        shutil.rmtree(shard_dir)
    emit("end", n_total=n, n_kept=len(result), skipped=result.skipped, out_dir=str(out))
    return result


def _merge(celeba: CelebA, out: Path, shard_dir: Path, shard_ids: list[int], shard_files: dict,
           config_json: str, n: int) -> PreprocessResult:
    """Concatenate the shards into the output files, streaming the images through a memmap."""
    size = json.loads(config_json)["size"]
    shards = []
    for k in shard_ids:  # a first pass for counts (small arrays only)
        data = _read_shard(_shard_path(shard_dir, k), shard_files[k], config_json)
        if data is None:
            raise RuntimeError(f"shard {_shard_path(shard_dir, k)} is missing or damaged after writing")
        data.pop("images")
        shards.append(data)
    n_kept = sum(len(d["index"]) for d in shards)

    def fill(images: np.ndarray) -> None:
        at = 0
        for k in shard_ids:
            with np.load(_shard_path(shard_dir, k)) as z:
                block = z["images"]
            images[at:at + len(block)] = block
            at += len(block)

    stream_npy(out / "images.npy", np.uint8, (n_kept, size, size, 3), fill)
    empty = dict(index=np.zeros(0, np.int64), landmarks=np.zeros((0, 5, 2), np.float32),
                 crop_boxes=np.zeros((0, 3), np.int32), face_boxes=np.zeros((0, 4), np.int32),
                 eyes_in_box=np.zeros(0, bool), skip_index=np.zeros(0, np.int64),
                 skip_reason=np.zeros(0, str), skip_detail=np.zeros(0, str))
    cat = {key: np.concatenate([d[key] for d in shards]) if shards else value for key, value in empty.items()}
    index = cat["index"]
    save_npy(out / "landmarks.npy", cat["landmarks"].astype(np.float32))
    save_npy(out / "partition.npy", celeba.partition[index])
    for key in ("crop_boxes", "face_boxes", "eyes_in_box"):
        save_npy(out / f"{key}.npy", cat[key])
    save_text(out / "files.txt", "".join(celeba.files[i] + "\n" for i in index))
    skip_list = [{"file": celeba.files[i], "reason": str(r), "detail": str(d)}
                 for i, r, d in zip(cat["skip_index"], cat["skip_reason"], cat["skip_detail"])]
    skipped = {reason: sum(s["reason"] == reason for s in skip_list) for reason in SKIP_REASONS}
    report = dict(root=str(celeba.root), layout=celeba.layout, settings=json.loads(config_json), n_total=n,
                  n_kept=n_kept, skipped=skipped, skip_list=skip_list)
    save_json(out / "report.json", report, indent=1)
    return load_preprocessed(out)

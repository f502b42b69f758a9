"""Small fake CelebA trees in the real formats: a dry run of the CelebA path without CelebA.

Why this lives in the package and not in ``tests/``: it is the one input with which the
real-data path (``dataset: celeba``, Haar or dlib crops, every annotator, ``dvc repro``) can
be run end to end without the 1.4 GB download, and it is used as such by the tests, by CI's
pipeline check, by ``benchmarks/bench_preprocess.py`` (which is not under ``tests/`` and
should not import from it) and by a user who wants to see the CelebA path work, or time
it, before pointing ``celeba.root`` at the real thing::

    from facelm.data.fakeceleba import make_fake_celeba
    make_fake_celeba("data/celeba", n=60, detect=load_params().celeba)   # then dataset: celeba

Rendered faces (facelm.data.world, exact 49-point landmarks) are pasted, with feathered edges,
into larger photo-like backgrounds (a colour gradient, blurred blobs and strokes, noise) at
known positions and scales. The annotation files follow CelebA's formats, padding included
(count line, header line, rows split by runs of spaces; the partition file has no header
and CRLF line ends, as some copies do); the 5 points come from the rendered landmarks:

- lefteye / righteye: centres (mean of 6 points) of the eye on the image's left / right
  (49-point groups ``right_eye`` 19-24 and ``left_eye`` 25-30 for a frontal face),
- nose: the nose tip (49-point index 13), leftmouth / rightmouth: the mouth corners 31 / 37,

written, like CelebA, as integer pixel indices (``floor`` of the continuous position, so a
reader taking pixel centres is within half a pixel). ``corrupt`` images are truncated JPEGs,
``no_face`` images are background only; both are listed in every annotation file, as a
damaged download of the real data set would be.

The frontal Haar cascade misses some rendered faces (measured at 178x218, near-frontal
faces of 90-170 px: ~77 % found at scaleFactor 1.1, ~88 % at 1.05, 10-48 % at the authors'
5), so every image can be checked after JPEG encoding with the ``celeba`` settings it is
made for (``detect``) and a missed face is replaced by the next world face: a fake tree then
has a known outcome under those settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelm.config import CelebAParams, WorldParams, replace
from facelm.data.celeba import (ATTR_FILE, ATTR_NAMES, BBOX_FILE, IMAGE_DIRS, LANDMARK_COLUMNS, LANDMARK_FILES,
                                LAYOUTS, PARTITION_FILE, SUBDIRS)
from facelm.data.face_crop import FaceFinder, make_face_finder, process_image
from facelm.data.files import save_bytes
from facelm.landmarks import to_5

ALIGNED_SHAPE = (218, 178)  # (H, W) of img_align_celeba images
# near-frontal world faces: what the frontal Haar cascade finds
FRONTAL_POSE = replace(WorldParams(), yaw_max=5.0, pitch_max=5.0, roll_max=5.0)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like cluttered RGB background: gradient, blurred blobs and strokes, noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    c0, c1 = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    blobs = np.zeros_like(img)
    mask = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(8, 20))):
        colour = [float(v) for v in rng.uniform(0, 255, 3)]
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(4, max(5, width // 4))), int(rng.integers(4, max(5, height // 4))))
        cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    for _ in range(int(rng.integers(3, 10))):
        colour = [float(v) for v in rng.uniform(0, 255, 3)]
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(blobs, p0, p1, colour, int(rng.integers(1, 6)))
        cv2.line(mask, p0, p1, 1.0, int(rng.integers(1, 6)))
    sigma = float(rng.uniform(1.0, 4.0))
    blobs, mask = cv2.GaussianBlur(blobs, (0, 0), sigma), cv2.GaussianBlur(mask, (0, 0), sigma)[..., None]
    img = img * (1 - 0.8 * mask) + 0.8 * blobs
    img += rng.normal(0, rng.uniform(2, 8), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste_face(canvas: np.ndarray, face: np.ndarray, x0: int, y0: int, side: int, feather: float = 0.12) -> None:
    """Resize ``face`` (square RGB) to ``side`` and blend it into ``canvas`` at (x0, y0), in place.

    The face's own square background fades into the canvas over ``feather`` of its side, so
    no hard square edge surrounds it. The square must lie inside the canvas.
    """
    interp = cv2.INTER_AREA if side < face.shape[0] else cv2.INTER_LINEAR
    face = cv2.resize(face, (side, side), interpolation=interp).astype(np.float32)
    ramp = np.clip((np.minimum(np.arange(side), np.arange(side)[::-1]) + 0.5) / max(feather * side, 1.0), 0, 1)
    alpha = np.minimum.outer(ramp, ramp)[..., None]
    region = canvas[y0:y0 + side, x0:x0 + side].astype(np.float32)
    canvas[y0:y0 + side, x0:x0 + side] = np.clip(alpha * face + (1 - alpha) * region + 0.5, 0, 255).astype(np.uint8)


@dataclass
class FakeCelebA:
    """What :func:`make_fake_celeba` built: the truth the annotation files were made from."""

    root: Path
    layout: str
    files: list[str]
    points5: np.ndarray  # float32 [n, 5, 2] continuous pixel coordinates (before integer rounding)
    face_boxes: np.ndarray  # int32 [n, 4] pasted face square (x, y, side, side); zeros for no-face images
    face_index: np.ndarray  # int64 [n] world face (render_faces start index) pasted; -1 for none
    partition: np.ndarray  # int8 [n]
    corrupt_files: list[str]
    no_face_files: list[str]
    tries: int  # faces rendered in all (> n - no_face when `detect` rejected some)


def _write_table(path: Path, header: str, rows: list[str], newline: str = "\n") -> None:
    lines = [str(len(rows)), header] + rows
    save_bytes(path, newline.join(lines).encode() + newline.encode())


def _encode(canvas: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode a JPEG")
    return buf.tobytes()


def _found(data: bytes, points5: np.ndarray | None, find_faces: FaceFinder, detect: CelebAParams) -> bool:
    """Would preprocessing keep this encoded image (``points5`` given), or find no face in it
    (``points5`` None: a background must give no detection)? The same steps as
    :func:`facelm.data.face_crop.process_image`: a box at the eyes, landmarks in the crop."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if points5 is None:
        return len(find_faces(image)) > 0
    return not isinstance(process_image(image, points5, find_faces, detect, 16), str)


@dataclass
class _Plan:
    """How :func:`make_fake_celeba` draws each image (the arguments, resolved once)."""

    layout: str
    seed: int
    face_size: int
    scale: tuple[float, float]
    wild_size: tuple[int, int]
    world: WorldParams
    quality: int
    detect: CelebAParams | None
    find_faces: FaceFinder | None


def _canvas(plan: _Plan, rng: np.random.Generator) -> tuple[np.ndarray, int, int, int]:
    """A background and where a face square goes on it: ``(canvas, x0, y0, side)``."""
    if plan.layout == "aligned":
        h, w = ALIGNED_SHAPE
    else:
        h, w = (int(v) for v in rng.integers(plan.wild_size[0], plan.wild_size[1] + 1, size=2))
    canvas = background(h, w, rng)
    side = min(int(round(plan.face_size * rng.uniform(*plan.scale))), h, w)
    if plan.layout == "aligned":
        x0 = (w - side) // 2 + int(rng.integers(-3, 4))
        y0 = (h - side) // 2 - int(round(0.05 * side)) + int(rng.integers(-3, 4))
        x0, y0 = int(np.clip(x0, 0, w - side)), int(np.clip(y0, 0, h - side))
    else:
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return canvas, x0, y0, side


def _one_image(plan: _Plan, rng: np.random.Generator, next_face: int, no_face: bool, max_tries: int, name: str):
    """Draw one image until it passes the check: ``(jpeg bytes, points5, face square, face index, next_face)``."""
    from facelm.data.world import render_faces

    for _ in range(max_tries):
        canvas, x0, y0, side = _canvas(plan, rng)
        face, lm = render_faces(1, plan.face_size, plan.seed, next_face, world=plan.world)
        pts = to_5(lm[0].astype(np.float64)) * side + [x0, y0]
        if no_face:
            # annotations stay plausible (where a face would be) though the image has none
            data = _encode(canvas, plan.quality)
            if plan.find_faces is None or not _found(data, None, plan.find_faces, plan.detect):
                return data, pts, (0, 0, 0, 0), -1, next_face
        else:
            paste_face(canvas, face[0], x0, y0, side)
            data = _encode(canvas, plan.quality)
            next_face += 1
            if plan.find_faces is None or _found(data, pts, plan.find_faces, plan.detect):
                return data, pts, (x0, y0, side, side), next_face - 1, next_face
    what = "background" if no_face else "face"
    raise RuntimeError(f"no {what} passing the face-detector check in {max_tries} tries for {name}: "
                       "loosen `detect` or the pose")


def _write_annotations(anno_dir: Path, eval_dir: Path, layout: str, files: list[str], points: np.ndarray,
                       boxes: np.ndarray, partition: np.ndarray, rng: np.random.Generator) -> None:
    """CelebA's list files, padding, CRLF partition file and random attributes included."""
    pix = np.floor(points).astype(np.int64)
    _write_table(anno_dir / LANDMARK_FILES[layout], " ".join(LANDMARK_COLUMNS),
                 [f"{f:<10} " + "".join(f"{v:>5d}" for v in p.ravel()) for f, p in zip(files, pix)])
    _write_table(anno_dir / BBOX_FILE, "image_id x_1 y_1 width height",
                 [f"{f:<10} " + "".join(f"{v:>5d}" for v in b) for f, b in zip(files, boxes)])
    attrs = rng.choice(np.array([-1, 1]), size=(len(files), len(ATTR_NAMES)))
    _write_table(anno_dir / ATTR_FILE, " ".join(ATTR_NAMES) + " ",
                 [f"{f} " + " ".join(f"{v:>2d}" for v in a) for f, a in zip(files, attrs)])
    rows = [f"{f} {p}" for f, p in zip(files, partition)]
    save_bytes(eval_dir / PARTITION_FILE, ("\r\n".join(rows) + "\r\n").encode())


def make_fake_celeba(root: str | Path, n: int = 12, layout: str = "aligned", seed: int = 0, corrupt: int = 1,
                     no_face: int = 1, *, detect: CelebAParams | None, face_size: int = 128,
                     scale_range: tuple[float, float] | None = None, wild_size: tuple[int, int] = (240, 360),
                     nested: bool = False, world: WorldParams | None = None, max_tries: int = 30,
                     quality: int = 95) -> FakeCelebA:
    """Write a fake CelebA tree of ``n`` images (``corrupt`` truncated, ``no_face`` face-less) to ``root``.

    ``aligned``: 178x218 images, the face square of side ``face_size * scale`` centred a
    little above the middle (as CelebA's alignment puts the eyes); ``wild``: images of
    random size in ``wild_size`` (both sides), the face at a random position. ``scale`` is
    drawn from ``scale_range`` (default: aligned (0.95, 1.05), wild (0.7, 1.2)). Faces are
    ``facelm.data.world.render_faces(1, face_size, seed, j, world=world)`` for j = 0, 1, ...
    (``world`` default: :data:`FRONTAL_POSE`, near frontal, as the frontal Haar cascade needs).

    ``detect`` (the ``celeba`` settings the tree is for: face detector, Haar settings,
    margin): every face image must be kept by preprocessing with them after JPEG encoding
    (a face at the eyes, landmarks in the crop) -- a face that fails is replaced by the next
    world face, at most ``max_tries`` per image -- and every no-face background must give no
    detection. So a fake tree has a known outcome under those settings (corrupt + no_face
    skipped, every other image kept). ``detect=None``: no check. ``nested=True`` uses CelebA's
    own Img/ Anno/ Eval/ folders.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} (got {layout!r})")
    if n < 1 or corrupt < 0 or no_face < 0 or corrupt + no_face > n:
        raise ValueError(f"need n >= 1 and 0 <= corrupt + no_face <= n (got n={n}, corrupt={corrupt}, "
                         f"no_face={no_face})")
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / (SUBDIRS["image"] if nested else "") / IMAGE_DIRS[layout]
    anno_dir = root / (SUBDIRS["anno"] if nested else "")
    eval_dir = root / (SUBDIRS["eval"] if nested else "")
    for d in (image_dir, anno_dir, eval_dir):
        d.mkdir(parents=True, exist_ok=True)
    plan = _Plan(layout, seed, face_size, scale_range or ((0.95, 1.05) if layout == "aligned" else (0.7, 1.2)),
                 wild_size, world if world is not None else FRONTAL_POSE, quality, detect,
                 make_face_finder(detect) if detect is not None else None)
    order = rng.permutation(n)
    no_face_idx = set(order[:no_face].tolist())
    corrupt_idx = set(order[no_face:no_face + corrupt].tolist())
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    points = np.zeros((n, 5, 2))
    boxes = np.zeros((n, 4), np.int32)
    face_index = np.full(n, -1, np.int64)
    next_face = 0
    for i, name in enumerate(files):
        data, points[i], boxes[i], face_index[i], next_face = _one_image(plan, rng, next_face, i in no_face_idx,
                                                                         max_tries, name)
        if i in corrupt_idx:
            data = data[: len(data) * 3 // 5]  # a download cut off mid-scan
        save_bytes(image_dir / name, data)
    partition = np.zeros(n, np.int8)
    partition[int(round(0.8 * n)):] = 1
    partition[int(round(0.9 * n)):] = 2
    _write_annotations(anno_dir, eval_dir, layout, files, points, boxes, partition, rng)
    return FakeCelebA(root=root, layout=layout, files=files, points5=points.astype(np.float32),
                      face_boxes=boxes, face_index=face_index, partition=partition,
                      corrupt_files=[files[i] for i in sorted(corrupt_idx)],
                      no_face_files=[files[i] for i in sorted(no_face_idx)], tries=next_face)

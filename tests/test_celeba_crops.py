"""CelebA crops: exact crop transforms, the choice of face, skip accounting, sharding, kill-and-resume."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelm.config import CelebAParams, ParamsError, replace
from facelm.data.celeba_crops import load_preprocessed, preprocess_celeba
from facelm.data.face_crop import (boxes_contain, choose_face, crop_square, process_image, read_image_file,
                                   square_box, to_crop_units)
from facelm.data.fakeceleba import make_fake_celeba

ROOT = Path(__file__).resolve().parents[1]
HAAR = replace(CelebAParams(), scale_factor=1.1, min_neighbors=5, min_size=0)


def cfg(**changes) -> CelebAParams:
    return replace(HAAR, **changes)


# ------------------------------------------------------------------------- transforms
def _sample(img: np.ndarray, u: float, v: float) -> np.ndarray:
    """Bilinear sample at continuous coordinates (pixel i's centre at i + 0.5)."""
    x, y = u - 0.5, v - 0.5
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    return (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
            + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)


CASES = [  # box (x, y, w, h), margin, output size: down, up, same size, off the image edges
    ((40, 30, 90, 90), 0.0, 64), ((40, 30, 90, 90), 0.2, 128), ((150, -10, 80, 80), 0.1, 32),
    ((5, 5, 37, 37), 0.0, 128), ((100, 60, 128, 128), 0.0, 128), ((-20, 90, 70, 70), 0.25, 64),
]


@pytest.mark.parametrize("box, margin, size", CASES)
def test_crop_maps_points_exactly(box, margin, size):
    """Crop a ramp image whose pixels hold their own coordinates: at each transformed point
    the crop must read the original point back (the resampling is affine in the pixel-centre
    convention; OpenCV's area filter jitters by < 0.1 source px at fractional scales)."""
    h, w = 150, 210
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    ramp = np.dstack([xx, yy, np.zeros_like(xx)])
    x0, y0, side = square_box(np.array(box), margin)
    crop = crop_square(ramp, x0, y0, side, size, "replicate")
    assert crop.shape == (size, size, 3)
    rng = np.random.default_rng(0)
    keep = 2 + 2 * side / size  # off the padded border by more than the resampling reaches
    pts = np.column_stack([rng.uniform(max(x0, 0) + keep, min(x0 + side, w) - keep, 200),
                           rng.uniform(max(y0, 0) + keep, min(y0 + side, h) - keep, 200)])
    u = to_crop_units(pts, x0, y0, side) * size
    inside = ((u > 1) & (u < size - 1)).all(axis=1)
    assert inside.sum() > 50
    got = np.array([_sample(crop, a, b)[:2] for a, b in u[inside]])
    tol = 0.1 if side > size else 1e-3
    np.testing.assert_allclose(got, pts[inside], atol=tol)


def test_dots_land_where_the_landmarks_say():
    """Blurred dots at known sub-pixel positions in a uint8 image: after crop + resize
    (the box runs off the image, so padding is involved) each dot's centroid is at its
    transformed landmark, to a small fraction of a pixel."""
    h, w = 200, 240
    dots = np.array([[60.3, 70.7], [120.5, 64.2], [92.8, 110.1], [70.25, 150.6], [130.9, 148.4]])
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w), np.float64)
    for x, y in dots:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5 ** 2))
    img = np.dstack([np.clip(img * 255, 0, 255).round().astype(np.uint8)] * 3)
    for box, size in (((40, -30, 120, 120), 64), ((30, 40, 130, 130), 128), ((50, 50, 90, 90), 128)):
        x0, y0, side = square_box(np.array(box), 0.15)
        crop = crop_square(img, x0, y0, side, size, "constant")[..., 0].astype(np.float64)
        want = to_crop_units(dots, x0, y0, side) * size
        r = 3.5 * 2.5 * size / side  # window of +-3.5 sigma around each dot
        cy, cx = np.mgrid[0:size, 0:size] + 0.5
        whole = ((want > r) & (want < size - r)).all(axis=1)  # dots the crop holds entirely
        assert whole.sum() >= 2
        for (ux, uy) in want[whole]:
            m = crop * (((cx - ux) ** 2 + (cy - uy) ** 2) < r * r)
            centroid = np.array([(m * cx).sum(), (m * cy).sum()]) / m.sum()
            np.testing.assert_allclose(centroid, [ux, uy], atol=0.05)


def test_square_box_and_padding():
    assert square_box(np.array([10, 20, 30, 30]), 0.0) == (10, 20, 30)
    assert square_box(np.array([10, 20, 30, 30]), 0.5) == (-5, 5, 60)
    assert square_box(np.array([10, 20, 40, 30]), 0.0) == (10, 15, 40)
    img = np.full((20, 20, 3), 7, np.uint8)
    img[:, :10] = 200
    crop = crop_square(img, -10, 0, 20, 20, "replicate")
    assert (crop[:, :10] == 200).all() and (crop[:, 10:] == 200).all()
    crop = crop_square(img, -10, 0, 20, 20, "constant")
    assert (crop[:, :10] == 0).all() and (crop[:, 10:] == 200).all()
    with pytest.raises(ValueError, match="overlap"):
        crop_square(img, 100, 100, 20, 20)
    with pytest.raises(ValueError, match="pad_mode"):
        crop_square(img, 0, 0, 20, 20, "wrap")


def test_choose_face_prefers_the_box_holding_the_eyes():
    boxes = np.array([[0, 0, 100, 100], [150, 40, 50, 50], [160, 50, 20, 20]], np.int32)
    eyes = np.array([[165.0, 60.0], [185.0, 60.0]])
    assert boxes_contain(boxes, eyes).tolist() == [False, True, False]
    assert choose_face(boxes, eyes) == 1
    # eyes in no box: none of the boxes is this face (no fall-back to the largest)
    assert choose_face(boxes, eyes + 500) is None
    assert choose_face(boxes, None) == 0  # no annotation to check against: the largest
    assert choose_face(boxes, eyes, "first") == 0 and choose_face(boxes, eyes, "largest") == 0
    assert choose_face(np.zeros((0, 4), np.int32), eyes) is None


def test_a_crop_is_kept_only_with_its_landmarks_in_it():
    """Eyes in no detection -> skipped (the old code kept the largest box); eyes in a box but
    other points far outside the crop -> skipped; points just past the edge (within the 2 %
    tolerance) -> kept."""
    image = np.full((200, 200, 3), 128, np.uint8)
    pts = np.array([[80.0, 80], [120, 80], [100, 100], [85, 120], [115, 120]])
    face, other = np.array([[60, 60, 80, 80]], np.int32), np.array([[0, 150, 40, 40]], np.int32)
    crop = process_image(image, pts, lambda im: np.concatenate([other, face]), HAAR, 32)
    assert not isinstance(crop, str) and crop.eyes_in_box and tuple(crop.crop_box) == (60, 60, 80)
    assert process_image(image, pts, lambda im: other, HAAR, 32) == "no_face_at_eyes"
    assert process_image(image, pts, lambda im: np.zeros((0, 4), np.int32), HAAR, 32) == "no_face"
    far = pts.copy()
    far[3:] = [[-500, 99999], [-500, 99999]]  # a broken annotation row: the mouth somewhere else
    assert process_image(image, far, lambda im: face, HAAR, 32) == "landmarks_outside"
    edge = pts.copy()
    edge[3, 1] = 60 + 80 * 1.015  # 1.5 % of the side below the crop
    assert not isinstance(process_image(image, edge, lambda im: face, HAAR, 32), str)
    edge[3, 1] = 60 + 80 * 1.05
    assert process_image(image, edge, lambda im: face, HAAR, 32) == "landmarks_outside"
    # the authors' "first detection" ignores the eyes, but never keeps landmarks outside the crop
    assert process_image(image, pts, lambda im: other, HAAR, 32, choose="first") == "landmarks_outside"


def test_read_image_file_reasons(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    (tmp_path / "good.jpg").write_bytes(buf.tobytes())
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (tmp_path / "tail.jpg").write_bytes(buf.tobytes() + b"\x00" * 7 + b"extra")  # junk after EOI is fine
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    cv2.imwrite(str(tmp_path / "good.png"), img)
    assert read_image_file(tmp_path / "good.jpg")[0].shape == (40, 30, 3)
    assert read_image_file(tmp_path / "tail.jpg")[1] is None
    np.testing.assert_array_equal(read_image_file(tmp_path / "good.png")[0], img)
    assert read_image_file(tmp_path / "cut.jpg") == (None, "corrupt")
    assert read_image_file(tmp_path / "empty.jpg") == (None, "corrupt")
    assert read_image_file(tmp_path / "text.jpg") == (None, "unreadable")
    assert read_image_file(tmp_path / "none.jpg") == (None, "missing")


# ---------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_fake_celeba(tmp_path_factory.mktemp("celeba"), n=12, layout="aligned", seed=3, detect=HAAR)


def run(root, out, size, **changes):
    return preprocess_celeba(root, out, cfg(**changes), size, progress=False)


def _check_against_truth(result, fake, size):
    bad = set(fake.corrupt_files) | set(fake.no_face_files)
    assert result.files == [f for f in fake.files if f not in bad]
    assert result.images.shape == (len(result.files), size, size, 3) and result.images.dtype == np.uint8
    assert result.landmarks.shape == (len(result.files), 5, 2) and result.landmarks.dtype == np.float32
    rows = [fake.files.index(f) for f in result.files]
    # back to source pixels: equal to the truth up to CelebA's integer rounding (<= half a pixel)
    back = result.landmarks * result.crop_boxes[:, None, 2:3] + result.crop_boxes[:, None, :2]
    assert np.abs(back - fake.points5[rows]).max() <= 0.5 + 1e-3
    assert ((result.landmarks > 0) & (result.landmarks < 1)).all()
    np.testing.assert_array_equal(result.partition, fake.partition[rows])
    assert result.eyes_in_box.all()


def test_fake_tree_to_arrays_with_skips_counted_and_listed(tree, tmp_path):
    result = run(tree.root, tmp_path / "out", 64, shard_size=4, n_workers=2)
    _check_against_truth(result, tree, 64)
    assert result.n_total == 12 and len(result) == 10
    assert result.skipped == {"missing": 0, "corrupt": 1, "unreadable": 0, "no_face": 1, "no_face_at_eyes": 0,
                              "landmarks_outside": 0, "error": 0}
    listed = {(s["file"], s["reason"]) for s in result.skip_list}
    assert listed == {(tree.corrupt_files[0], "corrupt"), (tree.no_face_files[0], "no_face")}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["n_kept"] == 10 and report["skipped"]["corrupt"] == 1 and len(report["skip_list"]) == 2
    assert not (tmp_path / "out" / "shards").exists()  # removed after the merge
    again = load_preprocessed(tmp_path / "out")
    np.testing.assert_array_equal(again.images, result.images)
    # one process gives the same arrays as two
    single = run(tree.root, tmp_path / "out1", 64, shard_size=5, n_workers=1)
    np.testing.assert_array_equal(single.images, result.images)
    np.testing.assert_array_equal(single.landmarks, result.landmarks)
    assert single.files == result.files


def test_wild_layout_missing_image_and_limit(tmp_path):
    fake = make_fake_celeba(tmp_path / "wild", n=8, layout="wild", seed=4, detect=HAAR, nested=True)
    gone = next(f for f in fake.files if f not in fake.corrupt_files + fake.no_face_files)
    (tmp_path / "wild" / "Img" / "img_celeba" / gone).unlink()
    result = run(tmp_path / "wild", tmp_path / "out", 32, layout="wild", margin=0.1, shard_size=3, n_workers=1)
    assert result.skipped["missing"] == 1 and {"file": gone, "reason": "missing", "detail": ""} in result.skip_list
    assert len(result) == 5 and result.images.shape[1:] == (32, 32, 3)
    assert (result.crop_boxes[:, 2] > result.face_boxes[:, 2]).all()  # the margin enlarged the box
    limited = run(tmp_path / "wild", tmp_path / "out2", 32, layout="wild", limit=3, n_workers=1)
    assert limited.n_total == 3 and set(limited.files + [s["file"] for s in limited.skip_list]) == set(fake.files[:3])


def _edit_landmarks(root: Path, rows: dict[str, list[int]]) -> None:
    """Replace the landmark rows of some images in a fake tree's landmarks file."""
    path = root / "list_landmarks_align_celeba.txt"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines[2:], 2):
        name = line.split()[0]
        if name in rows:
            lines[i] = f"{name:<10} " + "".join(f"{v:>6d}" for v in rows[name])
    path.write_text("\n".join(lines) + "\n")


def test_wrong_faces_are_skipped_and_counted(tmp_path):
    """A landmark row of -500 / 99999 (eyes in no detection) and a row whose mouth is far
    below the face (eyes in the box, mouth outside the crop): both skipped, counted, listed;
    every kept crop holds its landmarks."""
    fake = make_fake_celeba(tmp_path / "tree", n=6, layout="aligned", seed=5, corrupt=0, no_face=0, detect=HAAR)
    broken, low_mouth = fake.files[1], fake.files[3]
    mouth_down = np.floor(fake.points5[3]).astype(int)
    mouth_down[3:, 1] += 150
    _edit_landmarks(fake.root, {broken: [-500, 99999] * 5, low_mouth: mouth_down.ravel().tolist()})
    result = run(fake.root, tmp_path / "out", 32, n_workers=1)
    assert result.skipped["no_face_at_eyes"] == 1 and result.skipped["landmarks_outside"] == 1
    listed = {(s["file"], s["reason"]) for s in result.skip_list}
    assert listed == {(broken, "no_face_at_eyes"), (low_mouth, "landmarks_outside")}
    assert len(result) == 4 and broken not in result.files and low_mouth not in result.files
    assert ((result.landmarks > -0.02) & (result.landmarks < 1.02)).all()


def test_dlib_face_detector(tree, tmp_path):
    """celeba.face_detector: dlib (HOG) crops the same faces; settings say which detector."""
    result = run(tree.root, tmp_path / "out", 32, face_detector="dlib", n_workers=1)
    haar = run(tree.root, tmp_path / "haar", 32, n_workers=1)
    assert result.files == haar.files and result.settings["face_detector"] == "dlib"
    assert result.eyes_in_box.all() and ((result.landmarks > 0) & (result.landmarks < 1)).all()
    assert not np.array_equal(result.crop_boxes, haar.crop_boxes)  # another detector, other boxes


def test_bad_arguments_fail_before_work(tree, tmp_path):
    with pytest.raises(ParamsError, match="scale_factor"):  # the config section refuses it
        cfg(scale_factor=1.0)
    with pytest.raises(ParamsError, match="margin"):
        cfg(margin=-0.1)
    with pytest.raises(ValueError, match="pad_mode"):
        preprocess_celeba(tree.root, tmp_path / "o", HAAR, 32, pad_mode="wrap")
    with pytest.raises(ValueError, match="choose"):
        preprocess_celeba(tree.root, tmp_path / "o", HAAR, 32, choose="best")
    with pytest.raises(FileNotFoundError, match="img_celeba"):
        preprocess_celeba(tree.root, tmp_path / "o", cfg(layout="wild"), 32)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- kill and resume
SCRIPT = """
import sys, time
from facelm.config import CelebAParams, replace
from facelm.data.celeba_crops import preprocess_celeba

def stall(event, state):
    if event == "shard" and not state["reused"]:
        print("shard", state["shard"], flush=True)
        time.sleep(120)  # stand still after the first shard: the test kills us here

if __name__ == "__main__":
    cfg = replace(CelebAParams(), shard_size=3, n_workers=2, **{HAAR})
    preprocess_celeba(sys.argv[1], sys.argv[2], cfg, 32, keep_shards=True, progress=False, callbacks=[stall])
"""


def test_kill_and_resume_reuses_finished_shards(tree, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    haar = {k: getattr(HAAR, k) for k in ("scale_factor", "min_neighbors", "min_size")}
    script.write_text(textwrap.dedent(SCRIPT.replace("{HAAR}", repr(haar))))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(tree.root), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    first = out / "shards" / "shard_00000.npz"
    try:
        deadline = time.time() + 60
        while not first.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no shard in 60 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its pool workers (its own session)
        proc.wait()
    shards = sorted(p.name for p in (out / "shards").glob("shard_*.npz"))
    assert shards == ["shard_00000.npz"] and not (out / "report.json").exists()
    mtime = first.stat().st_mtime_ns
    # debris of a kill mid-write, and a damaged shard: both must be ignored / redone
    (out / "shards" / ".shard_00001.npz.tmp999").write_bytes(b"half a shard")
    (out / "shards" / "shard_00002.npz").write_bytes(b"PK\x03\x04 damaged")

    events = []
    resumed = preprocess_celeba(tree.root, out, cfg(shard_size=3, n_workers=1), 32, keep_shards=True,
                                progress=False, callbacks=[lambda e, s: events.append((e, s))])
    reused = {s["shard"]: s["reused"] for e, s in events if e == "shard"}
    assert reused == {0: True, 1: False, 2: False, 3: False}
    assert first.stat().st_mtime_ns == mtime
    assert not list((out / "shards").glob(".shard_*"))

    whole = run(tree.root, tmp_path / "whole", 32, shard_size=5, n_workers=1)
    np.testing.assert_array_equal(resumed.images, whole.images)
    np.testing.assert_array_equal(resumed.landmarks, whole.landmarks)
    assert resumed.files == whole.files and resumed.skip_list == whole.skip_list

    # other settings: no shard is reused
    events.clear()
    preprocess_celeba(tree.root, out, cfg(shard_size=3, n_workers=1, margin=0.1), 32, progress=False,
                      callbacks=[lambda e, s: events.append((e, s))])
    assert not any(s["reused"] for e, s in events if e == "shard")

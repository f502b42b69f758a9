"""dlib's 68-point predictor as a 49-point annotator: model locator, world faces, a real photo."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelm.data.world import render_faces
from facelm.landmarks import flip_landmarks, nme
from facelm.models import dlib_landmarks as dl

SIZE = 128  # evaluation.dlib_size's default: the side small crops are upscaled to
PHOTO = Path(__file__).parent / "data" / "astronaut_face.jpg"  # public domain, see data/README.md

# Seven points placed by hand on the shipped photo (continuous pixel coordinates, pixel i spans
# [i, i + 1)), read off a 8x zoom with a 10 px grid, about +-2 px: outer and inner corners of
# the image-left eye, inner and outer corners of the image-right eye, nose tip, mouth corners.
HAND = np.array([[96.3, 101.9], [115.0, 103.0], [140.6, 103.8], [160.0, 103.0],
                 [126.9, 126.9], [106.9, 140.0], [148.75, 141.0]])
HAND_IDX_49 = [19, 22, 25, 28, 13, 31, 37]


@pytest.fixture(scope="module")
def world128():
    # seed 2: not one of the seeds (0, 1) the box rule was chosen on
    return render_faces(60, SIZE, seed=2)


@pytest.fixture(scope="module")
def photo():
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)[None]


# ----------------------------------------------------------------------------- model locator
def test_model_path_without_pkg_resources(monkeypatch):
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # any import of it now fails
    monkeypatch.delitem(sys.modules, dl.MODELS_PKG, raising=False)
    path = dl.model_path()
    assert path.name == dl.SHAPE_68 and path.stat().st_size > 50_000_000
    assert dl.MODELS_PKG not in sys.modules  # located, never imported
    assert dl.model_path("shape_predictor_5_face_landmarks.dat").is_file()


def test_model_path_from_spec_when_metadata_is_missing(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.delitem(sys.modules, dl.MODELS_PKG, raising=False)
    assert dl.model_path().is_file()
    assert dl.MODELS_PKG not in sys.modules


def test_missing_model_is_one_clear_error(monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install .*face-recognition-models"):
        dl.model_path("no_such_model.dat")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(name)))
    with pytest.raises(FileNotFoundError) as err:
        dl.model_path()
    assert dl.SHAPE_68 in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- rendered faces
def test_world_nme_with_landmark_boxes(world128):
    images, truth = world128
    points, found = dl.annotate(images, truth, size=SIZE, n_workers=1, progress=False)
    assert points.shape == (60, 49, 2) and points.dtype == np.float32
    assert found.all()
    # Measured 0.046-0.047 on 60 faces each of seeds 2, 3, 4 (0.049 on 200 of seed 1; the
    # issue saw ~0.06 with a plainer box). 0.055 leaves room for sampling, and fails if the
    # box rule or the coordinate convention breaks (the tight box gives 0.075).
    assert nme(points, truth).mean() < 0.055


def test_world_detector(world128):
    images, truth = world128
    points, found = dl.annotate(images, "detect", size=SIZE, n_workers=1, progress=False)
    boxes, found_boxes = dl.detect_boxes(images, size=SIZE, n_workers=1, progress=False)
    # measured: HOG finds 92-95% of world faces at 128 px, NME 0.054-0.058 on those
    assert found.mean() >= 0.85
    assert np.array_equal(found, found_boxes)
    assert nme(points[found], truth[found]).mean() < 0.07
    assert np.isnan(points[~found]).all() and np.isnan(boxes[~found]).all()
    # detector boxes passed back in reproduce the detect mode exactly
    again, found_again = dl.annotate(images, boxes, size=SIZE, n_workers=1, progress=False)
    assert np.array_equal(found_again, found) and np.array_equal(again[found], points[found])
    assert dl.face_found_rate(images, size=SIZE, n_workers=1, progress=False) == pytest.approx(found.mean())


def test_small_crops_are_upscaled_and_points_are_unit():
    images, truth = render_faces(20, 32, seed=2)
    points, found = dl.annotate(images, truth, size=SIZE, n_workers=1, progress=False)
    assert found.mean() >= 0.9  # the points come back in the 32 px crop's unit coordinates
    assert nme(points[found], truth[found]).mean() < 0.08  # measured 0.056-0.060 on 200
    _, at_native = dl.detect_boxes(images, size=32, n_workers=1, progress=False)
    assert not at_native.any()  # HOG's 80 px window never fits a 32 px face


def test_process_pool_matches_one_process():
    images, truth = render_faces(dl.CHUNK + 6, 32, seed=3)  # two chunks
    one = dl.annotate(images, "detect", size=SIZE, n_workers=1, progress=False)
    two = dl.annotate(images, "detect", size=SIZE, n_workers=2, progress=False)
    assert np.array_equal(one[1], two[1])
    assert np.array_equal(one[0], two[0], equal_nan=True)


# ----------------------------------------------------------------------------- not found
def test_noise_has_no_face():
    noise = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    points, found = dl.annotate(noise, "detect", size=SIZE, n_workers=1, progress=False)
    assert not found.any() and np.isnan(points).all()
    assert dl.face_found_rate(noise, size=SIZE, n_workers=1, progress=False) == 0.0


def test_points_outside_the_crop_are_not_found(world128):
    images, truth = world128
    inside = np.tile([0.1, 0.1, 0.9, 0.9], (3, 1))
    boxes = np.array([[-0.6, -0.6, 0.4, 0.4], [np.nan] * 4, [0.1, 0.1, 0.9, 0.9]])
    _, found_inside = dl.annotate(images[:3], inside, size=SIZE, n_workers=1, progress=False)
    points, found = dl.annotate(images[:3], boxes, size=SIZE, n_workers=1, progress=False)
    assert found_inside.all() and found.tolist() == [False, False, True]
    assert np.isnan(points[:2]).all()


def test_bad_inputs_raise(world128):
    images, truth = world128
    with pytest.raises(ValueError, match="uint8"):
        dl.annotate(images.astype(np.float32), size=SIZE)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        dl.annotate(images, truth[:, :5], size=SIZE)
    with pytest.raises(ValueError, match="detect"):
        dl.annotate(images, "haar", size=SIZE)


def test_box_from_landmarks_rule(world128):
    _, truth = world128
    boxes = dl.box_from_landmarks(truth[:5])
    lo, hi = truth[:5].min(axis=1), truth[:5].max(axis=1)
    side = boxes[:, 2:] - boxes[:, :2]
    assert np.allclose(side[:, 0], side[:, 1])
    assert np.allclose(side[:, 0], dl.BOX_SCALE * (hi - lo).max(axis=1), atol=1e-6)
    assert np.allclose((boxes[:, :2] + boxes[:, 2:]) / 2, (lo + hi) / 2, atol=1e-6)


# ----------------------------------------------------------------------------- a real photo
def test_real_photo(photo):
    points, found = dl.annotate(photo, "detect", size=SIZE, n_workers=1, progress=False)
    assert found.all()
    h, w = photo.shape[1:3]
    px = points[0, HAND_IDX_49] * np.array([w, h])
    iod = np.linalg.norm(HAND[0] - HAND[3])
    # measured 2.3 px (0.04 of the eye-corner distance), the hand placement's own accuracy
    assert np.linalg.norm(px - HAND, axis=1).mean() / iod < 0.07
    # the mirrored photo gives the mirrored points (measured NME 0.009)
    mirrored, found_m = dl.annotate(np.ascontiguousarray(photo[:, :, ::-1]), "detect", size=SIZE,
                                    n_workers=1, progress=False)
    assert found_m.all() and nme(flip_landmarks(mirrored), points)[0] < 0.03
    # a box from its own points lands on the same points (measured 0.005)
    again, found_again = dl.annotate(photo, points, size=SIZE, n_workers=1, progress=False)
    assert found_again.all() and nme(again, points)[0] < 0.03

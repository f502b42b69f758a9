"""A folder of images + 300-W .pts files (the detector's real-data source)."""
import cv2
import numpy as np
import pytest

from facelm.data.pts import load_pts_folder
from facelm.data.world import render_faces
from facelm.landmarks import IDX_68_TO_49, to_pixels, write_pts


def _folder(tmp_path, n=4):
    """Rendered faces pasted into larger photos, with 68-point .pts files (jaw points made up)."""
    faces, lms = render_faces(n, 96, seed=3)
    rng = np.random.default_rng(0)
    truth = []
    for i, (face, lm) in enumerate(zip(faces, lms)):
        photo = np.full((200, 260, 3), 90, np.uint8)
        x0, y0 = int(rng.integers(0, 150)), int(rng.integers(0, 90))
        photo[y0:y0 + 96, x0:x0 + 96] = face
        pts49 = to_pixels(lm, 96, 96) + [x0, y0]
        pts68 = np.zeros((68, 2))
        pts68[IDX_68_TO_49] = pts49
        pts68[:17] = pts49[[31] * 17]  # jaw and inner corners are dropped by the 68 -> 49 map
        pts68[[60, 64]] = pts49[[31, 37]]
        sub = tmp_path / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"face{i}.png"), photo[..., ::-1])
        write_pts(sub / f"face{i}.pts", pts68)
        truth.append(pts49)
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    write_pts(tmp_path / "a" / "broken.pts", np.zeros((68, 2)))
    return truth


def test_crops_hold_the_face_and_its_landmarks(tmp_path):
    _folder(tmp_path)
    images, points, report = load_pts_folder(tmp_path, size=32)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert points.shape == (4, 49, 2) and points.dtype == np.float32
    assert report["used"] == 4 and [s["file"] for s in report["skipped"]] == ["a/broken.png"]
    assert (points > 0.05).all() and (points < 0.95).all()
    # the crop is centred on the face: the eyes sit above the mouth, left of right
    assert (points[:, 19, 0] < points[:, 28, 0]).all() and (points[:, 19, 1] < points[:, 40, 1]).all()
    # the crop really shows the face: the lips are redder than the grey background there
    centre = images[:, 24:28, 14:18].reshape(4, -1, 3).mean(axis=1)
    assert (np.abs(centre - 90).max(axis=1) > 5).all()


def test_missing_or_empty_folder_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\.pts"):
        load_pts_folder(tmp_path / "nowhere", size=32)
    with pytest.raises(FileNotFoundError, match="no annotated images"):
        load_pts_folder(tmp_path, size=32)


def test_pts_files_without_an_image_are_listed_as_skipped(tmp_path):
    """A .pts file with no image of the same name is counted and named in the report (it was
    silently ignored before), beside the broken image."""
    _folder(tmp_path)
    write_pts(tmp_path / "a" / "lonely.pts", np.zeros((68, 2)))
    write_pts(tmp_path / "orphan.pts", np.zeros((68, 2)))
    images, _, report = load_pts_folder(tmp_path, size=32)
    assert len(images) == 4 and report["used"] == 4
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert reasons == {"a/broken.png": reasons["a/broken.png"], "a/lonely.pts": "no image of the same name",
                       "orphan.pts": "no image of the same name"}
    only = tmp_path / "only_pts"
    only.mkdir()
    write_pts(only / "x.pts", np.zeros((68, 2)))
    with pytest.raises(FileNotFoundError, match="1 .pts files without an image"):
        load_pts_folder(only, size=32)

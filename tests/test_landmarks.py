import numpy as np
import pytest

from facelm import landmarks as L


def test_68_to_49_layout():
    assert len(L.IDX_68_TO_49) == 49
    assert 60 not in L.IDX_68_TO_49 and 64 not in L.IDX_68_TO_49
    assert all(i >= 17 for i in L.IDX_68_TO_49)  # no jaw points
    assert tuple(L.IDX_68_TO_49[list(L.OUTER_EYE_CORNERS_49)]) == (36, 45)
    pts68 = np.arange(136, dtype=np.float32).reshape(68, 2)
    assert np.array_equal(L.to_49(pts68)[19], pts68[36])


def test_flip_permutation_is_an_involution_and_swaps_sides():
    perm = L.FLIP_PERM_49
    assert np.array_equal(perm[perm], np.arange(49))
    g = L.GROUPS_49
    assert sorted(perm[g["right_eye"]]) == g["left_eye"]
    assert sorted(perm[g["right_brow"]]) == g["left_brow"]
    assert perm[19] == 28 and perm[31] == 37  # outer eye corners, mouth corners
    assert all(perm[i] == i for i in g["nose_bridge"])


def test_flip_faces_moves_pixels_and_points_together():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 16, 16, 3), np.uint8)
    lm = rng.uniform(0.1, 0.9, (1, 49, 2)).astype(np.float32)
    px = np.floor(lm[0, 19] * 16).astype(int)
    img[0, px[1], px[0]] = 255  # mark the right eye's outer corner
    fimg, flm = L.flip_faces(img, lm)
    fx = np.floor(flm[0, 28] * 16).astype(int)  # it becomes the left eye's outer corner
    assert fimg[0, fx[1], fx[0]].max() == 255
    assert np.allclose(L.flip_landmarks(flm), lm)


def test_pts_round_trip(tmp_path):
    pts = np.random.default_rng(1).uniform(0, 100, (68, 2))
    L.write_pts(tmp_path / "a.pts", pts)
    text = (tmp_path / "a.pts").read_text().splitlines()
    assert text[:3] == ["version: 1", "n_points:  68", "{"] and text[-1] == "}"
    # 1-based pixel centres in the file
    assert float(text[3].split()[0]) == pytest.approx(pts[0, 0] + 0.5, abs=1e-3)
    assert np.allclose(L.read_pts(tmp_path / "a.pts"), pts, atol=1e-3)


def test_pts_rejects_inconsistent_count(tmp_path):
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    with pytest.raises(ValueError, match="n_points 3"):
        L.read_pts(tmp_path / "b.pts")


def test_nme_normalises_by_outer_eye_corners():
    target = np.zeros((1, 49, 2))
    target[0, 19] = [0.2, 0.5]
    target[0, 28] = [0.6, 0.5]  # inter-ocular distance 0.4
    pred = target + np.array([0.04, 0.0])  # every point 0.04 off
    assert L.nme(pred, target)[0] == pytest.approx(0.1)
    # non-square images are measured in pixels
    assert L.nme(pred, target, image_size=(100, 50))[0] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        L.nme(pred[:, :7], target[:, :7])
    five = np.array([[[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]])
    assert L.nme(five + [0.0, 0.04], five)[0] == pytest.approx(0.1)  # eye centres 0.4 apart
    flipped = L.flip_landmarks(five)
    assert np.allclose(flipped[0, 0], [0.3, 0.4]) and np.allclose(flipped[0, 3], [0.35, 0.8])


def test_ced_auc_failure():
    errors = np.array([0.01, 0.02, 0.05, 0.2])
    t, f = L.ced(errors, np.array([0.0, 0.02, 0.08]))
    assert list(f) == [0.0, 0.5, 0.75]
    assert L.failure_rate(errors, 0.08) == 0.25
    assert L.auc(np.zeros(10)) == pytest.approx(1.0)
    assert L.auc(np.full(10, 1.0)) == 0.0
    assert 0.4 < L.auc(errors) < 0.75


def test_draw_landmarks_marks_the_points():
    img = np.zeros((32, 32, 3), np.uint8)
    lm = np.full((49, 2), 0.5, np.float32)
    lm[0] = [0.1, 0.1]
    out = L.draw_landmarks(img, lm, scale=4)
    assert out.shape == (128, 128, 3)
    assert out[int(0.1 * 128), int(0.1 * 128)].any() and out[64, 64].any()
    assert not out[120, 5].any()


def test_interpolation_and_smoothness():
    import torch

    from facelm.evaluation.results import displacements, interpolate, smoothness

    za, zb = torch.zeros(64), torch.ones(64)
    path = interpolate(za, zb, 14)
    assert path.shape == (16, 64) and torch.equal(path[0], za) and torch.equal(path[-1], zb)
    even = np.linspace(0, 1, 16)[:, None, None] * np.ones((16, 49, 2))
    assert smoothness(even) == pytest.approx(1.0)
    jumpy = even.copy()
    jumpy[8:] += 0.5  # one big leap in the middle
    assert smoothness(jumpy) > 5
    assert displacements(even).shape == (15,)

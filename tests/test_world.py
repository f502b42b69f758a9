"""The rendered face world: shapes, determinism, sharding, landmarks on the drawn parts, pose, mirroring."""
import math

import cv2
import numpy as np
import pytest

from facelm.config import WorldParams, replace
from facelm.data.world import FaceParams, mirror_params, render_face, render_faces, sample_params
from facelm.landmarks import FLIP_PERM_49, GROUPS_49, flip_faces

PARTS = {
    "brow": GROUPS_49["right_brow"] + GROUPS_49["left_brow"],
    "eye": GROUPS_49["right_eye"] + GROUPS_49["left_eye"],
    "lip": GROUPS_49["outer_lip"] + GROUPS_49["inner_lip"],
    "nose": GROUPS_49["nose_bridge"] + GROUPS_49["nose_base"],
}


def faces(n, seed=0, **ranges):
    world = replace(WorldParams(), **ranges)
    return [sample_params(np.random.default_rng([seed, i]), world) for i in range(n)]


def coverage(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Largest part coverage among the (up to) 4 pixels whose centres surround each unit-coordinate point."""
    s = mask.shape[0]
    x, y = points[:, 0] * s - 0.5, points[:, 1] * s - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, s - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, s - 2)
    return np.max([mask[y0 + dy, x0 + dx] for dy in (0, 1) for dx in (0, 1)], axis=0)


def eye_width(lm, group):
    a, b = lm[GROUPS_49[group][0]], lm[GROUPS_49[group][3]]
    return float(np.linalg.norm(a - b))


# ----------------------------------------------------------------------------- basics
@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_ranges(size):
    images, lm, meta = render_faces(6, size, seed=1, return_meta=True)
    assert images.shape == (6, size, size, 3) and images.dtype == np.uint8
    assert lm.shape == (6, 49, 2) and lm.dtype == np.float32
    assert np.isfinite(lm).all() and lm.min() > 0 and lm.max() < 1
    # real pictures, not blank frames: every face has contrast, and faces differ from each other
    assert all(im.std() > 15 for im in images)
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 10
    for key in ("yaw", "pitch", "roll", "mouth_open", "smile"):
        assert meta[key].shape == (6,)
    assert meta["light"].shape == (6, 3)


def test_empty_and_argument_checks():
    im, lm = render_faces(0, 32, seed=0)
    assert im.shape == (0, 32, 32, 3) and lm.shape == (0, 49, 2)
    for bad in (31, 129, 32.0, True, "32"):
        with pytest.raises(ValueError, match="size"):
            render_faces(1, bad, seed=0)
    with pytest.raises(ValueError, match="n must"):
        render_faces(-1, 32, seed=0)
    with pytest.raises(ValueError, match="start"):
        render_faces(1, 32, seed=0, start=-2)
    for name in ("yaw_max", "pitch_max", "roll_max"):
        with pytest.raises(ValueError, match=name):
            render_faces(1, 32, seed=0, world=replace(WorldParams(), **{name: -1.0}))
        with pytest.raises(ValueError, match=name):
            sample_params(np.random.default_rng(0), replace(WorldParams(), **{name: 90.0}))
    with pytest.raises(ValueError, match="supersample"):
        render_face(FaceParams(), 32, supersample=0)
    with pytest.raises(ValueError, match="supersample"):
        render_faces(0, 32, seed=0, supersample=9)
    with pytest.raises(ValueError, match="params"):
        render_face({"yaw": 0}, 32)


def test_pose_limits_come_from_the_world_section():
    """The pose range is the config section's: a narrower section gives narrower poses, and no
    section means ``WorldParams()``'s defaults (the one place they are written)."""
    wide = faces(200, seed=6)
    narrow = faces(200, seed=6, yaw_max=10.0, pitch_max=5.0, roll_max=2.0)
    d = WorldParams()
    assert max(abs(p.yaw) for p in wide) <= d.yaw_max and max(abs(p.yaw) for p in wide) > 10
    assert max(abs(p.yaw) for p in narrow) <= 10 and max(abs(p.roll) for p in narrow) <= 2
    a = render_faces(3, 32, seed=1)
    b = render_faces(3, 32, seed=1, world=WorldParams())
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_determinism_and_sharding():
    a_img, a_lm = render_faces(10, 32, seed=3)
    b_img, b_lm = render_faces(10, 32, seed=3)
    assert a_img.tobytes() == b_img.tobytes() and a_lm.tobytes() == b_lm.tobytes()
    c_img, _ = render_faces(10, 32, seed=4)
    assert not np.array_equal(a_img, c_img)
    # face i depends only on (seed, i): any split into calls gives the same faces
    parts = [render_faces(4, 32, seed=3, start=0), render_faces(6, 32, seed=3, start=4)]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), a_img)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), a_lm)
    one_img, one_lm = render_faces(1, 32, seed=3, start=7)
    assert np.array_equal(one_img[0], a_img[7]) and np.array_equal(one_lm[0], a_lm[7])


def test_pose_distribution():
    ps = faces(400, seed=5)
    yaw = np.array([p.yaw for p in ps])
    roll = np.array([p.roll for p in ps])
    assert np.abs(yaw).max() <= 40 and np.abs(np.array([p.pitch for p in ps])).max() <= 20
    assert np.abs(roll).max() <= 25
    # mostly near frontal, extremes rarer but present
    assert (np.abs(yaw) < 20).mean() > 0.7 and (np.abs(yaw) > 25).mean() > 0.03
    assert all(p.yaw == p.pitch == p.roll == 0 for p in faces(5, yaw_max=0, pitch_max=0, roll_max=0))
    # expressions vary too
    assert 0.2 < np.mean([p.mouth_open > 0 for p in ps]) < 0.6


# ------------------------------------------------------------------ landmarks vs drawing
@pytest.mark.parametrize("size,n", [(32, 40), (64, 30), (128, 12)])
def test_landmarks_lie_on_their_parts(size, n):
    lowest = {part: 1.0 for part in PARTS}
    for p in faces(n, seed=7):
        im, lm, masks = render_face(p, size, return_masks=True)
        assert lm.min() > 0 and lm.max() < 1
        for part, idx in PARTS.items():
            lowest[part] = min(lowest[part], coverage(masks[part], lm[idx]).min())
        # and not on some other part: eye points are off the lips, lip points off the eyes
        assert coverage(masks["lip"], lm[PARTS["eye"]]).max() == 0
        assert coverage(masks["eye"], lm[PARTS["lip"]]).max() == 0
    assert all(v >= 0.1 for v in lowest.values()), lowest


def test_part_check_catches_misplaced_points():
    # the same check fails when the points are a few pixels off their part
    misses = 0
    for p in faces(10, seed=8):
        im, lm, masks = render_face(p, 64, return_masks=True)
        moved = lm + (0.0, 0.06)  # ~4 px down at 64 px
        misses += coverage(masks["brow"], moved[PARTS["brow"]]).min() < 0.1
        misses += coverage(masks["eye"], moved[PARTS["eye"]]).min() < 0.1
    assert misses == 20


@pytest.mark.parametrize("yaw,pitch,roll", [(s * 40, t * 20, u * 25) for s in (-1, 1) for t in (-1, 1) for u in (-1, 1)]
                         + [(60, 40, 45), (-60, -40, -45)])
def test_landmarks_inside_at_extreme_poses(yaw, pitch, roll):
    for p in faces(4, seed=9):
        p = p.copy(yaw=yaw, pitch=pitch, roll=roll, scale=1.12, shift_x=0.045, shift_y=0.045,
                   mouth_open=1.0)
        _, lm = render_face(p, 32)
        assert lm.min() >= 0.0 and lm.max() <= 1.0


# ---------------------------------------------------------------------------------- pose
def test_yaw_narrows_the_far_eye():
    base = faces(1, seed=10, yaw_max=0, pitch_max=0, roll_max=0)[0].copy(jitter=np.zeros((68, 3)), gaze_x=0.0)
    ratio = {}
    for yaw in (-30, 0, 30):
        _, lm = render_face(base.copy(yaw=yaw), 64)
        ratio[yaw] = eye_width(lm, "left_eye") / eye_width(lm, "right_eye")
        if yaw:  # the nose tip swings to the side the face turns to
            eyes_mid = lm[GROUPS_49["right_eye"] + GROUPS_49["left_eye"], 0].mean()
            assert np.sign(lm[13, 0] - eyes_mid) == np.sign(yaw)
    assert abs(ratio[0] - 1) < 0.02
    # yaw > 0 turns the face to the image right: its left eye (image right) is further away
    assert ratio[30] < 0.85 and ratio[-30] > 1 / 0.85


@pytest.mark.parametrize("roll", [-25, -10, 5, 25])
def test_roll_rotates_the_eye_line(roll):
    base = FaceParams(roll=roll)
    _, lm = render_face(base, 64)
    (x0, y0), (x1, y1) = lm[19], lm[28]
    assert abs(math.degrees(math.atan2(y1 - y0, x1 - x0)) - roll) < 1.0


def test_pitch_moves_the_nose_against_the_eyes():
    drop = {}
    for pitch in (-20, 0, 20):
        _, lm = render_face(FaceParams(pitch=pitch), 64)
        drop[pitch] = lm[13, 1] - lm[GROUPS_49["right_eye"] + GROUPS_49["left_eye"], 1].mean()
    assert drop[20] < drop[0] - 0.01 < drop[-20] - 0.02  # looking up lifts the nose tip towards the eyes


# ------------------------------------------------------------------------------ mirroring
def test_flip_permutation_swaps_the_eyes():
    assert sorted(FLIP_PERM_49[GROUPS_49["right_eye"]]) == GROUPS_49["left_eye"]
    assert FLIP_PERM_49[19] == 28 and FLIP_PERM_49[31] == 37


def test_mirror_params_render_the_flipped_face():
    for p in faces(6, seed=11):
        im, lm = render_face(p, 64)
        flip_im, flip_lm = flip_faces(im, lm)
        m_im, m_lm = render_face(mirror_params(p), 64)
        assert np.abs(flip_lm - m_lm).max() < 1e-5
        diff = np.abs(flip_im.astype(int) - m_im.astype(int))
        assert diff.mean() < 0.3 and np.percentile(diff, 99.9) <= 8  # anti-aliasing differences only
        # and a face is not its own mirror image (the check has teeth)
        assert np.abs(flip_im.astype(int) - im.astype(int)).mean() > 3
    # flipped landmarks still sit on the flipped picture's parts
    p = faces(1, seed=12)[0]
    _, _, masks = render_face(p, 64, return_masks=True)
    _, lm = render_face(p, 64)
    flip_lm = flip_faces(np.zeros((64, 64, 3), np.uint8), lm)[1]
    for part, idx in PARTS.items():
        assert coverage(masks[part][:, ::-1], flip_lm[idx]).min() >= 0.1


# ---------------------------------------------------------------------------------- sizes
def test_sizes_agree():
    for p in faces(4, seed=13):
        out = {s: render_face(p, s, return_masks=True) for s in (32, 64, 128)}
        for s in (64, 128):
            assert np.abs(out[s][1] - out[32][1]).max() * 32 < 1.0  # within a pixel at 32 px
            for part in ("eye", "lip", "skin"):
                small = cv2.resize(out[s][2][part], (32, 32), interpolation=cv2.INTER_AREA)
                assert np.abs(small - out[32][2][part]).mean() < 0.03
        small = cv2.resize(out[128][0], (32, 32), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(small - out[32][0]).mean() < 4

"""Tests of the landmark detector (facelm.models.detector), its trainer (facelm.training.detector)
and augmentation (facelm.training.augment) on a synthetic task whose landmarks are visible."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelm.config import DetectorParams, replace
from facelm.landmarks import FLIP_PERM_49, flip_faces, flip_landmarks, nme
from facelm.models.detector import LandmarkDetector, load_detector, predict_landmarks, save_detector
from facelm.training.augment import AugmentConfig, apply_transform, random_transform
from facelm.training.detector import CKPT_NAME, train_detector


def _cfg(**changes) -> DetectorParams:
    """The default detector section with some fields changed (steps, batch_size, ...)."""
    return replace(DetectorParams(), **changes)


def _detector(size: int = 32, n_points: int = 49, **changes) -> LandmarkDetector:
    return LandmarkDetector.from_params(_cfg(**changes), size, n_points)


def _template(rng: np.random.Generator) -> np.ndarray:
    """A fixed 49-point 'face' with the outer eye corners (19, 28) well apart."""
    t = rng.uniform(0.32, 0.68, (49, 2))
    t[19], t[28] = (0.3, 0.42), (0.7, 0.42)
    return t


def _render(points: np.ndarray, size: int, sigma_px: float = 0.8, noise: float = 6.0,
            seed: int = 0) -> np.ndarray:
    """Each point as a bright Gaussian blob (colour by index) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    c = (np.arange(size) + 0.5) / size  # pixel centres in unit coordinates
    img = np.zeros((len(points), size, size, 3))
    colours = np.stack([np.linspace(1, 0.3, 49), np.linspace(0.3, 1, 49), np.full(49, 0.8)], 1)
    for k in range(points.shape[1]):
        gx = np.exp(-(c[None, :] - points[:, k, 0:1]) ** 2 / (2 * (sigma_px / size) ** 2))
        gy = np.exp(-(c[None, :] - points[:, k, 1:2]) ** 2 / (2 * (sigma_px / size) ** 2))
        img += (gy[:, :, None] * gx[:, None, :])[..., None] * colours[k % 49]
    img = 20 + 230 * np.clip(img, 0, 1) + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def blob_faces(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random similarity transforms of one template, rendered as blobs."""
    rng = np.random.default_rng(seed)
    tmpl = _template(np.random.default_rng(1234)) - 0.5
    a = rng.uniform(-0.35, 0.35, n)
    s = rng.uniform(0.8, 1.15, n)
    rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
    pts = np.einsum("nij,pj->npi", rot * s[:, None, None], tmpl) + 0.5 + rng.uniform(-0.07, 0.07, (n, 1, 2))
    pts = pts.astype(np.float32)
    return _render(pts, size, seed=seed + 1), pts


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs: one thread is about as fast as two and immune to a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    tr = blob_faces(1024, seed=0)
    te = blob_faces(256, seed=99)
    return tr, te


# ------------------------------------------------------------------------------ training
def test_training_beats_mean_shape(data):
    (x, y), (xt, yt) = data
    torch.manual_seed(0)
    res = train_detector(x, y, _cfg(steps=250, batch_size=32), seed=0, device="cpu", progress=False,
                         val_images=xt, val_landmarks=yt, eval_every=125)
    pred = predict_landmarks(res.model, xt)
    assert pred.shape == yt.shape and pred.dtype == np.float32
    trained = nme(pred, yt).mean()
    mean_shape = nme(np.broadcast_to(y.mean(0), yt.shape), yt).mean()
    untrained = nme(predict_landmarks(_detector(), xt), yt).mean()
    assert mean_shape > 0.1 and untrained > 0.1
    assert trained < 0.3 * mean_shape, (trained, mean_shape)
    assert len(res.losses) == 250 and np.mean(res.losses[-50:]) < 0.5 * np.mean(res.losses[:20])
    assert [s for s, _ in res.val_nme] == [125, 250]
    assert res.val_nme[-1][1] == pytest.approx(trained, rel=1e-4)


def test_determinism_on_cpu(data):
    (x, y), _ = data
    x, y = x[:200], y[:200]
    cfg, kw = _cfg(steps=30, batch_size=16), dict(seed=3, device="cpu", progress=False)
    a = train_detector(x, y, cfg, **kw)
    b = train_detector(x, y, cfg, **kw)
    assert a.losses == b.losses
    pa, pb = predict_landmarks(a.model, x[:20]), predict_landmarks(b.model, x[:20])
    np.testing.assert_array_equal(pa, pb)
    c = train_detector(x, y, cfg, **{**kw, "seed": 4})
    assert c.losses != a.losses
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    train_detector(x, y, cfg, **kw)
    assert torch.equal(torch.rand(3), before)  # the global RNG is left alone
    events = []
    train_detector(x, y, replace(cfg, steps=3), **kw, callbacks=[lambda e, s: events.append((e, s["step"]))])
    assert events == [("step", 1), ("step", 2), ("step", 3), ("end", 3)]


def test_augment_switch_comes_from_the_config(data):
    (x, y), _ = data
    kw = dict(seed=0, device="cpu", progress=False)
    on = train_detector(x[:64], y[:64], _cfg(steps=4, batch_size=8), **kw)
    off = train_detector(x[:64], y[:64], _cfg(steps=4, batch_size=8, augment=False), **kw)
    again = train_detector(x[:64], y[:64], _cfg(steps=4, batch_size=8, augment=False), **kw)
    assert off.losses == again.losses and off.losses != on.losses


def test_resume_continues_the_same_run(data, tmp_path):
    (x, y), _ = data
    x, y = x[:200], y[:200]
    cfg, kw = _cfg(steps=30, batch_size=16), dict(seed=5, device="cpu", progress=False)
    full = train_detector(x, y, cfg, **kw)

    class Stop(Exception):
        pass

    def stop_at_20(event, state):
        if event == "step" and state["step"] == 21:
            raise Stop

    with pytest.raises(Stop):
        train_detector(x, y, cfg, **kw, checkpoint_dir=tmp_path, checkpoint_every=10, callbacks=[stop_at_20])
    assert torch.load(tmp_path / CKPT_NAME, weights_only=True)["step"] == 20
    resumed = train_detector(x, y, cfg, **kw, checkpoint_dir=tmp_path, checkpoint_every=10)
    assert resumed.losses == full.losses
    np.testing.assert_array_equal(predict_landmarks(resumed.model, x[:8]),
                                  predict_landmarks(full.model, x[:8]))
    with pytest.raises(ValueError, match="other data or settings"):
        train_detector(x, y, replace(cfg, lr=1e-3), **kw, checkpoint_dir=tmp_path)


# -------------------------------------------------------------------------- augmentation
def _centroids(img: torch.Tensor, size: int) -> torch.Tensor:
    """Intensity centroid (unit coordinates) of the single blob in each image [B, 3, S, S]."""
    w = img.mean(1)
    w = (w - w.amin(dim=(1, 2), keepdim=True)).clamp_min(0)
    w = w * (w > 0.1 * w.amax(dim=(1, 2), keepdim=True))
    c = (torch.arange(size) + 0.5) / size
    total = w.sum((1, 2))
    return torch.stack([(w * c[None, None, :]).sum((1, 2)) / total,
                        (w * c[None, :, None]).sum((1, 2)) / total], -1)


@pytest.mark.parametrize("mirror", [False, True])
def test_augmentation_moves_points_with_the_image(mirror):
    """Blob k alone in image k; after the transform, its centroid is where the landmarks say."""
    size, p = 64, 49
    pts = np.random.default_rng(7).uniform(0.3, 0.7, (1, p, 2)).astype(np.float32)
    one = np.stack([_render(pts[:, k:k + 1], size, sigma_px=1.5, noise=0)[0] for k in range(p)])
    x = torch.from_numpy(one).permute(0, 3, 1, 2).float() / 127.5 - 1
    lm = torch.from_numpy(pts).repeat(p, 1, 1)
    assert torch.allclose(_centroids(x, size), lm[0], atol=0.1 / size)
    # a known transform: mirror, rotate 20 deg, shrink to 0.9, move right 5 % and up 3 %
    t = {"angle": torch.full((p,), math.radians(20)), "zoom": torch.full((p,), 0.9),
         "shift": torch.tensor([[0.05, -0.03]]).repeat(p, 1), "mirror": torch.full((p,), mirror),
         "gain": torch.ones(p), "offset": torch.zeros(p)}
    y, q = apply_transform(x, lm, t, FLIP_PERM_49)
    # image k shows original point k, which is point perm[k] of the new (mirrored) layout
    new_index = FLIP_PERM_49 if mirror else np.arange(p)
    expected = q[torch.arange(p), torch.as_tensor(new_index)]
    assert torch.allclose(_centroids(y, size), expected, atol=0.15 / size)  # < 0.15 px
    # by hand, for one point: mirror about x = 0.5, rotate about the centre, scale, shift
    v = pts[0, 0] - 0.5
    if mirror:
        v[0] = -v[0]
    rot = np.array([[math.cos(math.radians(20)), -math.sin(math.radians(20))],
                    [math.sin(math.radians(20)), math.cos(math.radians(20))]])
    by_hand = 0.5 + 0.9 * rot @ v + np.array([0.05, -0.03])
    np.testing.assert_allclose(q[0, new_index[0]].numpy(), by_hand, atol=1e-5)


def test_pure_mirror_matches_flip_faces():
    x, y = blob_faces(4, size=32, seed=3)
    t = {"angle": torch.zeros(4), "zoom": torch.ones(4), "shift": torch.zeros(4, 2),
         "mirror": torch.ones(4, dtype=torch.bool), "gain": torch.ones(4), "offset": torch.zeros(4)}
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    out, q = apply_transform(xt, torch.from_numpy(y), t, FLIP_PERM_49)
    fx, fy = flip_faces(x, y)
    np.testing.assert_allclose(q.numpy(), fy, atol=1e-6)
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), fx / 127.5 - 1, atol=1e-5)


def test_random_transform_is_seeded_and_bounded():
    cfg = AugmentConfig()
    a = random_transform(500, torch.Generator().manual_seed(1), cfg)
    b = random_transform(500, torch.Generator().manual_seed(1), cfg)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert a["angle"].abs().max() <= math.radians(cfg.rotate)
    assert a["shift"].abs().max() <= cfg.shift
    assert 0.3 < a["mirror"].float().mean() < 0.7
    assert not random_transform(50, torch.Generator(), cfg, can_flip=False)["mirror"].any()


def test_flip_test_averages_with_the_mirror_image(data):
    (x, y), _ = data
    model = train_detector(x[:64], y[:64], _cfg(steps=5, batch_size=8), seed=0, device="cpu",
                           progress=False).model
    plain = predict_landmarks(model, x[:6], flip_test=False)
    mirrored = flip_landmarks(predict_landmarks(model, flip_faces(x[:6], y[:6])[0], flip_test=False))
    both = predict_landmarks(model, x[:6])
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert np.abs(plain - mirrored).max() > 1e-4  # so the average is not trivially equal


# ------------------------------------------------------------------------ model and files
@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_at_each_size(size):
    m = _detector(size, 5, width=4)
    assert (m.size, m.n_points) == (size, 5)
    out = predict_landmarks(m, np.zeros((3, size, size, 3), np.uint8), batch_size=2)
    assert out.shape == (3, 5, 2) and out.dtype == np.float32


def test_other_point_counts_train(data):
    (x, y), _ = data
    cfg = _cfg(steps=3, batch_size=8)
    res = train_detector(x[:64], y[:64, :5], cfg, seed=0, device="cpu", progress=False,
                         val_images=x[:16], val_landmarks=y[:16, :5])
    assert predict_landmarks(res.model, x[:2]).shape == (2, 5, 2)
    res = train_detector(x[:64], y[:64, :7], cfg, seed=0, device="cpu", progress=False)
    assert res.model.config.n_points == 7


def test_memmap_input(data, tmp_path):
    (x, y), _ = data
    np.save(tmp_path / "x.npy", x[:100])
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    kw = dict(seed=0, device="cpu", progress=False)
    resident = train_detector(mm, y[:100], _cfg(steps=5, batch_size=8), **kw)
    streamed = train_detector(mm, y[:100], _cfg(steps=5, batch_size=8), **kw, max_resident_bytes=0)
    assert resident.losses == streamed.losses
    np.testing.assert_array_equal(predict_landmarks(resident.model, mm, batch_size=7),
                                  predict_landmarks(resident.model, np.array(mm), batch_size=7))


def test_save_load_round_trip(data, tmp_path):
    (x, y), _ = data
    model = train_detector(x[:64], y[:64], _cfg(steps=5, batch_size=8, width=8), seed=0,
                           device="cpu", progress=False).model
    assert (model.config.width, model.config.depth) == (8, DetectorParams().depth)
    save_detector(tmp_path / "sub" / "det.safetensors", model)
    back = load_detector(tmp_path / "sub" / "det.safetensors", device="cpu")
    assert back.config == model.config and not back.training
    np.testing.assert_array_equal(predict_landmarks(back, x[:10]), predict_landmarks(model, x[:10]))
    with pytest.raises(FileNotFoundError, match="nope"):
        load_detector(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors(data):
    (x, y), _ = data
    cfg, kw = _cfg(steps=1), dict(seed=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="uint8"):
        train_detector(x.astype(np.float32), y, cfg, **kw)
    with pytest.raises(ValueError, match="landmarks"):
        train_detector(x, y[:10], cfg, **kw)
    with pytest.raises(ValueError, match="val_"):
        train_detector(x, y, cfg, val_images=x[:4], **kw)
    with pytest.raises(ValueError, match="val_images are 64 px"):
        train_detector(x, y, cfg, val_images=np.zeros((2, 64, 64, 3), np.uint8),
                       val_landmarks=y[:2], **kw)
    with pytest.raises(ValueError, match="val_landmarks have 5 points"):
        train_detector(x, y, cfg, val_images=x[:2], val_landmarks=y[:2, :5], **kw)
    with pytest.raises(ValueError, match="eval_every"):
        train_detector(x, y, cfg, eval_every=-1, **kw)
    with pytest.raises(ValueError, match="NaN"):
        bad = y.copy()
        bad[0, 0, 0] = np.nan
        train_detector(x, bad, cfg, **kw)
    with pytest.raises(ValueError, match="size"):
        _detector(size=48)
    with pytest.raises(ValueError, match="images"):
        predict_landmarks(_detector(size=32), np.zeros((2, 64, 64, 3), np.uint8))

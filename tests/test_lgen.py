"""Tests of facelm.models.lgen: Table I architecture, training, checkpoint/resume, files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facelm.models.lgen import CKPT_NAME, LGen, load_lgen, n_params, save_lgen, train_lgen


pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int, n_points: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks that are a smooth function of z, inside (0, 1)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, (n, 64)).astype(np.float32)
    a = np.random.default_rng(99).normal(size=(64, 2 * n_points)).astype(np.float32) / 8
    y = 1 / (1 + np.exp(-2 * np.sin(z @ a)))
    return z, y.reshape(n, n_points, 2).astype(np.float32)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_table_one_parameter_count_and_layers():
    model = LGen()
    assert n_params(model) == 53_986
    widths = [(m.in_features, m.out_features) for m in model.modules()
              if isinstance(m, torch.nn.Linear)]
    assert widths == [(64, 128), (128, 128), (128, 128), (128, 98)]
    assert LGen(n_points=5).net[-2].out_features == 10  # CelebA's 5 points
    assert n_params(LGen(hidden=128)) == n_params(LGen(hidden=[128, 128, 128])) == 53_986
    assert n_params(LGen(hidden=[8])) == 64 * 8 + 8 + 8 * 98 + 98


def test_output_shape_and_range():
    z = torch.rand(7, 64) * 2 - 1
    out = LGen()(z)
    assert out.shape == (7, 49, 2)
    assert out.min() > 0 and out.max() < 1
    assert LGen(n_points=5)(z).shape == (7, 5, 2)
    assert _same_weights(LGen(seed=3), LGen(seed=3)) and not _same_weights(LGen(seed=3), LGen())


def test_training_learns_a_smooth_mapping():
    z, y = _pairs(768)
    vz, vy = _pairs(256, seed=1)
    events = []
    res = train_lgen(z, y, epochs=12, val_z=vz, val_landmarks=vy, progress=False,
                     callbacks=[lambda ev, st: events.append((ev, st["epoch"]))])
    assert res.loss.shape == res.val_loss.shape == (12,)
    assert res.loss[-1] < 0.2 * res.loss[0]
    assert res.val_loss.min() < 0.2 * res.val_loss[0]
    # the kept model is the best-validation one
    assert res.best_epoch == int(np.argmin(res.val_loss)) + 1
    with torch.no_grad():
        val = torch.nn.functional.mse_loss(res.model(torch.from_numpy(vz)), torch.from_numpy(vy))
    assert float(val) == pytest.approx(float(res.val_loss.min()), rel=1e-5)
    assert [e for e, _ in events] == ["epoch"] * 12 + ["end"]
    assert not res.model.training


def test_drop_last_and_batch_size_change_the_steps():
    z, y = _pairs(40)
    a = train_lgen(z, y, epochs=1, batch_size=16, progress=False)
    b = train_lgen(z, y, epochs=1, batch_size=16, drop_last=True, progress=False)
    assert not _same_weights(a.model, b.model)
    assert a.val_loss is None and a.best_epoch is None


def test_resume_equals_uninterrupted(tmp_path):
    z, y = _pairs(300)
    vz, vy = _pairs(64, seed=1)
    kw = dict(val_z=vz, val_landmarks=vy, batch_size=16, progress=False)
    straight = train_lgen(z, y, epochs=6, **kw)
    first = train_lgen(z, y, epochs=3, checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    assert (tmp_path / CKPT_NAME).is_file() and len(first.loss) == 3
    resumed = train_lgen(z, y, epochs=6, checkpoint_dir=tmp_path, **kw)
    assert _same_weights(straight.model, resumed.model)
    np.testing.assert_array_equal(straight.loss, resumed.loss)
    np.testing.assert_array_equal(straight.val_loss, resumed.val_loss)
    assert straight.best_epoch == resumed.best_epoch
    ck = torch.load(tmp_path / CKPT_NAME, weights_only=True)
    assert ck["epoch"] == 6


def test_checkpoint_of_other_config_is_not_resumed(tmp_path):
    z, y = _pairs(64)
    train_lgen(z, y, epochs=2, lr=1e-3, checkpoint_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="afresh"):
        res = train_lgen(z, y, epochs=2, checkpoint_dir=tmp_path, progress=False)
    assert _same_weights(res.model, train_lgen(z, y, epochs=2, progress=False).model)


def test_save_load_round_trip(tmp_path):
    model = LGen(n_points=5, hidden=32, seed=4)
    save_lgen(tmp_path / "lgen.safetensors", model)
    back = load_lgen(tmp_path / "lgen.safetensors", "cpu")
    assert back.config() == {"n_points": 5, "z_dim": 64, "hidden": [32, 32, 32]}
    assert _same_weights(model, back) and not back.training
    z = torch.rand(3, 64)
    assert torch.equal(model(z), back(z))
    with pytest.raises(FileNotFoundError):
        load_lgen(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("kw, match", [
    (dict(landmarks=np.zeros((10, 5), np.float32)), "landmarks"),
    (dict(z=np.zeros((9, 64), np.float32)), "same"),
    (dict(val_z=np.zeros((4, 64), np.float32)), "both"),
    (dict(epochs=0), "epochs"),
    (dict(z=np.full((10, 64), np.nan, np.float32)), "finite"),
])
def test_bad_arguments_raise(kw, match):
    args = dict(z=np.zeros((10, 64), np.float32), landmarks=np.zeros((10, 5, 2), np.float32))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        train_lgen(args.pop("z"), args.pop("landmarks"), progress=False, **args)

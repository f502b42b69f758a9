"""Tests of L-Gen: Table I architecture (facelm.models.lgen), training, checkpoint/resume and
files (facelm.training.lgen)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facelm.config import BEGANParams, LGenParams, replace
from facelm.models.common import count_params
from facelm.models.lgen import LGen, load_lgen, save_lgen
from facelm.training.lgen import WEIGHTS_NAME, checkpoint_path, train_lgen


pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int, n_points: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks that are a smooth function of z, inside (0, 1)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, (n, 64)).astype(np.float32)
    a = np.random.default_rng(99).normal(size=(64, 2 * n_points)).astype(np.float32) / 8
    y = 1 / (1 + np.exp(-2 * np.sin(z @ a)))
    return z, y.reshape(n, n_points, 2).astype(np.float32)


def _cfg(**changes) -> LGenParams:
    return replace(LGenParams(), **changes)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_table_one_parameter_count_and_layers():
    model = LGen(z_dim=64)  # the paper's z
    assert count_params(model) == 53_986
    widths = [(m.in_features, m.out_features) for m in model.modules()
              if isinstance(m, torch.nn.Linear)]
    assert widths == [(64, 128), (128, 128), (128, 128), (128, 98)]
    assert LGen(n_points=5).net[-2].out_features == 10  # CelebA's 5 points
    assert count_params(LGen(z_dim=64, hidden=128)) == count_params(LGen(z_dim=64, hidden=[128, 128, 128])) \
        == 53_986
    assert count_params(LGen(z_dim=64, hidden=[8])) == 64 * 8 + 8 + 8 * 98 + 98
    assert count_params(LGen()) == 53_986 + (BEGANParams().z_dim - 64) * 128  # the default's z


def test_output_shape_and_range():
    z = torch.rand(7, BEGANParams().z_dim) * 2 - 1
    out = LGen()(z)
    assert out.shape == (7, 49, 2)
    assert out.min() > 0 and out.max() < 1
    assert LGen(n_points=5)(z).shape == (7, 5, 2)
    assert _same_weights(LGen(seed=3), LGen(seed=3)) and not _same_weights(LGen(seed=3), LGen())


def test_training_learns_a_smooth_mapping():
    z, y = _pairs(768)
    vz, vy = _pairs(256, seed=1)
    events = []
    res = train_lgen(z, y, _cfg(epochs=12), None, seed=0, val_z=vz, val_landmarks=vy, progress=False,
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


def test_z_noise_and_weight_decay_trade_training_fit_for_generalisation():
    """lgen.z_noise and lgen.weight_decay (off in the paper): on 64 pairs, where the plain MLP
    memorises, the regularised one fits its pairs less closely and new z better."""
    z, y = _pairs(64)
    vz, vy = _pairs(512, seed=1)
    kw = dict(seed=0, val_z=vz, val_landmarks=vy, keep_best=False, progress=False)
    plain = train_lgen(z, y, _cfg(epochs=150, z_noise=0.0, weight_decay=0.0), None, **kw)
    reg = train_lgen(z, y, _cfg(epochs=150, z_noise=0.15, weight_decay=0.3), None, **kw)
    assert plain.loss[-1] < 1e-4 < reg.loss[-1]  # memorised vs not
    assert reg.val_loss[-1] < 0.97 * plain.val_loss[-1]
    again = train_lgen(z, y, _cfg(epochs=150, z_noise=0.15, weight_decay=0.3), None, **kw)
    assert _same_weights(reg.model, again.model)  # the noise comes from the seeded stream


def test_drop_last_and_batch_size_change_the_steps():
    z, y = _pairs(40)
    a = train_lgen(z, y, _cfg(epochs=1, batch_size=16), None, seed=0, progress=False)
    b = train_lgen(z, y, _cfg(epochs=1, batch_size=16, drop_last=True), None, seed=0, progress=False)
    assert not _same_weights(a.model, b.model)
    assert a.val_loss is None and a.best_epoch is None


def test_resume_equals_uninterrupted(tmp_path):
    z, y = _pairs(300)
    vz, vy = _pairs(64, seed=1)
    kw = dict(seed=0, val_z=vz, val_landmarks=vy, progress=False)
    straight = train_lgen(z, y, _cfg(epochs=6), None, **kw)
    first = train_lgen(z, y, _cfg(epochs=3, checkpoint_every=2), tmp_path, **kw)
    assert checkpoint_path(tmp_path).is_file() and len(first.loss) == 3
    resumed = train_lgen(z, y, _cfg(epochs=6), tmp_path, **kw)
    assert _same_weights(straight.model, resumed.model)
    np.testing.assert_array_equal(straight.loss, resumed.loss)
    np.testing.assert_array_equal(straight.val_loss, resumed.val_loss)
    assert straight.best_epoch == resumed.best_epoch
    ck = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert ck["epoch"] == 6
    # the trainer wrote the model it returned
    assert _same_weights(load_lgen(tmp_path / WEIGHTS_NAME, "cpu"), resumed.model)


def test_checkpoint_of_other_config_is_not_resumed(tmp_path):
    z, y = _pairs(64)
    train_lgen(z, y, _cfg(epochs=2, lr=1e-3), tmp_path, seed=0, progress=False)
    with pytest.warns(UserWarning, match="afresh"):
        res = train_lgen(z, y, _cfg(epochs=2), tmp_path, seed=0, progress=False)
    assert _same_weights(res.model, train_lgen(z, y, _cfg(epochs=2), None, seed=0, progress=False).model)


class _Payload:
    """Unpickling this calls ``open(path, "w")``: what a crafted checkpoint could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_unsafe_checkpoint_is_refused_by_name(tmp_path):
    """Issue 15 item 6: the refusal names the file and gives no weights_only=False advice."""
    z, y = _pairs(32)
    marker, ckpt = tmp_path / "executed", checkpoint_path(tmp_path / "run")
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "model": _Payload(marker)}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(RuntimeError) as err:
        train_lgen(z, y, _cfg(epochs=1), tmp_path / "run", seed=0, progress=False)
    message = str(err.value)
    assert str(ckpt) in message
    assert "weights_only" not in message and "trust" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's text not chained
    assert not marker.exists() and ckpt.read_bytes() == before  # nothing ran, nothing overwritten


def test_save_load_round_trip(tmp_path):
    model = LGen(n_points=5, z_dim=24, hidden=32, seed=4)
    save_lgen(tmp_path / "lgen.safetensors", model)
    back = load_lgen(tmp_path / "lgen.safetensors", "cpu")
    assert back.config() == {"n_points": 5, "z_dim": 24, "hidden": [32, 32, 32]}  # from the file
    assert _same_weights(model, back) and not back.training
    z = torch.rand(3, 24)
    assert torch.equal(model(z), back(z))
    with pytest.raises(FileNotFoundError):
        load_lgen(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("kw, match", [
    (dict(landmarks=np.zeros((10, 5), np.float32)), "landmarks"),
    (dict(z=np.zeros((9, 64), np.float32)), "same"),
    (dict(val_z=np.zeros((4, 64), np.float32)), "both"),
    (dict(val_z=np.zeros((4, 32), np.float32), val_landmarks=np.zeros((4, 5, 2), np.float32)),
     "validation"),
    (dict(z=np.full((10, 64), np.nan, np.float32)), "finite"),
    (dict(cfg=_cfg(epochs=1, batch_size=16, drop_last=True)), "drop_last"),
])
def test_bad_arguments_raise(kw, match):
    args = dict(z=np.zeros((10, 64), np.float32), landmarks=np.zeros((10, 5, 2), np.float32),
                cfg=_cfg(epochs=1))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        train_lgen(args.pop("z"), args.pop("landmarks"), args.pop("cfg"), None, seed=0,
                   progress=False, **args)

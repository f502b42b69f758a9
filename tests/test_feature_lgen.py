"""Tests of the label generator on G's features (facelm.models.feature_lgen), its trainer
(facelm.training.feature_lgen), G's feature maps (Decoder.features) and the loader that takes
either kind (facelm.models.lgen.load_label_generator)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facelm.config import FeatureLabelParams, replace
from facelm.models.began import Generator, save_model
from facelm.models.common import count_params
from facelm.models.feature_lgen import (FeatureLGen, MemberHeads, context_columns, feature_channels,
                                        label_uncertainty, load_feature_lgen, save_feature_lgen, soft_argmax)
from facelm.models.lgen import LGen, load_label_generator, save_lgen
from facelm.training.feature_lgen import (WEIGHTS_NAME, checkpoint_path, fit_input_transform,
                                          precompute_features, train_feature_lgen)

pytestmark = pytest.mark.usefixtures("one_thread")
P = 5  # CelebA's 5 points: small heads, and an NME normaliser (eye centres 0 and 1)


def _G(skip: bool = True, seed: int = 0) -> Generator:
    return Generator(32, 4, 64, seed=seed, skip=skip)


def _cfg(**changes) -> FeatureLabelParams:
    return replace(FeatureLabelParams(), **{"members": 3, "grid": 8, "hidden": 8, **changes})


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks around a fixed shape that move with z (a smooth function of it)."""
    z = _z(n, seed)
    a = torch.randn(64, 2 * P, generator=torch.Generator().manual_seed(99)) / 8
    base = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.4, 0.7], [0.6, 0.7]])
    return z, base + 0.08 * torch.tanh(z @ a).view(n, P, 2)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("skip", [True, False])
def test_generator_features_are_its_maps_and_its_image(skip):
    G, z = _G(skip), _z(3)
    image, maps = G.features(z)
    assert torch.equal(image, G(z))
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 8, 8), (4, 8, 8), (4, 16, 16), (4, 32, 32)]
    assert feature_channels(G) == 4 * 4 + 3


def test_shapes_and_a_frozen_copy_of_G():
    G = _G()
    model = FeatureLGen(G, P, members=3, grid=8, hidden=8)
    z = _z(4)
    assert model(z).shape == (4, P, 2) and model.members_forward(z).shape == (3, 4, P, 2)
    assert model.uncertainty(z).shape == (4,)
    images, points, unc = model.generate(z)
    assert torch.equal(images, G(z)) and torch.allclose(points, model(z)) and torch.allclose(unc, model.uncertainty(z))
    assert count_params(model) == count_params(model.heads)  # G is frozen
    assert model.matches(G) and not model.matches(_G(seed=1))
    assert not model.train().G.training
    assert (model.kind, LGen.kind) == ("features", "z")


def test_soft_argmax_puts_a_peaked_heatmap_at_its_cell_centre():
    g = 8
    logits = torch.full((2, 3, g, g), -30.0)
    cells = [[(1, 2), (6, 0), (7, 7)], [(0, 0), (3, 5), (4, 4)]]  # (row, column)
    for i, row in enumerate(cells):
        for p, (r, c) in enumerate(row):
            logits[i, p, r, c] = 30.0
    expected = torch.tensor([[[(c + 0.5) / g, (r + 0.5) / g] for r, c in row] for row in cells])
    assert torch.allclose(soft_argmax(logits), expected, atol=1e-6)
    # two equal peaks: halfway between them
    two = torch.full((1, g, g), -30.0)
    two[0, 2, 1] = two[0, 2, 5] = 30.0
    assert torch.allclose(soft_argmax(two), torch.tensor([[3.5 / g, 2.5 / g]]), atol=1e-6)


def test_heads_are_translation_equivariant():
    """Shift G's feature maps and the heatmaps shift with them: random heads, exactly."""
    heads = MemberHeads(6, P, 2, 8, seed=3)
    x = torch.randn(3, 6, 8, 8)
    shifted = torch.roll(x, (2, -1), (2, 3))
    assert torch.allclose(heads.logits(shifted), torch.roll(heads.logits(x), (2, -1), (3, 4)), atol=1e-5)


def test_context_columns_make_a_1x1_conv_a_3x3_conv():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    as_1x1 = torch.nn.functional.conv2d(context_columns(x, 3), w.reshape(6, 36, 1, 1))
    assert torch.allclose(as_1x1, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5)
    assert context_columns(x, 1) is x


def test_input_transform_whitens_the_training_features():
    G = _G()
    model = FeatureLGen(G, P, members=2, grid=8, hidden=8, components=6)
    raw = precompute_features(model, _z(200))
    fit_input_transform(model, raw)
    x = model.project(raw).transpose(0, 1).reshape(6, -1)
    assert torch.allclose(x @ x.T / x.shape[1], torch.eye(6), atol=1e-3)
    assert model.heads.c_in == 6 * 9 and model.features(_z(3))[1].shape == (3, 54, 8, 8)
    z = _z(3)
    raw3 = precompute_features(model, z)
    assert torch.allclose(model.members_from_hypercolumns(raw3), model.members_forward(z), atol=1e-6)
    again = FeatureLGen(G, P, members=2, grid=8, hidden=8, components=6)
    fit_input_transform(again, raw.clone())
    assert torch.equal(again.proj, model.proj)  # the axes' signs are fixed


def test_shifted_features_move_the_landmarks_by_the_shift():
    """Heads that find feature channel p's bump place landmark p on it: a face drawn
    further right and down gets landmarks further right and down by the same amount."""
    g, c = 16, P
    heads = MemberHeads(c, P, 1, c)
    with torch.no_grad():
        heads.w1.copy_(torch.eye(c).unsqueeze(0))
        heads.w2.copy_(20 * torch.eye(c).unsqueeze(0))
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    centres = [(5, 4), (5, 10), (8, 7), (11, 5), (11, 9)]  # (row, column), well inside
    x = torch.stack([torch.exp(-((yy - r) ** 2 + (xx - q) ** 2) / 2.0) for r, q in centres])[None]
    before = heads(x)[0, 0]
    after = heads(torch.roll(x, (2, 3), (2, 3)))[0, 0]
    assert torch.allclose(after - before, torch.tensor([3 / g, 2 / g]).expand(P, 2), atol=1e-4)
    assert torch.allclose(before, torch.tensor([[(q + 0.5) / g, (r + 0.5) / g] for r, q in centres]), atol=0.01)


def test_uncertainty_is_zero_for_equal_members_and_grows_with_spread():
    mean = _pairs(4)[1]
    equal = mean.expand(5, -1, -1, -1)
    assert torch.allclose(label_uncertainty(equal), torch.zeros(4), atol=1e-7)
    noise = torch.randn(5, 4, P, 2, generator=torch.Generator().manual_seed(0))
    noise -= noise.mean(0)  # keep the members' mean at `mean`
    small, large = label_uncertainty(mean + 0.01 * noise), label_uncertainty(mean + 0.03 * noise)
    assert (small > 0).all() and torch.allclose(large, 3 * small, rtol=1e-4)
    # NME units: the same spread on a face twice as large is half as uncertain
    big = 0.5 + 2 * (mean - 0.5)
    assert torch.allclose(label_uncertainty(big + 0.01 * noise), small / 2, rtol=1e-4)
    with pytest.raises(ValueError, match="M, N, P, 2"):
        label_uncertainty(torch.zeros(4, P, 2))


def _teacher_pairs(G: Generator, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks that G's features determine: a sharper, differently seeded head's output."""
    teacher = FeatureLGen(G, P, members=1, grid=8, hidden=8, seed=7)
    with torch.no_grad():
        teacher.heads.w2.mul_(4)
        z = _z(n, seed)
        return z, teacher(z)


def test_training_learns_and_beats_the_mean_shape():
    G = _G()
    z, y = _teacher_pairs(G, 600)
    vz, vy = _teacher_pairs(G, 200, seed=1)
    res = train_feature_lgen(G, z, y, _cfg(epochs=6, lr=1e-2, batch_size=32), None, seed=0,
                             val_z=vz, val_landmarks=vy, progress=False)
    assert res.loss.shape == res.val_loss.shape == (6,)
    assert res.loss[-1] < 0.5 * res.loss[0]
    mean_shape = float(((vy - y.mean(0)) ** 2).mean())
    assert res.val_loss.min() < 0.5 * mean_shape  # it reads the face, not only the average
    assert res.best_epoch == int(np.argmin(res.val_loss)) + 1 and not res.model.training
    with torch.no_grad():
        val = torch.nn.functional.mse_loss(res.model(vz), vy)
    assert float(val) == pytest.approx(float(res.val_loss.min()), rel=1e-4)


def test_members_differ_and_training_leaves_G_alone():
    G = _G()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z, y = _pairs(64)
    model = train_feature_lgen(G, z, y, _cfg(epochs=2), None, seed=0, progress=False).model
    assert all(torch.equal(before[k], v) for k, v in model.G.state_dict().items()) and model.matches(G)
    members = model.members_forward(_z(8, 5))
    assert (label_uncertainty(members) > 0).all()


def test_resume_equals_uninterrupted(tmp_path):
    G = _G()
    z, y = _pairs(120)
    vz, vy = _pairs(40, seed=1)
    kw = dict(seed=0, val_z=vz, val_landmarks=vy, progress=False)
    straight = train_feature_lgen(G, z, y, _cfg(epochs=4), None, **kw)
    first = train_feature_lgen(G, z, y, _cfg(epochs=2, checkpoint_every=1), tmp_path, **kw)
    assert checkpoint_path(tmp_path).is_file() and len(first.loss) == 2
    resumed = train_feature_lgen(G, z, y, _cfg(epochs=4), tmp_path, **kw)
    assert _same_weights(straight.model, resumed.model)
    np.testing.assert_array_equal(straight.loss, resumed.loss)
    np.testing.assert_array_equal(straight.val_loss, resumed.val_loss)
    assert _same_weights(load_feature_lgen(tmp_path / WEIGHTS_NAME), resumed.model)
    # another generator is another run: not resumed
    with pytest.warns(UserWarning, match="afresh"):
        train_feature_lgen(_G(seed=1), z, y, _cfg(epochs=4), tmp_path, **kw)


def test_save_load_round_trip(tmp_path):
    z, y = _pairs(64)
    model = train_feature_lgen(_G(skip=False), z, y, _cfg(epochs=1), None, seed=2, progress=False).model
    save_feature_lgen(tmp_path / "f.safetensors", model)
    back = load_feature_lgen(tmp_path / "f.safetensors")
    assert back.config() == model.config() and _same_weights(model, back) and not back.training
    assert back.generator_digest == model.generator_digest and not back.G.skip
    zz = _z(5, 3)
    assert torch.equal(back(zz), model(zz)) and torch.equal(back.uncertainty(zz), model.uncertainty(zz))


def test_load_label_generator_takes_either_kind_and_refuses_others(tmp_path):
    lgen = LGen(n_points=P, hidden=8)
    save_lgen(tmp_path / "z.safetensors", lgen)
    save_feature_lgen(tmp_path / "f.safetensors", FeatureLGen(_G(), P, 2, 8, 8))
    assert isinstance(load_label_generator(tmp_path / "z.safetensors"), LGen)
    assert load_label_generator(tmp_path / "f.safetensors").kind == "features"
    save_model(tmp_path / "g.safetensors", _G())
    (tmp_path / "text.safetensors").write_text("not weights")
    for name in ("g.safetensors", "text.safetensors"):  # a generator's file, not weights at all
        with pytest.raises(ValueError, match="not a label generator") as err:
            load_label_generator(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not a feature label generator"):
        load_feature_lgen(tmp_path / "z.safetensors")
    with pytest.raises(FileNotFoundError):
        load_label_generator(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("kw, match", [
    (dict(landmarks=torch.zeros(10, P)), "landmarks"),
    (dict(z=torch.zeros(9, 64)), "same"),
    (dict(z=torch.zeros(10, 32)), "z \\[N, 64\\]"),
    (dict(val_z=torch.zeros(4, 64)), "both"),
    (dict(val_z=torch.zeros(4, 64), val_landmarks=torch.zeros(4, 49, 2)), "validation"),
    (dict(z=torch.full((10, 64), float("nan"))), "finite"),
])
def test_bad_arguments_raise(kw, match):
    args = dict(z=torch.zeros(10, 64), landmarks=torch.full((10, P, 2), 0.5))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        train_feature_lgen(_G(), args.pop("z"), args.pop("landmarks"), _cfg(epochs=1), None, seed=0,
                           progress=False, **args)

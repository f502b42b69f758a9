"""Stage 07, the augmentation study (facelm.evaluation.augmentation, augmentation_summary,
paired_stats), on tiny untrained models: the paired design, the K setting's label
generators, filtering, the CI maths, the metrics keys and the figure."""
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from facelm.config import ParamsError, Params, deep_merge, parse_params  # noqa: E402
from facelm.evaluation import augmentation as aug  # noqa: E402
from facelm.evaluation import augmentation_summary as summary  # noqa: E402
from facelm.evaluation.paired_stats import paired_differences, t_interval, t_quantile  # noqa: E402
from facelm.evaluation.uncertainty import lowest  # noqa: E402
from facelm.models.began import Generator  # noqa: E402
from facelm.models.feature_lgen import FeatureLGen  # noqa: E402
from facelm.models.lgen import LGen  # noqa: E402
from facelm.report import figures  # noqa: E402
from facelm.report.metrics import METRICS, check_keys, expected_keys  # noqa: E402
from facelm.tensors import sample_z  # noqa: E402

STAGE = "07_augmentation"


def params(**augmentation) -> Params:
    """Default params with a tiny detector and the given augmentation keys."""
    return parse_params(deep_merge(Params().to_dict(), {
        "augmentation": augmentation,
        "detector": {"width": 4, "depth": 0, "batch_size": 4, "augment": False},
        "lgen": {"features": {"keep_frac": 0.5}}}))


# ---------------------------------------------------------------------------- CI maths
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_matches_the_closed_forms_of_one_and_two_degrees_of_freedom(p):
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-9)


def test_t_quantile_table_values_and_normal_limit():
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)   # textbook t table
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=1e-3)
    assert t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)  # the normal quantile
    with pytest.raises(ValueError, match="0.5 < p < 1"):
        t_quantile(0.3, 4)


def test_t_interval_of_a_known_sample_and_undefined_for_one_seed():
    ci = t_interval([1.0, 2.0, 3.0, 4.0])  # mean 2.5, s = sqrt(5/3), t(0.975, 3) = 3.182
    half = 3.182 * math.sqrt(5 / 3) / 2
    assert ci.mean == 2.5 and ci.n == 4 and ci.defined
    assert ci.lo == pytest.approx(2.5 - half, abs=1e-3) and ci.hi == pytest.approx(2.5 + half, abs=1e-3)
    one = t_interval([0.3])
    assert one.mean == 0.3 and one.lo is None and one.hi is None and not one.defined
    assert "CI undefined" in one.text()
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, float("nan")])


def test_paired_differences_need_the_same_seeds():
    assert paired_differences({0: 0.5, 1: 0.2}, {1: 0.1, 0: 0.4}) == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="same seeds"):
        paired_differences({0: 0.5, 1: 0.2}, {0: 0.4})


# ------------------------------------------------------------------------ summary, keys
def rows_for(nmes: dict) -> list[dict]:
    """Rows from {(setting, k, condition): [nme per seed]}."""
    return [{"setting": s, "k": k, "condition": c, "seed": i, "nme": v}
            for (s, k, c), values in nmes.items() for i, v in enumerate(values)]


def synthetic_rows(ks, seeds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    nmes = {}
    for k in ks:
        nmes[(aug.SHARED, k, "real")] = list(rng.uniform(0.04, 0.06, seeds))
        for s in aug.SETTINGS:
            for c in aug.CONDITIONS[1:]:
                nmes[(s, k, c)] = list(rng.uniform(0.03, 0.07, seeds))
    return rows_for(nmes)


def test_summary_gives_paired_change_with_its_t_interval():
    rows = rows_for({(aug.SHARED, 25, "real"): [0.10, 0.20, 0.30],
                     **{(s, 25, c): [0.08, 0.17, 0.29] for s in aug.SETTINGS for c in aug.CONDITIONS[1:]}})
    table = summary.summarise(rows)
    assert len(table) == len(aug.SETTINGS) * len(aug.CONDITIONS)
    e = next(e for e in table if (e["setting"], e["condition"]) == ("k", "features_filtered"))
    diffs = [-0.02, -0.03, -0.01]  # condition minus real, per seed
    half = t_quantile(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert e["change"] == pytest.approx(-0.02) and e["nme"] == pytest.approx(np.mean([0.08, 0.17, 0.29]))
    assert e["change_lo"] == pytest.approx(-0.02 - half) and e["change_hi"] == pytest.approx(-0.02 + half)
    real = [e for e in table if e["condition"] == "real"]
    assert {e["setting"] for e in real} == set(aug.SETTINGS) and all(e["nme"] == pytest.approx(0.2) for e in real)
    text = summary.summary_text(table)
    assert all(summary.SETTING_NAMES[s] in text for s in aug.SETTINGS)
    assert summary.verdict(table, 25).startswith("Setting k") and "no clear difference" in summary.verdict(table, 25)


@pytest.mark.parametrize("condition, says", [([0.08, 0.179, 0.281], "helps"), ([0.12, 0.221, 0.319], "hurts")])
def test_verdict_says_helps_or_hurts_only_when_the_interval_excludes_zero(condition, says):
    rows = rows_for({(aug.SHARED, 25, "real"): [0.10, 0.20, 0.30],
                     **{(s, 25, c): condition for s in aug.SETTINGS for c in aug.CONDITIONS[1:]}})
    assert says in summary.verdict(summary.summarise(rows), 25)


def test_one_seed_leaves_the_interval_undefined_and_its_keys_unwritten():
    cfg = params(ks=[25, 60], k_default=60, seeds=1)
    table = summary.summarise(synthetic_rows([25, 60], seeds=1))
    assert all(e["change_lo"] is None for e in table)
    metrics = summary.headline_metrics(table, cfg.augmentation)
    assert "aug_change_k25" in metrics and "aug_change_k25_lo" not in metrics
    assert "aug_change_k100" not in metrics  # K = 100 was not studied
    assert "cannot be judged" in summary.verdict(table, 25)
    assert "CI undefined: 1 seed" in summary.summary_text(table)
    assert set(metrics) == expected_keys([STAGE], cfg)


def test_headline_metrics_are_what_the_registry_expects():
    cfg = params(ks=[25, 100, 500], k_default=100, seeds=2)
    table = summary.summarise(synthetic_rows([25, 100, 500], seeds=2))
    metrics = summary.headline_metrics(table, cfg.augmentation)
    check_keys(metrics, stage=STAGE)
    assert set(metrics) == expected_keys([STAGE], cfg)
    by = {(e["setting"], e["k"], e["condition"]): e for e in table}
    assert metrics["aug_change_k500_hi"] == by[("k", 500, "features_filtered")]["change_hi"]
    assert metrics["aug_nme_real_only"] == by[("all", 100, "real")]["nme"]
    assert metrics["aug_nme_real_plus_synth"] == by[("all", 100, "lgen")]["nme"]
    assert metrics["aug_change_fair_lgen"] == by[("k", 100, "lgen")]["change"]
    assert metrics["aug_change_all_filtered"] == by[("all", 100, "features_filtered")]["change"]
    assert metrics["aug_k"] == 100 and metrics["aug_n_synth"] == cfg.augmentation.n_synth


def test_every_registered_condition_reads():
    keys = expected_keys({m.stage for m in METRICS}, Params())
    assert {"aug_change_k25_lo", "gen_dlib_found"} <= keys
    from facelm.report.metrics import _holds
    with pytest.raises(ValueError, match="cannot read"):
        _holds("augmentation.seeds > 2", Params())


def test_figure_has_a_panel_per_setting_with_a_zero_line():
    import matplotlib.pyplot as plt

    for seeds, says in ((2, "95 % t intervals"), (1, "no confidence interval")):
        fig = figures.augmentation_curve(summary.summarise(synthetic_rows([25, 100], seeds)), n_synth=40)
        assert len(fig.axes) == 2 and says in fig._suptitle.get_text()
        for ax in fig.axes:
            assert ax.get_xscale() == "log"
            assert any(np.allclose(line.get_ydata(), 0) for line in ax.get_lines())
        texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert texts == [summary.CONDITION_NAMES[c] for c in aug.CONDITIONS[1:]]
        plt.close(fig)


# ---------------------------------------------------------------------- the study itself
@pytest.fixture(scope="module")
def tiny(one_thread):
    G = Generator(size=32, width=4, z_dim=64, seed=1).eval()
    rng = np.random.default_rng(3)
    real = aug.RealFaces(rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8),
                         rng.uniform(0.2, 0.8, size=(12, 49, 2)).astype(np.float32),
                         rng.uniform(-1, 1, size=(12, 64)).astype(np.float32))
    return G, real


def labellers(G, seed: int, pairs: str = "stage04") -> aug.Labellers:
    return aug.Labellers(LGen(n_points=49, z_dim=G.z_dim, seed=seed).eval(),
                         FeatureLGen(G, members=3, grid=4, hidden=4, seed=seed).eval(), pairs)


def test_lowest_keeps_exactly_the_lowest():
    u = np.random.default_rng(1).uniform(size=50)
    keep = lowest(u, 20)
    dropped = np.setdiff1d(np.arange(50), keep)
    assert len(keep) == 20 and u[keep].max() < u[dropped].min() and np.all(np.diff(keep) > 0)
    assert list(lowest(np.zeros(5), 2)) == [0, 1]  # ties: the earlier faces
    with pytest.raises(ValueError, match="keeps 1..5"):
        lowest(np.zeros(5), 6)


def test_label_pool_agrees_with_the_models_and_filters_n_synth(tiny):
    G, _ = tiny
    sets = {"all": labellers(G, 1), 7: labellers(G, 2)}
    z = sample_z(10, 64, seed=5)
    pool = aug.label_pool(G, sets, z, n_synth=4, batch_size=3)
    for key, lab in sets.items():
        images, points, unc = lab.features.generate(z)
        np.testing.assert_allclose(pool.feature_labels[key], points.numpy(), atol=1e-5)
        np.testing.assert_allclose(pool.uncertainty[key], unc.numpy(), rtol=1e-3, atol=1e-6)  # batch-size rounding
        with torch.no_grad():
            np.testing.assert_allclose(pool.z_labels[key], lab.lgen(z[:4]).numpy(), atol=1e-6)
        x, y, mean_u = aug.synthetic_set(pool, key, "features_filtered", 4)
        keep = lowest(pool.uncertainty[key], 4)
        assert len(x) == len(y) == 4 and mean_u == pytest.approx(pool.uncertainty[key][keep].mean())
        np.testing.assert_array_equal(y, pool.feature_labels[key][keep])
        assert mean_u <= aug.synthetic_set(pool, key, "features", 4)[2] + 1e-9
    assert pool.images.shape == (10, 32, 32, 3)
    other = Generator(size=32, width=4, z_dim=64, seed=9).eval()
    with pytest.raises(ValueError, match="trained on this G"):
        aug.label_pool(other, sets, z, n_synth=4)


def test_study_is_paired_and_k_labellers_see_only_the_k_pairs(tiny):
    G, real = tiny
    seen = []

    def spy(z, landmarks, seed):
        seen.append((z.copy(), landmarks.copy(), seed))
        return labellers(G, seed % 1000, aug.pairs_fingerprint(z, landmarks))

    p = params(ks=[3, 5], k_default=3, n_synth=4, seeds=2, steps=2)
    test = (real.images[:3], real.landmarks[:3])
    rows = aug.study(real, *test, G, labellers(G, 1), p, train_labellers=spy)
    assert len(rows) == 2 * 2 * (1 + 2 * 3)
    # the K setting's label generators: one per (K, seed), each on exactly K faces' own pairs
    assert sorted(len(z) for z, _, _ in seen) == [3, 3, 5, 5]
    for z, lm, _ in seen:
        idx = [int(np.flatnonzero((real.z == row).all(1))[0]) for row in z]
        np.testing.assert_array_equal(real.landmarks[idx], lm)
    fingerprints = {aug.pairs_fingerprint(z, lm) for z, lm, _ in seen}
    assert {r["label_pairs"] for r in rows if r["setting"] == "k"} == fingerprints
    assert {r["label_pairs"] for r in rows if r["setting"] == "all"} == {"stage04"}
    # paired: within (K, seed) every condition and setting has the same subset and detector seed
    for k in (3, 5):
        for s in (0, 1):
            group = [r for r in rows if (r["k"], r["seed"]) == (k, s)]
            assert len({r["subset"] for r in group}) == 1 and len({r["detector_seed"] for r in group}) == 1
            assert [r["setting"] for r in group if r["condition"] == "real"] == [aug.SHARED]
            assert {(r["setting"], r["condition"]) for r in group if r["condition"] != "real"} == \
                {(st, c) for st in aug.SETTINGS for c in aug.CONDITIONS[1:]}
            assert all(r["n_synth"] == 4 for r in group if r["condition"] != "real")
            spied = next(lm for z, lm, _ in seen if len(z) == k and
                         aug.pairs_fingerprint(z, lm) == next(r["label_pairs"] for r in group
                                                                if r["setting"] == "k"))
            assert len(spied) == k
    assert len({r["subset"] for r in rows if r["k"] == 5}) == 2  # seeds draw different faces
    assert all(np.isfinite(r["nme"]) for r in rows)
    with pytest.raises(ValueError, match="more real faces"):
        aug.study(real, *test, G, labellers(G, 1), params(ks=[30], k_default=30), train_labellers=spy)


@pytest.mark.parametrize("k, n_synth", [(25, 2000), (100, 2000), (500, 2000), (7, 40)])
@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_real_repeats_give_the_real_faces_about_the_asked_share(k, n_synth, fraction):
    reps = aug.real_repeats(k, n_synth, fraction)
    share = reps * k / (reps * k + n_synth)
    # rounding to whole repeats: within half a repeat's share of the ask
    assert abs(share - fraction) <= 0.5 * k / (reps * k + n_synth) + 1e-9
    assert aug.real_repeats(k, n_synth, None) == 1


def test_real_repeats_never_drop_a_real_face():
    assert aug.real_repeats(25, 2000, 0.5) == 80
    assert aug.real_repeats(500, 100, 0.25) == 1     # already more than the ask: once each
    assert aug.real_repeats(25, 0, 0.5) == 1


def test_study_repeats_the_real_faces_in_augmented_sets_only(tiny, monkeypatch):
    G, real = tiny
    sizes = []

    def scored(x, y, test, cfg, seed, device):
        sizes.append(len(x))
        assert len(x) == len(y)
        return 0.1, 0.0

    monkeypatch.setattr(aug, "_scored_detector", scored)
    p = params(ks=[3], k_default=3, n_synth=6, seeds=2, steps=2, real_fraction=0.5)
    rows = aug.study(real, real.images[:3], real.landmarks[:3], G, labellers(G, 1), p,
                     train_labellers=lambda z, lm, seed: labellers(G, seed % 1000))
    reps = aug.real_repeats(3, 6, 0.5)
    assert reps == 2
    assert sorted(set(sizes)) == [3, 3 * reps + 6]
    assert {r["real_repeats"] for r in rows if r["condition"] == "real"} == {1}
    assert {r["real_repeats"] for r in rows if r["condition"] != "real"} == {reps}


def test_k_run_trainer_uses_the_step_rule_and_only_its_pairs(tiny, monkeypatch):
    G, real = tiny
    calls = {}

    def fake(name):
        def train(*args, **kw):
            z, lm, cfg = (args[1:4] if name == "features" else args[0:3])
            calls[name] = (len(z), cfg.epochs, kw["seed"])
            return type("R", (), {"model": None})()
        return train

    monkeypatch.setattr(aug, "train_lgen", fake("lgen"))
    monkeypatch.setattr(aug, "train_feature_lgen", fake("features"))
    p = params(lgen_steps=100, features_steps=30)
    trained = aug.k_run_trainer(G, p.lgen, p.augmentation)(real.z[:5], real.landmarks[:5], 11)
    assert calls["lgen"] == (5, aug.label_epochs(100, 5, p.lgen.batch_size), 11)
    assert calls["features"][:2] == (5, aug.label_epochs(30, 5, p.lgen.features.batch_size))
    assert trained.pairs == aug.pairs_fingerprint(real.z[:5], real.landmarks[:5])


def test_label_epochs_give_about_the_asked_steps():
    assert aug.label_epochs(200, 25, 64) == 200      # one batch per epoch
    assert aug.label_epochs(200, 500, 64) == 25      # 8 batches per epoch
    assert aug.label_epochs(1000, 100, 16) == 143    # 7 batches: 1001 steps
    assert aug.label_epochs(5, 6000, 16) == 1        # at least one epoch


# --------------------------------------------------------------------------------- config
@pytest.mark.parametrize("overlay, says", [
    ({"augmentation": {"ks": [25, 25, 100]}}, "augmentation.ks must be distinct Ks, none repeated"),
    ({"augmentation": {"lgen_steps": 0}}, "augmentation.lgen_steps must be > 0"),
    ({"augmentation": {"features_steps": -1}}, "augmentation.features_steps must be > 0"),
    ({"augmentation": {"seeds": 0}}, "a confidence interval needs 2 or more"),
    ({"augmentation": {"real_fraction": 1.0}}, "augmentation.real_fraction must be in (0, 1) or null (got 1.0)"),
    ({"augmentation": {"real_fraction": 0}}, "augmentation.real_fraction must be in (0, 1) or null (got 0"),
    ({"inversion": {"n_train": 50}}, "augmentation.ks must be <= the 50 inverted training faces"),
])
def test_new_augmentation_fields_are_validated(overlay, says):
    with pytest.raises(ParamsError, match=None) as err:
        parse_params(deep_merge(Params().to_dict(), overlay))
    assert says in str(err.value)

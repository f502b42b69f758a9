"""facelm.evaluation.uncertainty: rank correlation, the most certain share, and stage 06's
judgement of the feature label generator (tiny untrained models)."""
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from facelm.config import EvaluationParams  # noqa: E402
from facelm.evaluation.consistency import evaluate_consistency  # noqa: E402
from facelm.evaluation.outside_judge import DlibJudgement  # noqa: E402
from facelm.evaluation.uncertainty import (average_ranks, error_by_bin, judge_feature_labels,  # noqa: E402
                                           keep_threshold, most_certain, n_kept, spearman,
                                           uncertainty_figure)
from facelm.landmarks import nme  # noqa: E402
from facelm.models.began import Generator  # noqa: E402
from facelm.models.detector import LandmarkDetector, predict_landmarks  # noqa: E402
from facelm.models.feature_lgen import FeatureLGen  # noqa: E402
from facelm.models.lgen import LGen  # noqa: E402
from facelm.report.metrics import check_keys  # noqa: E402


# --------------------------------------------------------------------------- ranks
def test_average_ranks_share_the_mean_rank_of_ties():
    np.testing.assert_array_equal(average_ranks([3.0, 1.0, 2.0]), [2, 0, 1])
    np.testing.assert_array_equal(average_ranks([5.0, 1.0, 5.0, 5.0, 0.0]), [3, 1, 3, 3, 0])


def test_spearman_of_a_monotone_relation_is_one():
    x = np.random.default_rng(0).uniform(size=200)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)   # non-linear but increasing
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert spearman(x, np.floor(4 * x)) > 0.9                 # many ties, still increasing


def test_spearman_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(1)
    values = [spearman(rng.normal(size=500), rng.normal(size=500)) for _ in range(20)]
    assert abs(np.mean(values)) < 0.03 and max(map(abs, values)) < 0.15  # sd 1/sqrt(499) = 0.045


def test_spearman_with_ties_is_pearson_of_average_ranks():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 4.0])
    b = np.array([2.0, 1.0, 3.0, 3.0, 6.0, 4.0, 4.0])
    expected = np.corrcoef(average_ranks(a), average_ranks(b))[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    assert 0 < spearman(a, b) < 1


def test_spearman_is_nan_without_spread_and_refuses_unpaired_samples():
    assert math.isnan(spearman(np.ones(5), np.arange(5)))
    assert math.isnan(spearman([1.0], [2.0]))
    with pytest.raises(ValueError, match="paired"):
        spearman(np.arange(3), np.arange(4))


# ---------------------------------------------------------------- the certain share
def test_most_certain_picks_the_lowest_scores():
    u = np.random.default_rng(2).uniform(size=50)
    kept = most_certain(u, 0.3)
    assert len(kept) == n_kept(50, 0.3) == 15
    assert set(kept) == set(np.argsort(u)[:15])
    assert u[kept].max() < np.delete(u, kept).min()
    assert np.array_equal(kept, np.sort(kept))
    assert len(most_certain(u, 1.0)) == 50 and len(most_certain(u, 1e-6)) == 1


def test_most_certain_breaks_ties_by_order_and_keeps_exactly_its_share():
    u = np.array([0.5, 0.2, 0.5, 0.5, 0.9, 0.2])
    kept = most_certain(u, 0.5)                 # 3 of 6: both 0.2s and the first 0.5
    np.testing.assert_array_equal(kept, [0, 1, 5])
    assert u[kept].max() <= np.delete(u, kept).min()
    np.testing.assert_array_equal(most_certain(np.zeros(4), 0.5), [0, 1])
    with pytest.raises(ValueError, match="keep_frac"):
        most_certain(u, 0.0)
    with pytest.raises(ValueError, match="keep_frac"):
        n_kept(5, 1.5)


def test_keep_threshold_keeps_the_share_of_its_sample():
    u = np.random.default_rng(3).uniform(size=1000)
    for frac in (0.1, 0.5, 0.77):
        t = keep_threshold(u, frac)
        assert (u <= t).mean() == pytest.approx(frac, abs=1e-3)
        assert t == u[most_certain(u, frac)].max()  # the same cut as the certain subset
    ties = np.array([0.1, 0.3, 0.3, 0.3, 0.8])
    assert keep_threshold(ties, 0.4) == 0.3 and (ties <= 0.3).mean() >= 0.4
    assert keep_threshold(u, 1.0) == math.inf
    with pytest.raises(ValueError, match="non-empty"):
        keep_threshold(np.zeros(0), 0.5)


def test_error_by_bin_orders_groups_by_uncertainty():
    rng = np.random.default_rng(4)
    u = rng.uniform(size=100)
    centre, err = error_by_bin(u, 2 * u, 10)
    assert len(centre) == 10 and np.all(np.diff(centre) > 0)
    np.testing.assert_allclose(err, 2 * centre)
    assert len(error_by_bin(u[:4], u[:4], 10)[0]) == 4


# ------------------------------------------------------ stage 06: the feature labels
@pytest.fixture(scope="module")
def stage(one_thread):
    G = Generator(size=32, width=4, z_dim=64, seed=1).eval()
    with torch.no_grad():
        G.body[-1].weight.mul_(30.0)  # faces spread over the uint8 range
    features = FeatureLGen(G, members=3, grid=8, hidden=4, seed=3).eval()
    judge = LandmarkDetector(size=32, n_points=49, width=4, depth=0).eval()
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2, 0.8, size=(3, 49, 2)).astype(np.float32)
    z_heldout = torch.from_numpy(rng.uniform(-1, 1, (3, 64)).astype(np.float32))
    result = evaluate_consistency(G, LGen(z_dim=G.z_dim, seed=2).eval(), judge, images, landmarks, z_heldout,
                                  EvaluationParams(n_random=12), seed=6, device="cpu")
    return G, features, judge, result


def fake_dlib(result, found):
    """dlib's judgement of the random faces: its points = the judge's, NaN where not found."""
    points = np.where(found[:, None, None], result.judge_points, np.nan)
    return DlibJudgement(points[:0], found[:0], np.zeros(0), points, found, np.zeros(found.sum()),
                         found[:0], np.zeros(0))


def test_feature_labels_are_judged_on_the_same_faces(stage):
    G, features, judge, result = stage
    got = judge_feature_labels(features, result, keep_frac=0.25)
    with torch.no_grad():
        points, u = features(result.z).numpy(), features.uncertainty(result.z).numpy()
    np.testing.assert_allclose(got.points, points, atol=1e-6)
    np.testing.assert_allclose(got.uncertainty, u, rtol=1e-5)
    np.testing.assert_allclose(got.consistency, nme(points, predict_landmarks(judge, result.faces)), rtol=1e-5)
    assert len(got.certain) == 3 and got.uncertainty[got.certain].max() <= np.delete(got.uncertainty, got.certain).min()
    m = got.metrics()
    check_keys(m, stage="06_evaluation")
    assert set(m) == {"consistency_nme_features", "consistency_nme_features_certain", "uncertainty_spearman"}
    assert m["consistency_nme_features"] == pytest.approx(got.consistency.mean())
    assert m["consistency_nme_features_certain"] == pytest.approx(got.consistency[got.certain].mean())
    assert m["uncertainty_spearman"] == pytest.approx(spearman(got.uncertainty, got.consistency))
    assert len(got.curves()) == 2


def test_feature_labels_against_dlib_count_only_found_faces(stage):
    _, features, _, result = stage
    found = np.arange(12) % 3 != 0
    got = judge_feature_labels(features, result, keep_frac=0.5, outside=fake_dlib(result, found))
    assert np.isnan(got.consistency_dlib[~found]).all()
    np.testing.assert_allclose(got.consistency_dlib[found], got.consistency[found], rtol=1e-6)
    m = got.metrics()
    check_keys(m, stage="06_evaluation")
    kept = got.certain[found[got.certain]]
    assert m["consistency_nme_dlib_features"] == pytest.approx(got.consistency[found].mean())
    assert m["consistency_nme_dlib_features_certain"] == pytest.approx(got.consistency[kept].mean())
    assert m["dlib_found_generated_certain"] == pytest.approx(found[got.certain].mean())
    assert m["uncertainty_spearman_dlib"] == pytest.approx(spearman(got.uncertainty[found], got.consistency[found]))
    assert any("dlib" in name for name in got.curves())
    nothing = judge_feature_labels(features, result, 0.5, outside=fake_dlib(result, np.zeros(12, bool)))
    assert np.isnan(nothing.metrics()["consistency_nme_dlib_features"])
    assert not any("dlib" in name for name in nothing.curves())


def test_feature_labels_refuse_a_z_lgen_and_another_generator(stage):
    _, _, _, result = stage
    with pytest.raises(ValueError, match="features-kind"):
        judge_feature_labels(LGen(seed=2), result, 0.5)
    other = FeatureLGen(Generator(size=32, width=4, z_dim=64, seed=9), members=2, grid=8, hidden=4)
    with pytest.raises(ValueError, match="another generator"):
        judge_feature_labels(other, result, 0.5)


def test_uncertainty_figure_draws_deciles_for_both_judges(stage):
    import matplotlib.pyplot as plt

    _, features, _, result = stage
    got = judge_feature_labels(features, result, 0.5, outside=fake_dlib(result, np.arange(12) % 2 == 0))
    fig = uncertainty_figure(got)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and len(ax.get_legend().get_texts()) == 3  # judge, dlib, the cut
    assert "Spearman" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)

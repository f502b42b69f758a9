"""facelm.evaluation (stages 05-07) and their figures, on tiny untrained models."""
import itertools

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from facelm.config import AugmentationParams, DetectorParams, EvaluationParams  # noqa: E402
from facelm.evaluation import augmentation  # noqa: E402
from facelm.evaluation.consistency import (annotation_speed, evaluate_consistency, judge_landmarks,  # noqa: E402
                                           per_item_ms)
from facelm.evaluation.results import (displacements, faces_and_landmarks, interpolate, latent_path,  # noqa: E402
                                       mirror_smoothness, smoothness)
from facelm.landmarks import nme, to_5  # noqa: E402
from facelm.models.began import Generator  # noqa: E402
from facelm.models.detector import LandmarkDetector, predict_landmarks  # noqa: E402
from facelm.models.lgen import LGen  # noqa: E402
from facelm.report import figures  # noqa: E402
from facelm.report.metrics import check_keys  # noqa: E402


@pytest.fixture(scope="module")
def models(one_thread):
    G = Generator(size=32, width=4, z_dim=64, seed=1).eval()
    lgen = LGen(n_points=49, seed=2).eval()
    judge = LandmarkDetector(size=32, n_points=49, width=4, depth=0).eval()
    return G, lgen, judge


@pytest.fixture(scope="module")
def latents():
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, size=(3, 64)).astype(np.float32)
    return z, np.clip(z + rng.normal(0, 0.3, size=z.shape), -1, 1).astype(np.float32)


# ----------------------------------------------------------------------- 05: results
def test_latent_path_is_the_interpolation_fed_to_g_and_lgen(models, latents):
    G, lgen, _ = models
    z_a, z_b = latents
    path = latent_path(G, lgen, z_a[0], z_b[0], 5, device="cpu")
    assert path.faces.shape == (7, 32, 32, 3) and path.faces.dtype == np.uint8
    assert path.landmarks.shape == (7, 49, 2) and path.steps.shape == (6,)
    torch.testing.assert_close(path.z[0], torch.from_numpy(z_a[0]))
    torch.testing.assert_close(path.z[-1], torch.from_numpy(z_b[0]))
    faces, points = faces_and_landmarks(G, lgen, interpolate(torch.from_numpy(z_a[0]), torch.from_numpy(z_b[0]), 5),
                                        device="cpu")
    np.testing.assert_array_equal(path.landmarks, points)
    np.testing.assert_array_equal(path.faces, faces)
    np.testing.assert_array_equal(path.steps, displacements(points))
    assert path.smoothness == smoothness(points) >= 1.0


def test_mirror_smoothness_scores_every_face_and_mirror_pair(models, latents):
    G, lgen, _ = models
    z_a, z_b = latents
    got = mirror_smoothness(G, lgen, z_a, z_b, 4, device="cpu")
    expected = [latent_path(G, lgen, z_a[j], z_b[j], 4, device="cpu").smoothness for j in range(3)]
    assert got.shape == (3,) and got.tolist() == expected
    assert len(set(expected)) == 3  # three different paths, not one repeated


# ------------------------------------------------------------------- 06: consistency
def test_evaluate_consistency_judges_random_z_and_heldout_inversions(models, latents):
    G, lgen, judge = models
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2, 0.8, size=(4, 49, 2)).astype(np.float32)
    z_heldout = torch.from_numpy(latents[0])
    cfg = EvaluationParams(n_random=6, truncation=0.5)
    result = evaluate_consistency(G, lgen, judge, images, landmarks, z_heldout, cfg, seed=6, device="cpu")
    assert result.z.shape == (6, 64) and float(result.z.abs().max()) <= 0.5
    faces, lgen_points = faces_and_landmarks(G, lgen, result.z, device="cpu")
    np.testing.assert_array_equal(result.faces, faces)
    np.testing.assert_allclose(result.consistency, nme(lgen_points, predict_landmarks(judge, faces)))
    np.testing.assert_allclose(result.judge_heldout, nme(predict_landmarks(judge, images), landmarks))
    assert result.inverted_heldout.shape == (3,)
    metrics = result.metrics()
    check_keys(metrics, stage="06_evaluation")
    assert metrics["consistency_nme"] == pytest.approx(float(result.consistency.mean()))
    assert set(result.curves()) and all(len(v) for v in result.curves().values())


def test_judge_landmarks_follow_a_five_point_face_set(models):
    judge = models[2]
    images = np.zeros((2, 32, 32, 3), np.uint8)
    np.testing.assert_allclose(judge_landmarks(judge, images, 5), to_5(predict_landmarks(judge, images)))
    assert judge_landmarks(judge, images, 49).shape == (2, 49, 2)


def test_per_item_ms_is_the_best_of_its_repeats():
    ticks = iter([0.0, 0.5, 1.0, 1.2, 2.0, 2.9])  # calls of 0.5, 0.2 and 0.9 s
    calls = []
    ms = per_item_ms(lambda: calls.append(1), n_items=4, reps=3, clock=lambda: next(ticks))
    assert ms == pytest.approx(1000 * 0.2 / 4) and len(calls) == 3


def test_annotation_speed_times_g_lgen_and_the_detector(models):
    G, lgen, judge = models
    z = torch.zeros(2, 64)
    faces = np.zeros((2, 32, 32, 3), np.uint8)
    clock = itertools.count(0.0, 0.01).__next__  # every call lasts 0.01 s
    ms = annotation_speed(G, lgen, judge, z, faces, reps=2, clock=clock)
    assert set(ms) == {"G", "L-Gen", "detector"}
    assert all(v == pytest.approx(5.0) for v in ms.values())  # 10 ms / 2 faces


# ------------------------------------------------------------------ 07: augmentation
ROWS = [{"k": k, "seed": s, "condition": c, "nme": nme_}
        for k, s, c, nme_ in [(20, 0, "real", 0.10), (20, 1, "real", 0.12), (20, 0, "real+synth", 0.08),
                              (20, 1, "real+synth", 0.10), (60, 0, "real", 0.05), (60, 0, "real+synth", 0.06)]]


def test_summarise_gives_mean_std_and_change_per_k():
    table = augmentation.summarise(ROWS)
    assert [r["k"] for r in table] == [20, 60]
    assert table[0]["real_mean"] == pytest.approx(0.11) and table[0]["real_std"] == pytest.approx(0.01)
    assert table[0]["change_%"] == pytest.approx(100 * (0.09 / 0.11 - 1))
    text = augmentation.summary_text(table).splitlines()
    assert len(text) == 2 and text[0].startswith("K=   20  real 0.1100 ± 0.0100") and "change -18.2 %" in text[0]


def test_headline_metrics_are_taken_at_k_default():
    table = augmentation.summarise(ROWS)
    cfg = AugmentationParams(ks=[20, 60], k_default=60, n_synth=40)
    metrics = augmentation.headline_metrics(table, cfg)
    assert metrics == {"aug_nme_real_only": pytest.approx(0.05), "aug_nme_real_plus_synth": pytest.approx(0.06),
                       "aug_k": 60, "aug_n_synth": 40}
    check_keys(metrics, stage="07_augmentation")
    with pytest.raises(ValueError, match="k_default 100"):
        augmentation.headline_metrics(table, AugmentationParams(ks=[20, 60, 100], k_default=100))


def test_study_trains_both_conditions_on_the_same_real_faces(one_thread):
    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    real_lm = rng.uniform(0.2, 0.8, size=(8, 49, 2)).astype(np.float32)
    cfg = AugmentationParams(ks=[3], k_default=3, n_synth=2, seeds=1, steps=2)
    detector = DetectorParams(width=4, depth=0, batch_size=4, augment=False)
    rows = augmentation.study(real, real_lm, real[:2], real_lm[:2], real[:3], real_lm[:3], cfg, detector, seed=0)
    assert [(r["k"], r["seed"], r["condition"]) for r in rows] == [(3, 0, "real"), (3, 0, "real+synth")]
    assert all(np.isfinite(r["nme"]) for r in rows)
    with pytest.raises(ValueError, match="more real faces"):
        augmentation.study(real[:2], real_lm[:2], real, real_lm, real, real_lm, cfg, detector, seed=0)


# ---------------------------------------------------------------------------- figures
def test_agreement_grid_and_augmentation_curve_draw():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(4)
    faces = rng.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)
    a, b = rng.uniform(0.2, 0.8, size=(2, 9, 49, 2))
    fig = figures.agreement_grid(faces, a, b, rng.uniform(size=9), n_each=3, title="t")
    image = fig.axes[0].images[0].get_array()
    assert image.shape[0] > 3 * 128 and image.shape[1] > 3 * 128  # 3 rows of 3 upscaled faces
    plt.close(fig)
    fig = figures.augmentation_curve(augmentation.summarise(ROWS), n_synth=40, seeds=2)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 2
    assert "40 latent-augmented" in ax.get_legend().get_texts()[1].get_text()
    plt.close(fig)

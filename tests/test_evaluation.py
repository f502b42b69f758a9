"""facelm.evaluation (stages 05 and 06) and their figures, on tiny untrained models (stage 07:
tests/test_augmentation.py)."""
import itertools

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from facelm.config import EvaluationParams  # noqa: E402
from facelm.config import Params, replace  # noqa: E402
from facelm.data.world import render_faces  # noqa: E402
from facelm.evaluation import budget  # noqa: E402
from facelm.evaluation.consistency import (Consistency, annotation_speed, evaluate_consistency,  # noqa: E402
                                           judge_landmarks, per_item_ms)
from facelm.evaluation.outside_judge import judge_with_dlib, mean_or_nan  # noqa: E402
from facelm.evaluation.results import (displacements, faces_and_landmarks, interpolate, latent_path,  # noqa: E402
                                       load_mirror_pairs, mirror_smoothness, random_faces, smoothness)
from facelm.landmarks import nme, to_5  # noqa: E402
from facelm.models.began import Generator  # noqa: E402
from facelm.models.detector import LandmarkDetector, predict_landmarks  # noqa: E402
from facelm.models.lgen import LGen  # noqa: E402
from facelm.report import figures  # noqa: E402
from facelm.report.metrics import METRICS, check_keys, expected_keys  # noqa: E402


@pytest.fixture(scope="module")
def models(one_thread):
    G = Generator(size=32, width=4, z_dim=64, seed=1).eval()
    lgen = LGen(n_points=49, z_dim=G.z_dim, seed=2).eval()
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
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2, 0.8, size=(3, 49, 2)).astype(np.float32)
    z_heldout = torch.from_numpy(latents[0])  # one z_r per held-out face
    cfg = EvaluationParams(n_random=6, truncation=0.5)
    result = evaluate_consistency(G, lgen, judge, images, landmarks, z_heldout, cfg, seed=6, device="cpu")
    assert result.z.shape == (6, 64) and float(result.z.abs().max()) <= 0.5
    faces, lgen_points = faces_and_landmarks(G, lgen, result.z, device="cpu")
    np.testing.assert_array_equal(result.faces, faces)
    np.testing.assert_allclose(result.consistency, nme(lgen_points, predict_landmarks(judge, faces)))
    np.testing.assert_allclose(result.judge_heldout, nme(predict_landmarks(judge, images), landmarks))
    assert result.inverted_heldout.shape == (3,)
    # the error budget's G∘inversion link: the judge on G(z_r) against the annotation of x
    rec_faces, _ = faces_and_landmarks(G, lgen, z_heldout, device="cpu")
    np.testing.assert_array_equal(result.inverted_faces, rec_faces)
    np.testing.assert_allclose(result.judge_on_inversion, nme(predict_landmarks(judge, rec_faces), landmarks))
    metrics = result.metrics()
    assert metrics["budget_judge_on_inversion_nme"] == pytest.approx(float(result.judge_on_inversion.mean()))
    check_keys(metrics, stage="06_evaluation")
    assert metrics["consistency_nme"] == pytest.approx(float(result.consistency.mean()))
    assert set(result.curves()) and all(len(v) for v in result.curves().values())
    with pytest.raises(ValueError, match="one z_r per held-out face"):
        evaluate_consistency(G, lgen, judge, images[:2], landmarks[:2], z_heldout, cfg, seed=6, device="cpu")


def test_random_z_take_the_generators_z_dim(one_thread):
    """Stages 05 and 06 draw z of G's own size: a z_dim other than the paper's 64 works."""
    G = Generator(size=32, width=4, z_dim=8, seed=1).eval()
    lgen = LGen(n_points=49, z_dim=8, seed=2).eval()
    judge = LandmarkDetector(size=32, n_points=49, width=4, depth=0).eval()
    z, faces, points = random_faces(G, lgen, 5, seed=3, device="cpu")
    assert z.shape == (5, 8) and faces.shape == (5, 32, 32, 3) and points.shape == (5, 49, 2)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2, 0.8, size=(2, 49, 2)).astype(np.float32)
    result = evaluate_consistency(G, lgen, judge, images, landmarks, z[:2], EvaluationParams(n_random=4),
                                  seed=6, device="cpu")
    assert result.z.shape == (4, 8) and result.consistency.shape == (4,)


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


# --------------------------------------------------- 06: the outside judge (dlib), error budget
@pytest.fixture(scope="module")
def world32():
    return render_faces(24, 32, seed=3)  # the face set's size; dlib sees them upscaled to 128


def _stage06(faces, lgen_points, inverted_faces):
    """A Consistency with given G(z), L-Gen(z) and G(z_r) (the own judge's fields are unused)."""
    n, m = len(faces), len(inverted_faces)
    return Consistency(torch.zeros(n, 64), faces, lgen_points, lgen_points, np.zeros(n), np.zeros(m),
                       np.zeros(m), inverted_faces, np.zeros(m))


def test_dlib_judges_data_generated_and_inverted_faces_with_one_protocol(world32):
    images, truth = world32
    noise = np.random.default_rng(5).integers(0, 256, size=images.shape, dtype=np.uint8)
    # "G(z)": the same faces in reverse order, with L-Gen's points = their truth;
    # "G(z_r)": noise, in which no face is found
    stage = _stage06(images[::-1].copy(), truth[::-1].copy(), noise)
    out = judge_with_dlib(stage, images, truth, EvaluationParams(), n_workers=1)
    # each set got its own rows of the one dlib call
    np.testing.assert_array_equal(out.generated_found, out.heldout_found[::-1])
    np.testing.assert_allclose(out.generated_points[out.generated_found],
                               out.heldout_points[::-1][out.generated_found], atol=1e-6)
    f = out.heldout_found
    # measured at 32 px -> 128: 90-95 % found, NME 0.062-0.078 on seeds 3-5 (a mean shape: 0.18)
    assert f.mean() >= 0.75 and out.heldout_nme.shape == (f.sum(),)
    assert out.heldout_nme.mean() < 0.12
    np.testing.assert_allclose(out.heldout_nme, nme(out.heldout_points[f], truth[f]))
    np.testing.assert_allclose(out.consistency, nme(truth[::-1][out.generated_found],
                                                    out.generated_points[out.generated_found]))
    assert not out.inverted_found.any() and len(out.inverted_nme) == 0
    metrics = out.metrics()
    check_keys(metrics, stage="06_evaluation")
    assert metrics["dlib_found_data"] == metrics["dlib_found_generated"] == pytest.approx(f.mean())
    assert metrics["dlib_found_inverted"] == 0 and np.isnan(metrics["budget_dlib_on_inversion_nme"])
    assert len(out.curves()) == 2 and all(len(v) for v in out.curves().values())


def test_dlib_follows_a_five_point_face_set_and_refuses_mixed_sizes(world32):
    images, truth = world32
    images, truth = images[:6], truth[:6]
    stage = _stage06(images, to_5(truth), images)
    out = judge_with_dlib(stage, images, to_5(truth), EvaluationParams(), n_workers=1)
    assert out.heldout_points.shape == (6, 5, 2) and out.generated_points.shape == (6, 5, 2)
    f = out.heldout_found
    np.testing.assert_allclose(out.inverted_nme, nme(out.heldout_points[f], to_5(truth)[f]))
    big = np.zeros((6, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        judge_with_dlib(_stage06(big, to_5(truth), images), images, to_5(truth), EvaluationParams(), n_workers=1)


def test_mean_or_nan_is_nan_for_an_empty_sample():
    assert np.isnan(mean_or_nan(np.zeros(0))) and mean_or_nan(np.array([1.0, 2.0])) == 1.5


def test_dlib_metrics_are_expected_only_when_dlib_is_on():
    stages = {"06_evaluation"}
    on, off = Params(), Params(evaluation=replace(EvaluationParams(), dlib=False))
    dlib_keys = {m.key for m in METRICS if m.needs == "evaluation.dlib" and m.stage in stages}
    assert {"dlib_nme_heldout", "consistency_nme_dlib", "dlib_found_data", "dlib_found_generated"} <= dlib_keys
    assert dlib_keys <= expected_keys(stages, on)
    assert not dlib_keys & expected_keys(stages, off)
    assert {"consistency_nme", "budget_judge_on_inversion_nme"} <= expected_keys(stages, off)
    for m in METRICS:  # every plain switch names a boolean parameter ("25 in ..." are conditions)
        for switch in (m.needs or "").split(" and "):
            if switch and " " not in switch:
                value = Params()
                for part in switch.split("."):
                    value = getattr(value, part)
                assert isinstance(value, bool), m.key


BUDGET = {"detector_nme_heldout": 0.03, "dlib_nme_heldout": 0.06, "dlib_found_data": 0.95,
          "budget_judge_on_inversion_nme": 0.12, "budget_dlib_on_inversion_nme": 0.15, "dlib_found_inverted": 0.4,
          "lgen_nme_train": 0.05, "lgen_nme_heldout": 0.11, "consistency_nme": 0.18}


def test_error_budget_names_the_link_with_the_largest_step():
    links = budget.error_budget(BUDGET)
    assert [link.nme for link in links] == [0.03, 0.12, 0.05, 0.11, 0.18]
    assert links[0].nme_dlib == 0.06 and links[0].found_dlib == 0.95
    assert np.isnan(links[2].nme_dlib) and np.isnan(links[4].nme_dlib)  # no consistency_nme_dlib given
    assert budget.largest_step(links) == (1, pytest.approx(0.09))  # data -> G(z_r): +0.09
    sentence = budget.verdict(links)
    assert "from “(a) judge on data faces" in sentence and "to “(b) judge on G(z_r)" in sentence
    assert "+0.090" in sentence and "G∘inversion keeps" in sentence
    # L-Gen's generalisation the worst link; a missing row is skipped, not a zero
    links = budget.error_budget({**BUDGET, "lgen_nme_heldout": 0.30, "budget_judge_on_inversion_nme": float("nan")})
    assert budget.largest_step(links) == (3, pytest.approx(0.25))
    assert budget.largest_step(budget.error_budget({"consistency_nme": 0.1})) is None
    assert "No link adds error" in budget.verdict(budget.error_budget({"detector_nme_heldout": 0.2,
                                                                        "consistency_nme": 0.1}))


def test_budget_markdown_is_one_table_with_its_verdict():
    text = budget.budget_markdown(budget.error_budget(BUDGET))
    lines = text.splitlines()
    assert lines[0] == "| link | NME | NME, dlib | what it measures |" and lines[1] == "|---|---|---|---|"
    rows = [ln for ln in lines if ln.startswith("| (")]
    assert len(rows) == 5 and all(ln.count("|") == 5 for ln in rows)
    assert "| 0.0300 | 0.0600 (95% found) |" in rows[0] and "| 0.0500 | — |" in rows[2]
    # dlib found no G(z_r): no number, but the share says why
    text = budget.budget_markdown(budget.error_budget({**BUDGET, "budget_dlib_on_inversion_nme": float("nan"),
                                                       "dlib_found_inverted": 0.0}))
    assert "| — (0% found) |" in text.splitlines()[3]
    assert lines[-1] == budget.verdict(budget.error_budget(BUDGET))


def test_lgen_errors_are_stage_04s_nme(models, latents):
    lgen = models[1]
    z = latents[0]
    target = np.random.default_rng(7).uniform(0.2, 0.8, size=(3, 49, 2)).astype(np.float32)
    with torch.no_grad():
        expected = nme(lgen(torch.from_numpy(z)).numpy(), target)
    np.testing.assert_array_equal(budget.lgen_errors(lgen, z, target), expected)


# ---------------------------------------------------------------------------- figures
def test_agreement_grid_draws():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(4)
    faces = rng.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)
    a, b = rng.uniform(0.2, 0.8, size=(2, 9, 49, 2))
    fig = figures.agreement_grid(faces, a, b, rng.uniform(size=9), n_each=3, title="t")
    image = fig.axes[0].images[0].get_array()
    assert image.shape[0] > 3 * 128 and image.shape[1] > 3 * 128  # 3 rows of 3 upscaled faces
    plt.close(fig)


def test_mirror_pairs_pair_each_mirror_with_its_chosen_training_face(tmp_path):
    import json

    z_train = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    z_mirror = -z_train[[7, 2]]
    np.save(tmp_path / "z_train.npy", z_train)
    np.save(tmp_path / "z_mirror.npy", z_mirror)
    (tmp_path / "mirror.json").write_text(json.dumps({"index": [7, 2], "yaw": [-38.4, 31.0], "yaw_unit": "degrees"}))
    pairs = load_mirror_pairs(tmp_path)
    np.testing.assert_array_equal(pairs.z_faces, z_train[[7, 2]])
    np.testing.assert_array_equal(pairs.z_mirrors, z_mirror)
    assert pairs.label(0) == "training face 7, yaw -38°" and pairs.label(1) == "training face 2, yaw +31°"
    (tmp_path / "mirror.json").write_text(json.dumps({"index": [7, 2], "yaw": [0.31, -0.2], "yaw_unit": "yaw proxy"}))
    assert load_mirror_pairs(tmp_path).label(0) == "training face 7, yaw proxy +0.31"
    (tmp_path / "mirror.json").write_text(json.dumps({"index": [7], "yaw": [1.0], "yaw_unit": "degrees"}))
    with pytest.raises(ValueError, match="z_mirror has 2"):
        load_mirror_pairs(tmp_path)


# ------------------------------------------- both kinds of label generator (stages 05, 06)
FEATURE_BUDGET = {**BUDGET, "consistency_nme_dlib": 0.2, "dlib_found_generated": 0.3,
                  "lgen_nme_train_features": 0.07, "lgen_nme_heldout_features": 0.13,
                  "consistency_nme_features": 0.14, "consistency_nme_dlib_features": 0.16}


def test_error_budget_of_the_feature_labels_shares_rows_a_and_b():
    z, f = budget.error_budget(FEATURE_BUDGET), budget.error_budget(FEATURE_BUDGET, "features")
    assert f[:2] == z[:2] and [link.nme for link in f[2:]] == [0.07, 0.13, 0.14]
    assert f[-1].nme_dlib == 0.16 and f[-1].found_dlib == 0.3
    assert budget.largest_step(f) == (1, pytest.approx(0.09))
    with pytest.raises(ValueError, match="kind"):
        budget.error_budget(BUDGET, "pixels")
    text = budget.budget_markdown(z, f)
    rows = [ln for ln in text.splitlines() if ln.startswith("| (")]
    assert len(rows) == 8 and sum("(a)" in r for r in rows) == 1  # (a), (b) once; 3 + 3 of their own
    assert "| 0.1400 | 0.1600 (30% found) |" in rows[-1]
    assert text.splitlines()[-1].startswith("On G's features: the largest step")
    assert text.startswith(budget.budget_markdown(z).rsplit("\n\n", 1)[0])


@pytest.fixture(scope="module")
def feature_lgen(models):
    from facelm.models.feature_lgen import FeatureLGen

    return FeatureLGen(models[0], members=2, grid=8, hidden=4, seed=3).eval()


def test_results_and_lgen_errors_work_with_a_features_label_generator(models, feature_lgen, latents):
    G = models[0]
    z_a, z_b = latents
    z = torch.from_numpy(z_a)
    faces, points = faces_and_landmarks(G, feature_lgen, z, batch_size=2, device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(points, feature_lgen(z).numpy(), atol=1e-6)
    path = latent_path(G, feature_lgen, z_a[0], z_b[0], 3, device="cpu")
    assert path.landmarks.shape == (5, 49, 2) and path.smoothness >= 1.0
    target = np.random.default_rng(8).uniform(0.2, 0.8, size=(3, 49, 2)).astype(np.float32)
    np.testing.assert_allclose(budget.lgen_errors(feature_lgen, z_a, target, batch_size=2),
                               nme(points, target), rtol=1e-5)


def test_label_generator_path_follows_the_kind(tmp_path):
    from facelm.config import LGenParams
    from facelm.evaluation.results import label_generator_path

    assert label_generator_path(tmp_path, "z") == tmp_path / "data/lgen/lgen.safetensors"
    assert label_generator_path(tmp_path, "features") == tmp_path / "data/lgen/features.safetensors"
    assert label_generator_path(tmp_path, LGenParams().kind).name == "lgen.safetensors"
    with pytest.raises(ValueError, match="lgen.kind"):
        label_generator_path(tmp_path, "pixels")

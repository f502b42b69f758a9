"""Generator-quality numbers: k-NN precision/recall and the Fréchet distance."""
import numpy as np
import pytest
import torch

from facelm.evaluation.quality import frechet_distance, generator_quality, precision_recall


def test_same_distribution_scores_high_and_disjoint_scores_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    p, r = precision_recall(a, b, k=3)
    assert p > 0.8 and r > 0.8
    far = b + 100.0
    assert precision_recall(a, far, k=3) == (0.0, 0.0)


def test_collapsed_generator_has_precision_but_no_recall():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 4))
    collapsed = real[:1] + 0.01 * rng.normal(size=(400, 4))  # every sample near one data point
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.9 and r < 0.05


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    # doubling the spread: FD = sum (sigma_a - sigma_b)^2 = 3 for unit vs 2x std
    assert frechet_distance(a, 2 * a) == pytest.approx(3.0, rel=0.02)


def test_generator_quality_on_a_tiny_detector():
    from facelm.models.detector import LandmarkDetector

    torch.manual_seed(0)
    det = LandmarkDetector(32, 49, 4, 0)
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (60, 32, 32, 3), dtype=np.uint8)
    flat = np.full((30, 32, 32, 3), 128, np.uint8)
    q = generator_quality(det, data[:30], data[30:], flat)
    assert set(q) == {"gen_precision", "gen_recall", "gen_fd", "floor_precision", "floor_recall", "floor_fd"}
    assert q["gen_recall"] < q["floor_recall"] and q["gen_fd"] > q["floor_fd"]
    with pytest.raises(ValueError, match="equal sample sizes"):
        generator_quality(det, data[:30], data[30:], flat[:10])


def test_evaluate_generator_keys_and_determinism():
    from facelm.config import EvaluationParams
    from facelm.evaluation.quality import evaluate_generator
    from facelm.models.began import Generator
    from facelm.models.detector import LandmarkDetector

    torch.manual_seed(0)
    G, judge = Generator(32, 4, 8, seed=0), LandmarkDetector(32, 49, 4, 0)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    held = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    cfg = EvaluationParams(quality_n=12, dlib=False)
    m1, faces = evaluate_generator(G, judge, train, held, cfg, seed=1)
    m2, _ = evaluate_generator(G, judge, train, held, cfg, seed=1)
    assert m1 == m2 and faces.shape == (12, 32, 32, 3) and faces.dtype == np.uint8
    assert set(m1) == {"gen_precision", "gen_recall", "gen_fd", "gen_floor_precision",
                       "gen_floor_recall", "gen_floor_fd"}
    m3, f3 = evaluate_generator(G, judge, train, held, EvaluationParams(quality_n=12, dlib_size=64), seed=1)
    assert 0.0 <= m3["gen_dlib_found"] <= 0.2  # an untrained G draws no face dlib can find
    assert {k: v for k, v in m3.items() if not k.startswith("gen_dlib")} == m1 and (f3 == faces).all()


def test_dlib_found_rate_is_measured_on_its_own_larger_sample(monkeypatch):
    """evaluation.dlib_found_n G(z) go to dlib (the quality sample's z, extended); the rate comes
    with its binomial standard error, and the quality metrics and faces stay the first n's."""
    from facelm.config import EvaluationParams
    from facelm.evaluation.quality import draw_faces, evaluate_generator
    from facelm.models import dlib_landmarks
    from facelm.models.began import Generator
    from facelm.models.detector import LandmarkDetector

    seen = []

    def fake_boxes(images, *, size, n_workers=0, progress=True):
        seen.append(np.asarray(images).copy())
        return None, np.arange(len(images)) % 4 == 0  # a face in every fourth

    monkeypatch.setattr(dlib_landmarks, "detect_boxes", fake_boxes)
    G, judge = Generator(32, 4, 8, seed=0), LandmarkDetector(32, 49, 4, 0)
    rng = np.random.default_rng(0)
    train, held = (rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8) for _ in range(2))
    m, faces = evaluate_generator(G, judge, train, held, EvaluationParams(quality_n=12, dlib_found_n=40), seed=1)
    assert len(seen) == 1 and seen[0].shape == (40, 32, 32, 3) and faces.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(seen[0][:12], faces)
    np.testing.assert_array_equal(seen[0], draw_faces(G, 40, seed=1))
    assert m["gen_dlib_found"] == 0.25
    assert m["gen_dlib_found_se"] == pytest.approx(np.sqrt(0.25 * 0.75 / 40))
    m0, _ = evaluate_generator(G, judge, train, held, EvaluationParams(quality_n=12, dlib=False), seed=1)
    assert {k: v for k, v in m.items() if not k.startswith("gen_dlib")} == m0

"""Stage 01 on CelebA with 49-point annotations from the detector (the paper's 300-W detector's role)."""
import numpy as np
import pytest
import yaml

from conftest import ROOT
from facelm.config import deep_merge, parse_params
from facelm.models.detector import LandmarkDetector, save_detector
from facelm.data.fakeceleba import make_fake_celeba
from facelm.data.faceset import load_meta, load_split
from facelm.data.prepare_celeba import prepare_celeba


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba") / "CelebA"
    make_fake_celeba(root, n=20, layout="aligned", seed=1, corrupt=1, no_face=0,
                     detect=dict(scale_factor=1.1, min_neighbors=5, min_size=20))
    return root


def params_for(root, landmarks):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return parse_params(deep_merge(base, {
        "dataset": "celeba", "image_size": 32,
        "celeba": {"root": str(root), "landmarks": landmarks, "scale_factor": 1.1, "min_size": 20,
                   "n_workers": 1, "shard_size": 8, "heldout": "valid"}}))


def test_detector_annotates_every_crop_with_49_points(tree, tmp_path):
    detector = tmp_path / "detector.safetensors"
    model = LandmarkDetector(size=32, n_points=49, width=4)
    save_detector(detector, model)
    summary = prepare_celeba(params_for(tree, "detector"), tmp_path / "faces", detector_path=detector)
    train = load_split(tmp_path / "faces", "train")
    assert summary["n_points"] == 49 and train.landmarks.shape[1:] == (49, 2)
    assert np.isfinite(train.landmarks).all() and (train.landmarks >= 0).all() and (train.landmarks <= 1).all()
    assert load_meta(tmp_path / "faces")["skipped_by_reason"]["corrupt"] == 1


def test_detector_of_another_size_is_refused(tree, tmp_path):
    detector = tmp_path / "detector64.safetensors"
    save_detector(detector, LandmarkDetector(size=64, n_points=49, width=4))
    with pytest.raises(ValueError, match="64 px"):
        prepare_celeba(params_for(tree, "detector"), tmp_path / "faces", detector_path=detector)


def test_missing_detector_is_refused_before_any_cropping(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="00_detector"):
        prepare_celeba(params_for(tree, "detector"), tmp_path / "faces", detector_path=tmp_path / "none.safetensors")
    assert not (tmp_path / "faces").exists()

"""Stage 01's face set: deterministic to the byte, so DVC's cache holds across identical runs."""
import filecmp

import numpy as np
import yaml

from facelm.config import deep_merge, parse_params
from facelm.data.faceset import load_meta, load_split
from facelm.data.prepare import prepare_faces

from conftest import ROOT


def small_params(**world):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return parse_params(deep_merge(base, {"world": {"n_train": 30, "n_heldout": 8, **world},
                                          "inversion": {"n_mirror": 2}, "results": {"interp_face": 0},
                                          "augmentation": {"ks": [10], "k_default": 10}}))


def test_same_params_same_bytes(tmp_path):
    params = small_params()
    prepare_faces(params, tmp_path / "a")
    prepare_faces(params, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["heldout_images.npy", "heldout_landmarks.npy", "meta.json",
                     "train_images.npy", "train_landmarks.npy"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert match == names and not mismatch and not errors


def test_splits_are_disjoint_and_described(tmp_path):
    prepare_faces(small_params(), tmp_path)
    train, heldout = load_split(tmp_path, "train"), load_split(tmp_path, "heldout")
    assert len(train) == 30 and len(heldout) == 8
    assert train.images.dtype == np.uint8 and train.landmarks.shape == (30, 49, 2)
    flat = train.images.reshape(30, -1)
    assert not any((flat == h.reshape(1, -1)).all(axis=1).any() for h in heldout.images)
    meta = load_meta(tmp_path)
    assert meta["dataset"] == "world" and meta["n_train"] == 30 and meta["n_skipped"] == 0


def test_world_run_drops_what_a_celeba_run_left(tmp_path):
    """The face-set folder persists between runs: a world run after a CelebA run must not
    keep the CelebA shards or provenance tables (they would change the folder's DVC hash)."""
    (tmp_path / "celeba_work").mkdir()
    (tmp_path / "train_provenance.csv").write_text("row,file,x0,y0,side,annotator\n")
    prepare_faces(small_params(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout_images.npy", "heldout_landmarks.npy",
                                                          "meta.json", "train_images.npy", "train_landmarks.npy"]

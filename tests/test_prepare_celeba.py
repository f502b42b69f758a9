"""Stage 01 on CelebA: annotators (CelebA's 5 points, the detector, the dlib hook), provenance,
skipped and unused faces, and inputs checked before any work."""
import os
import sys
import types

import cv2
import numpy as np
import pytest
import yaml

from conftest import ROOT
from facelm.config import deep_merge, parse_params, replace
from facelm.data.face_crop import crop_square
from facelm.data.faceset import PROVENANCE_COLUMNS, load_meta, load_provenance, load_split
from facelm.data.fakeceleba import make_fake_celeba
from facelm.data.prepare import check_sources
from facelm.data.prepare_celeba import prepare_celeba
from facelm.models.detector import LandmarkDetector, save_detector

CELEBA = {"scale_factor": 1.1, "min_size": 20, "n_workers": 1, "shard_size": 8, "heldout": "valid"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba") / "CelebA"
    base = params_for(root, "celeba5").celeba
    return make_fake_celeba(root, n=20, layout="aligned", seed=1, corrupt=1, no_face=0, detect=base)


def params_for(root, landmarks, **celeba):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return parse_params(deep_merge(base, {
        "dataset": "celeba", "image_size": 32,
        "celeba": {"root": str(root), "landmarks": landmarks, **CELEBA, **celeba}}))


@pytest.fixture(scope="module")
def celeba5(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("faces")
    return out, prepare_celeba(params_for(tree.root, "celeba5"), out)


def test_detector_annotates_every_crop_with_49_points(tree, tmp_path):
    detector = tmp_path / "detector.safetensors"
    model = LandmarkDetector(size=32, n_points=49, width=4, depth=1)
    save_detector(detector, model)
    summary = prepare_celeba(params_for(tree.root, "detector"), tmp_path / "faces", detector_path=detector)
    train = load_split(tmp_path / "faces", "train")
    assert summary["n_points"] == 49 and train.landmarks.shape[1:] == (49, 2)
    assert np.isfinite(train.landmarks).all() and (train.landmarks >= 0).all() and (train.landmarks <= 1).all()
    assert load_meta(tmp_path / "faces")["skipped_by_reason"]["corrupt"] == 1
    assert set(load_provenance(tmp_path / "faces", "train").annotators) == {"detector"}


def test_detector_of_another_size_is_refused(tree, tmp_path):
    detector = tmp_path / "detector64.safetensors"
    save_detector(detector, LandmarkDetector(size=64, n_points=49, width=4, depth=1))
    with pytest.raises(ValueError, match="64 px"):
        prepare_celeba(params_for(tree.root, "detector"), tmp_path / "faces", detector_path=detector)


def test_missing_detector_is_refused_before_any_cropping(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="00_detector"):
        prepare_celeba(params_for(tree.root, "detector"), tmp_path / "faces", detector_path=tmp_path / "none.safetensors")
    assert not (tmp_path / "faces").exists()


def test_provenance_traces_every_face_back_to_its_photo(tree, celeba5):
    """Each face's row names its photo, crop box and annotator; cutting that box out of the
    photo gives the face back, pixel for pixel."""
    out, summary = celeba5
    assert (out / "train_provenance.csv").read_text().splitlines()[0] == ",".join(PROVENANCE_COLUMNS)
    for split in ("train", "heldout"):
        faces, prov = load_split(out, split), load_provenance(out, split)
        assert len(prov) == len(faces) == summary[f"n_{split}"] > 0
        assert prov.crop_boxes.dtype == np.int32 and prov.crop_boxes.shape == (len(faces), 3)
        assert set(prov.annotators) == {"celeba5"}
        for i, (name, (x0, y0, side)) in enumerate(zip(prov.files, prov.crop_boxes)):
            row = tree.files.index(name)
            assert tree.partition[row] == (0 if split == "train" else 1)
            photo = cv2.imread(str(tree.root / "img_align_celeba" / name))[..., ::-1]
            np.testing.assert_array_equal(crop_square(photo, int(x0), int(y0), int(side), 32), faces.images[i])
            # the landmarks in the crop are CelebA's points of that photo (to its integer rounding)
            back = faces.landmarks[i] * side + (x0, y0)
            assert np.abs(back - tree.points5[row]).max() <= 0.5 + 1e-3


def test_unused_split_is_listed_in_meta(tree, celeba5):
    out, summary = celeba5
    meta = load_meta(out)
    test_files = [f for f, p in zip(tree.files, tree.partition) if p == 2 and f not in tree.corrupt_files]
    assert meta["unused_split"] == "test" and meta["unused_files"] == test_files and meta["n_unused"] == len(test_files) > 0
    assert meta["n_train"] + meta["n_heldout"] + meta["n_unused"] + meta["n_skipped"] == meta["n_images"] == 20


def test_outside_a_project_folder_with_an_absolute_root(tree, tmp_path, monkeypatch):
    """celeba5 with an absolute root needs no project root (it raised 'no facelm project')."""
    monkeypatch.chdir(tmp_path)
    summary = prepare_celeba(params_for(tree.root, "celeba5"), tmp_path / "faces")
    assert summary["n_train"] > 0 and (tmp_path / "faces" / "train_images.npy").is_file()


def test_dlib_annotator_hook_skips_faces_it_cannot_place(tree, tmp_path, monkeypatch):
    """celeba.landmarks: dlib goes through facelm.models.dlib_landmarks.annotate (replaced
    here by a stand-in): its NaN rows (no face) and rows outside the crop are skipped and
    counted, every other crop gets its 49 points and "dlib" as its annotator."""
    calls = []

    def annotate(images, boxes, *, size, n_workers, progress):
        calls.append((len(images), boxes, size, n_workers))
        pts = np.tile(np.linspace(0.2, 0.8, 49, dtype=np.float32)[:, None], (len(images), 1, 2))
        pts[0] = np.nan   # dlib found no face in the first crop
        pts[1, 5] = 1.3   # and put a point outside the second
        return pts, np.isfinite(pts).all(axis=(1, 2))

    stand_in = types.SimpleNamespace(annotate=annotate, model_path=lambda: tmp_path)
    monkeypatch.setitem(sys.modules, "facelm.models.dlib_landmarks", stand_in)
    params = params_for(tree.root, "dlib")
    summary = prepare_celeba(params, tmp_path / "faces")
    assert calls == [(19, "detect", params.evaluation.dlib_size, 1)]  # every kept crop, one call
    assert summary["skipped_by_reason"]["not_annotated"] == 1
    assert summary["skipped_by_reason"]["annotation_outside"] == 1
    assert summary["n_points"] == 49 and summary["n_skipped"] == 3  # + the corrupt JPEG
    prov = load_provenance(tmp_path / "faces", "train")
    assert set(prov.annotators) == {"dlib"} and len(prov) == summary["n_train"]
    skipped = {s["reason"] for s in summary["skipped_files"]}
    assert {"corrupt", "not_annotated", "annotation_outside"} == skipped


def test_missing_partition_file_stops_the_stage_in_one_line(tree, tmp_path):
    """check_sources (what the stage runner calls before the notebook) names the missing file
    in one line, without reading anything."""
    import shutil

    root = tmp_path / "t"
    shutil.copytree(tree.root, root)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError) as err:
        check_sources(params_for(root, "celeba5"))
    assert "list_eval_partition.txt" in str(err.value) and "\n" not in str(err.value)
    check_sources(params_for(tree.root, "celeba5"))  # a complete tree passes
    with pytest.raises(FileNotFoundError, match="00_detector"):
        check_sources(params_for(tree.root, "detector"), project=tmp_path)
    world = replace(params_for(tree.root, "celeba5"), dataset="world")
    check_sources(world)  # nothing to check for the rendered world


def test_missing_partition_file_through_facelm_stage(tree, tmp_path):
    """`facelm stage 01_preprocess` with list_eval_partition.txt gone: exit 2, one line on
    stderr naming the file, no traceback (there were 62 lines and two before)."""
    import shutil
    import subprocess

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("dvc.yaml", "notebooks/01_preprocess.ipynb"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(tree.root, project / "celeba")
    (project / "celeba" / "list_eval_partition.txt").unlink()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = deep_merge(params, {"dataset": "celeba", "celeba": {"root": "celeba", **CELEBA}})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "facelm", "stage", "01_preprocess"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "list_eval_partition.txt" in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr

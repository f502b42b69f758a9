"""The real-data path end to end: a fake CelebA tree in the real formats through `dvc repro`,
annotated as the paper did (Haar crop -> a 300-W-trained detector -> 49 points) with dlib."""
import json

import pytest
import yaml

from conftest import ROOT, make_project, run
from facelm.config import CelebAParams, load_params
from facelm.data.annotators import ANNOTATOR_SKIPS
from facelm.data.fakeceleba import make_fake_celeba
from facelm.report.metrics import expected_keys

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def celeba_project(tmp_path_factory):
    ci = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    tree = tmp_path_factory.mktemp("celeba") / "CelebA"
    celeba = {"root": str(tree), "layout": "aligned", "landmarks": "dlib", "scale_factor": 1.1,
              "min_neighbors": 5, "min_size": 20, "n_workers": 2, "shard_size": 16}
    fake = make_fake_celeba(tree, n=60, layout="aligned", seed=0, corrupt=1, no_face=1,
                            detect=CelebAParams(**celeba))
    overlay = {"dataset": "celeba", "celeba": celeba,
               "augmentation": {"ks": [10, 20], "k_default": 10, "n_synth": 20}}
    assert ci["inversion"]["n_mirror"] <= 10
    dest = make_project(tmp_path_factory.mktemp("pipeline_celeba") / "facelm", [overlay])
    run(["dvc", "repro"], dest)
    return dest, fake


def test_fake_celeba_goes_through_the_pipeline(celeba_project):
    project, fake = celeba_project
    meta = json.loads((project / "data" / "faces" / "meta.json").read_text())
    assert meta["dataset"] == "celeba" and meta["landmarks"] == "dlib" and meta["n_points"] == 49
    # the corrupt JPEG and the background-only image are skipped, counted and listed
    assert meta["skipped_by_reason"].get("corrupt") == 1 and meta["skipped_by_reason"].get("no_face") == 1
    listed = {entry["file"] for entry in meta["skipped_files"]}
    assert set(fake.corrupt_files) | set(fake.no_face_files) <= listed
    assert meta["n_train"] + meta["n_heldout"] + meta["n_unused"] + meta["n_skipped"] == 60
    # crops dlib cannot place are skipped and counted like the others (the fake faces are
    # rendered world faces, which dlib's HOG finds in the 32 px crops upscaled to 128)
    assert set(ANNOTATOR_SKIPS) <= set(meta["skipped_by_reason"])
    assert sum(meta["skipped_by_reason"].values()) == meta["n_skipped"]
    assert meta["n_train"] + meta["n_heldout"] >= 40
    assert len(meta["unused_files"]) == meta["n_unused"] > 0
    # every face traces back to its photo
    for split in ("train", "heldout"):
        rows = (project / "data" / "faces" / f"{split}_provenance.csv").read_text().splitlines()
        assert rows[0] == "row,file,x0,y0,side,annotator" and len(rows) == meta[f"n_{split}"] + 1
        assert {row.rsplit(",", 1)[1] for row in rows[1:]} == {"dlib"}
    report = (project / "reports" / "01_preprocess.html").read_text()
    assert "no_face" in report and "corrupt" in report
    lgen = json.loads((project / "metrics" / "04_lgen.json").read_text())
    z_dim = load_params(project / "params.yaml").began.z_dim
    assert lgen["lgen_params"] == 53_986 + (z_dim - 64) * 128  # Table I (49 points, 64-d z) + wider z
    evaluation = json.loads((project / "metrics" / "06_evaluation.json").read_text())
    required = expected_keys({"06_evaluation"}, load_params(project / "params.yaml"))
    assert "dlib_found_data" in required and required <= set(evaluation)
    assert evaluation["dlib_found_data"] >= 0.5  # dlib finds the faces it annotated
    for name in ("02_began", "05_results", "06_evaluation", "07_augmentation"):
        assert (project / "reports" / f"{name}.html").is_file()

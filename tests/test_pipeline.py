"""`dvc repro` end to end at CI size, then nbval over the executed notebooks.

Runs in a copy of the project (the pipeline writes data/, reports/ and metrics/), with
configs/ci.yaml applied to params.yaml.
"""
import json
import sys

import pytest
import yaml

from conftest import run
from facelm.config import load_params
from facelm.report.metrics import REGISTRY, expected_keys

pytestmark = pytest.mark.pipeline


def test_repro_writes_reports_and_contract_metrics(project):
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for name in stages:
        html = project / "reports" / f"{name}.html"
        assert html.is_file() and "data:image/png;base64" in html.read_text(), name
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    keys = set()
    for entry in shown.values():
        for metrics_file in entry.get("data", {}).values():
            keys |= set(metrics_file.get("data", {}))
    # the metrics registry is the contract: every key of an implemented producer is there,
    # and nothing unregistered (e.g. a wall-clock time) is
    expected = expected_keys(stages, load_params(project / "params.yaml"))  # dlib's keys: evaluation.dlib
    assert expected <= keys, f"missing metrics: {sorted(expected - keys)}"
    assert keys <= set(REGISTRY), f"metrics not in facelm/report/metrics.py: {sorted(keys - set(REGISTRY))}"



def test_the_repro_is_quiet(project):
    """No stage warns: the executed notebooks (reports/*.ipynb) hold no warning in any output."""
    notebooks = sorted((project / "reports").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        for cell in json.loads(path.read_text())["cells"]:
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", ""))
                assert "Warning" not in text, (path.name, cell.get("id"), text[:300])

def test_second_repro_is_a_no_op(project):
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in out and "up to date" in out.lower()


def test_params_change_reruns_only_dependent_stages(project):
    """A parameter marks exactly the stages that use it as changed (downstream follow via data)."""
    assert "changed" not in run(["dvc", "status"], project).stdout
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    original = (project / "params.yaml").read_text()
    cases = [("world", "n_heldout", {"01_preprocess"})]
    if "05_results" in stages:
        cases.append(("results", "n_random", {"05_results"}))
    try:
        for section, key, expected in cases:
            params = yaml.safe_load(original)
            params[section][key] += 1
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            changed = set(json.loads(run(["dvc", "status", "--json"], project).stdout))
            assert changed == expected, (section, key, changed)
    finally:
        (project / "params.yaml").write_text(original)


def test_executed_notebooks_rerun_under_nbval(project):
    """Re-execute each report notebook: cells marked NBVAL_CHECK_OUTPUT must reproduce exactly."""
    notebooks = sorted(str(p) for p in (project / "reports").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", *notebooks], project)

"""facelm.report: the metrics registry, the reports index, the stage runner's errors, the CLI hooks."""
import ast
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from facelm.report import metrics as registry
from facelm.report.index import build_index, render_index
from facelm.report.metrics import METRICS, REGISTRY, UnknownMetricError
from facelm.report.metrics_file import write_metrics
from facelm.report.stage import StageError, raising_file, user_error

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


# ------------------------------------------------------------------------------ registry
def test_registry_keys_belong_to_pipeline_stages_that_write_their_metrics_file():
    assert len(REGISTRY) == len(METRICS) > 20
    for m in METRICS:
        assert re.fullmatch(r"[a-z][A-Za-z0-9_]*", m.key), m.key  # flat names (dvc metrics)
        assert m.meaning and "\n" not in m.meaning, m.key
        declared = [next(iter(e)) if isinstance(e, dict) else e for e in STAGES[m.stage].get("metrics", [])]
        assert f"metrics/{m.stage}.json" in declared, (m.key, m.stage)
    assert registry.stages() == sorted(registry.stages())  # pipeline order


def test_registry_holds_no_wall_clock_times():
    """Metrics are reproducible numbers: timings belong to the reports."""
    for m in METRICS:
        assert not re.search(r"seconds|_ms\b|_s$|time|per_s", m.key), m.key


def test_spec_contract_keys_are_registered_including_the_ones_not_produced_yet():
    contract = {m.key for m in METRICS if m.contract}
    assert {"began_M_final", "inversion_l1_heldout", "lgen_params", "interp_smoothness",
            "consistency_nme", "aug_nme_real_plus_synth", "dlib_nme_heldout", "consistency_nme_dlib",
            "dlib_found_data", "dlib_found_generated", "consistency_nme_features"} <= contract
    assert all(m.contract for m in METRICS if not m.produced)


def _readme_metrics_table() -> dict[str, tuple[str, str]]:
    """``key -> (stage number, meaning)`` from the README's table under "### Metrics"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Metrics", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) != 3 or cells[0] in ("key", "---"):
            if rows and not line.startswith("|"):
                break  # the table ended
            continue
        for key in re.findall(r"`([^`]+)`", cells[0]):
            rows[key] = (cells[1], cells[2])
    return rows


def test_readme_metrics_table_matches_the_registry():
    table = _readme_metrics_table()
    assert table
    for key, (stage, meaning) in table.items():
        assert key in REGISTRY, f"README lists {key}, which the registry does not have"
        m = REGISTRY[key]
        assert stage == m.stage[:2], (key, stage, m.stage)
        assert " ".join(meaning.split()) == m.meaning, f"{key}: README and registry say different things"
    required = {m.key for m in METRICS if (m.contract or m.readme) and m.produced}
    assert required <= set(table), f"README's metrics table lacks {sorted(required - set(table))}"


def test_markdown_table_renders_the_registry(monkeypatch):
    lines = registry.markdown_table().splitlines()
    assert lines[:2] == ["| key | stage | meaning |", "|---|---|---|"]
    assert "| `began_M_final` | 02 | BEGAN convergence measure M averaged over the last 1 % of steps |" in lines
    pending = registry.Metric("not_landed", "06_evaluation", "a key whose producer has not landed",
                              contract=True, produced=False)
    monkeypatch.setattr(registry, "METRICS", registry.METRICS + (pending,))
    assert "not_landed" not in registry.markdown_table()  # unproduced keys stay out of the README


def test_write_metrics_refuses_unregistered_keys_and_other_stages_keys(tmp_path):
    with pytest.raises(UnknownMetricError, match="not in the registry"):
        write_metrics(tmp_path / "05_results.json", {"interp_smoothness": 1.0, "made_up": 2})
    with pytest.raises(UnknownMetricError, match="belongs to stage 02_began"):
        write_metrics(tmp_path / "05_results.json", {"began_steps": 3})
    assert not list(tmp_path.iterdir())  # nothing written when refused


def test_write_metrics_writes_plain_rounded_json_in_the_given_order(tmp_path):
    path = tmp_path / "metrics" / "07_augmentation.json"
    out = write_metrics(path, {"aug_nme_real_plus_synth": np.float32(0.0627021234), "aug_k": np.int64(20),
                               "aug_nme_real_only": 1 / 3})
    assert out == {"aug_nme_real_plus_synth": 0.062702, "aug_k": 20, "aug_nme_real_only": 0.333333}
    # the exact bytes the stages have always written: dvc.lock and the CI metrics stay identical
    assert path.read_text() == ('{\n  "aug_nme_real_plus_synth": 0.062702,\n  "aug_k": 20,\n'
                                '  "aug_nme_real_only": 0.333333\n}\n')
    assert type(json.loads(path.read_text())["aug_k"]) is int


# --------------------------------------------------------------------------------- index
def _fake_project(root):
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "02_began.json").write_text(json.dumps({"began_steps": 40, "began_M_final": 0.5}))
    (root / "metrics" / "99_other.json").write_text(json.dumps({"not_registered": 1.5}))
    (root / "reports").mkdir()
    (root / "reports" / "02_began.html").write_text(
        "<html><head><title>t</title></head><body><h1>02 · BEGAN training<a class='anchor-link'>¶</a></h1>"
        "</body></html>")
    return root


def test_index_takes_meanings_and_headline_order_from_the_registry(tmp_path):
    text = render_index(_fake_project(tmp_path))
    assert "BEGAN training" in text and '<a href="02_began.html">' in text
    headline = text.split("<h2>Headline metrics</h2>", 1)[1].split("<h2>", 1)[0]
    # registry order (M_final before steps), whatever the file's order
    assert headline.index("began_M_final") < headline.index("began_steps")
    assert registry.meaning("began_steps") in headline and "not_registered" not in headline
    assert "Not in the metrics registry: not_registered" in text


def test_build_index_writes_the_page_and_refuses_a_missing_root(tmp_path):
    out = build_index(_fake_project(tmp_path))
    assert out == tmp_path / "reports" / "index.html"
    assert out.read_text(encoding="utf-8") == render_index(tmp_path)  # same bytes every time
    with pytest.raises(FileNotFoundError):
        build_index(tmp_path / "missing")


def test_report_modules_are_cli_subcommands_not_scripts():
    """One CLI: report modules add subcommands (add_parser) and have no main() of their own."""
    for path in sorted((ROOT / "facelm" / "report").glob("*.py")) + sorted((ROOT / "facelm" / "evaluation").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" not in names, f"{path.name} has its own main()"
        assert "__main__" not in path.read_text(), f"{path.name} is runnable as a script"
    proc = subprocess.run([sys.executable, "-m", "facelm", "index", "--root", "/nonexistent/facelm"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "/nonexistent/facelm" in proc.stderr


def test_plots_command_reports_a_failure_in_one_line(monkeypatch, capsys):
    import argparse

    from facelm.report import plots

    def fail(**_):
        raise RuntimeError("dvc plots show failed:\nsomething")

    monkeypatch.setattr(plots, "show_plots", fail)
    parser = argparse.ArgumentParser()
    plots.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plots"])
    assert args.func(args) == 2
    assert "facelm: error: dvc plots show failed" in capsys.readouterr().err


# --------------------------------------------------------------------------------- stage
def _ipython_traceback(ename: str, evalue: str, frames: list[str]) -> list[str]:
    """A kernel traceback shaped like IPython 8's (colour codes included)."""
    red = "\x1b[0;31m"
    out = [f"{red}{'-' * 75}\x1b[0m", f"{red}{ename}\x1b[0m      Traceback (most recent call last)",
           "Cell \x1b[0;32mIn[3], line 2\x1b[0m\n      1 x = 1\n----> 2 f()\n"]
    out += [f"File \x1b[0;32m{f}:17\x1b[0m, in \x1b[0;36mf\x1b[0;34m()\x1b[0m\n---> 17 raise\n" for f in frames]
    return out + [f"{red}{ename}\x1b[0m: {evalue}"]


def test_user_error_accepts_one_line_messages_raised_inside_facelm():
    celeba = str(ROOT / "facelm" / "data" / "celeba.py")
    tb = _ipython_traceback("FileNotFoundError", "missing CelebA partition /d/list_eval_partition.txt",
                            ["/usr/lib/python3/site-packages/numpy/x.py", celeba])
    assert raising_file(tb) == ROOT / "facelm" / "data" / "celeba.py"
    assert user_error("FileNotFoundError", "missing CelebA partition /d/list_eval_partition.txt", tb) == \
        "FileNotFoundError: missing CelebA partition /d/list_eval_partition.txt"
    assert user_error("ParamsError", "began.lr must be > 0", tb) == "ParamsError: began.lr must be > 0"


def test_user_error_leaves_bugs_to_the_full_traceback():
    facelm_file = str(ROOT / "facelm" / "landmarks.py")
    inside = _ipython_traceback("ValueError", "x", [facelm_file])
    assert user_error("KeyError", "'a'", inside) is None                    # not a user-facing type
    assert user_error("ValueError", "two\nlines", inside) is None           # not one line
    numpy_deep = _ipython_traceback("ValueError", "x", [facelm_file, "/site-packages/numpy/core.py"])
    assert user_error("ValueError", "operands could not be broadcast", numpy_deep) is None
    assert user_error("ValueError", "x", _ipython_traceback("ValueError", "x", [])) is None  # the cell itself


def _stage_project(root, cell: str):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    (root / "notebooks").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    nb = new_notebook(cells=[new_code_cell('params_file = "params.yaml"', metadata={"tags": ["parameters"]}),
                             new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "98_fails.ipynb")
    return root


def test_stage_with_a_user_error_says_one_line_and_exits_2(tmp_path):
    """e.g. a missing CelebA list file: one line, not papermill's two tracebacks (issue 15)."""
    root = _stage_project(tmp_path, "from facelm.paths import project_root\nproject_root('/')")
    proc = subprocess.run([sys.executable, "-m", "facelm", "stage", "98_fails"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "stage 98_fails: FileNotFoundError: no facelm project" in lines[0]
    assert "reports/98_fails.ipynb" in lines[0] and "Traceback" not in proc.stderr
    # the kernel process's own stderr (ipykernel's logging, e.g. a shutdown race) went to a file
    assert (root / "reports" / "98_fails.kernel.log").is_file()
    html = root / "reports" / "98_fails.html"
    assert html.is_file() and "FileNotFoundError" in html.read_text()  # the report shows where


def test_stage_error_is_a_runtime_error_for_the_cli():
    assert issubclass(StageError, RuntimeError)

"""Project hygiene: clean source notebooks, a pipeline that matches them, a conda env that matches pip."""
import hashlib
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_notebooks_are_clean_with_stable_ids():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        ids = [cell.get("id") for cell in nb["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: missing or repeated cell ids"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, \
                    f"{path.name}: cell {cell['id']} holds outputs; clear them before committing"
        assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_every_numbered_notebook_is_a_stage_with_a_parameters_cell():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    numbered = {p.stem for p in NOTEBOOKS if re.match(r"\d\d_", p.name)}
    assert numbered == {name for name in stages if re.match(r"\d\d_", name)}
    assert set(stages) - numbered == {"index"}  # the only stage that is not a notebook
    for name, stage in stages.items():
        if name not in numbered:
            continue
        assert stage["cmd"] == f"python -m facelm stage {name}"
        assert f"notebooks/{name}.ipynb" in stage["deps"]
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "params_file" in "".join(tagged[0]["source"])
        outs = {next(iter(o)) if isinstance(o, dict) else o for st in stages.values() for o in st.get("outs", [])}
        for dep in stage["deps"]:
            made_by_pipeline = any(dep == o or dep.startswith(o.rstrip("/") + "/") for o in outs)
            assert made_by_pipeline or (ROOT / dep).exists(), f"{name}: dependency {dep} does not exist"


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_reqs = {_name(r): r.replace(" ", "") for r in pip_part if not r.startswith("-e")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("facelm")]
    py_reqs = {_name(r): r.replace(" ", "") for r in reqs}
    assert env_reqs == py_reqs
    assert any(str(d).startswith("python") for d in env["dependencies"] if isinstance(d, str))


# ------------------------------------------------------------------ dvc.yaml code deps
# Imports each stage's notebook's import statements in a fresh interpreter (one fork per
# stage after the heavy third-party imports, which import no facelm module) and prints the
# facelm module files that ended up in sys.modules.
_PROBE = r"""
import json, os, sys
import matplotlib; matplotlib.use("Agg")
import numpy, torch, matplotlib.pyplot, yaml  # shared by every stage: imported once, before forking
assert not [m for m in sys.modules if m == "facelm" or m.startswith("facelm.")]
result = {}
for stage, code in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        exec(code, {})
        files = sorted(m.__file__ for n, m in list(sys.modules.items())
                       if (n == "facelm" or n.startswith("facelm.")) and getattr(m, "__file__", None))
        with os.fdopen(write, "w") as out:
            json.dump(files, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        sys.exit(f"importing the modules of {stage} failed")
    result[stage] = json.loads(text)
print(json.dumps(result))
"""
# what the `index` stage runs (python -m facelm index), called on an empty project folder
_INDEX_CODE = ("import tempfile\nfrom facelm.report.index import build_index\n"
               "build_index(tempfile.mkdtemp())")


# Modules a stage imports whose content cannot change what the stage writes (say why):
NOT_OUTPUT = {
    # names and meanings of metrics keys: adding one must not re-run every stage; the
    # writer (metrics_file.py, a dep) refuses a key it lacks, so a stage never writes one
    "facelm/report/metrics.py": {"00_detector", "01_preprocess", "02_began", "03_inversion", "04_lgen",
                                 "05_results", "06_evaluation", "07_augmentation"},
}


def _notebook_imports(path: Path) -> str:
    """Every import statement of a notebook's code cells, as one block of code."""
    import ast

    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return "\n".join(ast.unparse(n) for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.Import, ast.ImportFrom)))


def _codeless(path: Path) -> bool:
    """A module with nothing but a docstring and dunder constants (e.g. ``__version__``)."""
    import ast

    for node in ast.parse(path.read_text()).body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        dunder = (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                  and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets))
        if not (docstring or dunder):
            return False
    return True


def test_every_module_a_stage_imports_is_one_of_its_deps():
    """A change to any facelm module a stage's notebook imports re-runs that stage."""
    import subprocess
    import sys

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    code = {name: _notebook_imports(ROOT / "notebooks" / f"{name}.ipynb") for name in stages if name != "index"}
    code["index"] = _INDEX_CODE
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, files in imported.items():
        deps = [Path(d) for d in stages[name]["deps"]]
        assert len(files) > 3, (name, files)  # the probe really imported the stage's modules
        missing = []
        for file in files:
            rel = Path(file).resolve().relative_to(ROOT)
            exempt = _codeless(ROOT / rel) or name in NOT_OUTPUT.get(rel.as_posix(), ())
            if not any(rel == d or d in rel.parents for d in deps) and not exempt:
                missing.append(rel.as_posix())
        assert not missing, f"stage {name} imports {missing} but does not depend on them (dvc.yaml)"


def test_readme_layout_lists_every_module_under_its_folder():
    """The README's Layout table matches the tree: each package folder has a row naming
    exactly its modules (a top-level module with a row of its own is named there)."""
    section = (ROOT / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `facelm/") and len(cells) == 3:
            rows[cells[0].strip("`")] = set(re.findall(r"`(\w+\.py)`", cells[2]))
    own_rows = {Path(r).name for r in rows if r.endswith(".py")}
    for init in sorted((ROOT / "facelm").rglob("__init__.py")):
        folder = init.parent.relative_to(ROOT).as_posix() + "/"
        assert folder in rows, f"README Layout has no row for {folder}"
        modules = {p.name for p in init.parent.glob("*.py")} - {"__init__.py", "__main__.py"}
        if folder == "facelm/":
            modules -= own_rows
        assert rows[folder] == modules, (folder, "missing:", sorted(modules - rows[folder]),
                                         "not in the tree:", sorted(rows[folder] - modules))
    for row in rows:
        assert (ROOT / row).exists(), f"README Layout names {row}, which does not exist"


def test_committed_metrics_are_the_ones_dvc_lock_records():
    # `dvc metrics show` on a fresh clone reads these files; a stale one would report numbers
    # of a run that dvc.lock no longer describes (and `dvc status` would call the stage changed)
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    recorded = {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])
                if out["path"].startswith("metrics/")}
    committed = sorted((ROOT / "metrics").glob("*.json"))
    assert committed and {f"metrics/{p.name}" for p in committed} == set(recorded)
    for path in committed:
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        assert md5 == recorded[f"metrics/{path.name}"], \
            f"{path.name} differs from the run dvc.lock records; copy that run's file"

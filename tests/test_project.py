"""Project hygiene: clean source notebooks, a pipeline that matches them, a conda env that matches pip."""
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

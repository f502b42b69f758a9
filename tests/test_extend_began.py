"""tools/extend_began.py: an exp's data/began comes out of the DVC cache whole."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from extend_began import copy_exp_began  # noqa: E402


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_exp_folder_is_copied_from_the_cache_and_an_unknown_exp_is_named(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    _git(root, "init", "-q")
    cache = root / ".dvc" / "cache" / "files" / "md5"
    files = {"generator.safetensors": ("1f" + "0" * 30, b"G"),
             "checkpoint/state.pt": ("2e" + "0" * 30, b"state at step 7000")}
    for md5, data in files.values():
        (cache / md5[:2]).mkdir(parents=True, exist_ok=True)
        (cache / md5[:2] / md5[2:]).write_bytes(data)
    folder = "3d" + "0" * 30 + ".dir"
    (cache / "3d").mkdir()
    (cache / "3d" / folder[2:]).write_text(json.dumps(
        [{"relpath": rel, "md5": md5} for rel, (md5, _) in files.items()]))
    lock = {"stages": {"02_began": {"outs": [{"path": "data/began", "md5": folder}]}}}
    (root / "dvc.lock").write_text(json.dumps(lock))
    _git(root, "add", "dvc.lock")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "exp")
    _git(root, "update-ref", "refs/exps/ab/cdef/long0", "HEAD")

    out = tmp_path / "run"
    assert copy_exp_began(root, "long0", out) == folder
    for rel, (_, data) in files.items():
        assert (out / rel).read_bytes() == data
    with pytest.raises(SystemExit, match="no experiment named 'nope'"):
        copy_exp_began(root, "nope", tmp_path / "other")

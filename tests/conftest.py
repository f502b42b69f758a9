"""Shared fixtures: CI-sized `dvc repro` runs of copies of the project, used by several test files."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@local",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@local"}


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: on a busy 2-core machine, intra-op threads make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_project(dest: Path, overlays: list[dict]) -> Path:
    """A git copy of the working tree (tracked and untracked-not-ignored files), with
    configs/ci.yaml and then each overlay merged into params.yaml."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "facelm", "profile", "configs/ci.yaml"], dest)
    for i, overlay in enumerate(overlays):
        path = dest / f".overlay{i}.yaml"
        path.write_text(yaml.safe_dump(overlay))
        run([sys.executable, "-m", "facelm", "profile", str(path)], dest)
        path.unlink()
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "ci copy"], dest)
    return dest


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """The embedded default pipeline at CI size, after `dvc repro`."""
    dest = make_project(tmp_path_factory.mktemp("pipeline") / "facelm", [])
    run(["dvc", "repro"], dest)
    return dest

"""Shared fixtures: one CI-sized `dvc repro` of a copy of the project, used by several test files."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A git copy of the working tree (tracked and untracked-not-ignored files) with the CI profile."""
    dest = tmp_path_factory.mktemp("pipeline") / "facelm"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "facelm", "profile", "configs/ci.yaml"], dest)
    env = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@local",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@local"}
    os.environ.update(env)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "ci copy"], dest)
    run(["dvc", "repro"], dest)
    return dest



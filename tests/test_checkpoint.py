"""The one atomic writer: whole files or none, with ordinary permissions."""
import os
import stat

import pytest

from facelm.checkpoint import atomic_write


def test_atomic_write_gives_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "{}"


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    (tmp_path / "a.txt").write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", fail)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]

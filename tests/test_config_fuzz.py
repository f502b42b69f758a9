"""Property: `facelm check --params FILE` on any mutation of params.yaml either accepts a valid
config (exit 0, nothing on stderr) or refuses it in exactly one line that names a key or the
file (exit 2) -- never a traceback (issue 15, items 2-4)."""
import contextlib
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from facelm.cli import main
from facelm.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "params.yaml").read_text()
BASE = yaml.safe_load(SHIPPED)
KEYS = [(s,) for s in BASE] + [(s, k) for s, v in BASE.items() if isinstance(v, dict) for k in v]

# a refusal: "facelm check: error: p.yaml: <key> must be / is not a known parameter / is given
# twice ...", or one about the file itself
KEY = r"(?:\S*'[^']*'|\S+)"  # a key as the message quotes it: repr() when it has spaces
REFUSAL = re.compile(
    r"^facelm check: error: p\.yaml(: (%s (must be|is not a known parameter|is given twice)\b.*)"
    r"| is not UTF-8 text .*| is not valid YAML: .*| holds no parameters .*| must be a mapping .*)$" % KEY)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70), st.sampled_from([0, 1, -1, 2**31, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-4, 1e400, -0.0, 0.5]),
    st.text(max_size=12), st.sampled_from(["1e-4", "on", "OFF", "yes", "auto", ".inf", "nan", "1.0e+400", "7e3"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
odd_keys = st.one_of(st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False),
                     st.text(max_size=8))


@st.composite
def mutated(draw) -> bytes:
    """params.yaml with a few random edits: at the data level (delete, retype, add unknown or
    non-string keys, extreme numbers), then at the text level (duplicate or drop lines, bad bytes)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(KEYS))
        parent = data if len(path) == 1 else data.get(path[0])
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["delete", "set", "add", "add"]))
        if action == "delete":
            parent.pop(path[-1], None)
        elif action == "set":
            parent[path[-1]] = draw(values)
        else:
            parent[draw(odd_keys)] = draw(values)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    for _ in range(draw(st.integers(0, 2))):
        lines = text.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["duplicate", "drop", "bytes", "truncate", "comment"]))
        if edit == "duplicate":
            lines.insert(i, lines[i])
        elif edit == "drop":
            del lines[i]
        elif edit == "bytes":
            lines[i] += draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\t", b": x", b" {", b"\xe2\x82"]))
        elif edit == "truncate":
            lines = lines[:i]
        else:
            lines = [b"# " + line for line in lines]
        text = b"\n".join(lines)
    return text


def run_check(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["check", "--params", str(path)])
    return status, err.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(content=mutated())
def test_check_accepts_or_refuses_in_one_line(folder, content):
    path = folder / "p.yaml"
    path.write_bytes(content)
    status, err = run_check(path)  # a traceback would fail the test here
    if status == 0:
        assert err == ""
        params = load_params(path)
        assert isinstance(params, Params)
        assert all(math.isfinite(v) for v in _numbers(params.to_dict()))
    else:
        assert status == 2 and err.endswith("\n") and err.count("\n") == 1, err
        assert REFUSAL.match(err.rstrip("\n")), err


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


@pytest.mark.parametrize("content, says", [
    (b"1: 2\nzzz: 3\n", "1 is not a known parameter"),
    (SHIPPED.encode() + b"\nseed: \xff\n", "p.yaml is not UTF-8 text"),
    (SHIPPED.encode() + b"\nseed: 1\n", "seed is given twice"),
], ids=["non-string key", "not UTF-8", "duplicate key"])
def test_check_as_a_process(tmp_path, content, says):
    """The same through `python -m facelm`: exit 2, one line, no traceback."""
    (tmp_path / "p.yaml").write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "facelm", "check", "--params", str(tmp_path / "p.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr

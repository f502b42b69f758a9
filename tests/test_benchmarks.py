"""`benchmarks/run.py` runs end to end (tiny sizes) and prints one table with every hot loop."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("machine-speed reference", "BEGAN step", "inversion", "L-Gen", "detector",
         "world renderer", "synth", "dlib")


def test_smoke_run_prints_one_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--threads", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| hot loop | unit | facelm | baseline | ratio |")
    body = table[1:]
    assert "machine-speed reference" in body[0]  # printed first
    for loop in LOOPS:
        assert any(loop in line for line in body), loop
    assert all(line.count("|") == table[0].count("|") for line in body)  # no split cells

    res = json.loads(out.read_text())
    assert res["mode"] == "smoke" and res["threads"] == 1
    assert res["machine"]["cpu"] and res["machine"]["cores"] >= 1
    assert res["reference_images_per_s"] > 0
    for row in res["rows"]:
        if row["note"].startswith("skipped"):
            continue  # dlib without its model file
        assert row["facelm"] > 0, row
        if row["baseline"] is not None:
            assert row["ratio"] == row["facelm"] / row["baseline"]


def test_unknown_section_is_refused():
    proc = subprocess.run([sys.executable, "benchmarks/run.py", "--smoke", "--only", "nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown sections" in proc.stderr

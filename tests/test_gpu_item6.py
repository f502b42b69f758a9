"""tools/gpu_item6.py (issue #12 item 6's GPU script): its whole path in --smoke mode on the CPU.

One subprocess run of both settings (tiny faces, a width-8 BEGAN, 2 s each, ~10 s on 2 busy
cores), then checks of the JSON it leaves and of the files, plus the pieces it is built from.
"""
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_item6.py"
sys.path.insert(0, str(TOOL.parent))

import gpu_item6  # noqa: E402


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gpu_item6")
    _run(["--smoke", "--device", "cpu", "--threads", "1", "--out", str(out), "--work", str(out / "work")])
    return out, json.loads((out / gpu_item6.JSON_NAME).read_text())


def test_smoke_json_has_both_settings_with_figures(smoke):
    out, data = smoke
    assert data["smoke"] is True and data["device"] == "cpu" and data["torch"]
    assert set(data["settings"]) == set(gpu_item6.SETTINGS)
    for name, size in (("default64", 64), ("paper128", 128)):
        rec = data["settings"][name]
        assert rec["status"] == "done", rec["status"]
        assert rec["image_size"] == size and rec["dataset"] == "world"
        assert rec["steps"] >= 1 and rec["seconds"] > 0 and rec["images_per_s"] > 0
        assert rec["train"]["probe"]["images_per_s"] > 0
        assert math.isfinite(rec["M_final"]) and rec["M_final"] >= 0
        assert 0.0 <= rec["k_t"] <= 1.0
        for part in ("quality", "floor"):
            q = rec[part]
            assert 0.0 <= q["precision"] <= 1.0 and 0.0 <= q["recall"] <= 1.0
            assert math.isfinite(q["fd"]) and q["fd"] >= 0
        assert math.isfinite(rec["judge"]["nme_val"])
    # the paper's BEGAN section (smoke shrinks only width and batch) and the default's
    paper = data["settings"]["paper128"]["config"]["began"]
    assert (paper["gamma"], paper["lr"], paper["eta"], paper["skip"]) == (0.5, 1e-4, 2, False)
    assert data["settings"]["default64"]["config"]["began"]["gamma"] == 0.7
    assert not (out / "work").exists()  # scratch removed


def test_smoke_files_load_with_facelm(smoke):
    import cv2
    import torch

    from facelm.models.began import load_generator
    from facelm.tensors import sample_z

    out, data = smoke
    for name, size in (("default64", 64), ("paper128", 128)):
        rec = data["settings"][name]
        G = load_generator(out / rec["generator_file"], device="cpu")
        with torch.no_grad():
            x = G(sample_z(2, G.z_dim, seed=0))
        assert x.shape == (2, 3, size, size) and torch.isfinite(x).all()
        grid = cv2.imread(str(out / rec["grid_file"]))
        assert grid is not None and grid.shape == (4 * (size + 1) + 1,) * 2 + (3,)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [gpu_item6.JSON_NAME] + [f"G_{n}.safetensors" for n in gpu_item6.SETTINGS]
        + [f"grid_{n}.png" for n in gpu_item6.SETTINGS])  # few files: $OUT returns at most 8


def test_dlib_mode_on_returned_generators(smoke, tmp_path):
    out, _ = smoke
    files = [str(out / f"G_{n}.safetensors") for n in gpu_item6.SETTINGS]
    _run(["--dlib", *files, "--dlib-n", "8", "--workers", "1", "--threads", "1", "--out", str(tmp_path)])
    rates = json.loads((tmp_path / "gpu_item6_dlib.json").read_text())["dlib_found"]
    assert set(rates) == set(files) and all(0.0 <= r <= 1.0 for r in rates.values())


def test_settings_are_the_named_configs():
    from facelm.config import AUTHORS_KEEPING, Params, read_params_file, replace

    default, paper = gpu_item6.setting_params("default64"), gpu_item6.setting_params("paper128")
    assert default.image_size == 64 and (default.began.best_by, default.began.best_after) == ("M", 0.0)
    assert default.began == replace(Params().began, **AUTHORS_KEEPING)  # no dlib there
    assert paper.image_size == 128 and paper.dataset == "world"
    want = read_params_file(gpu_item6.PAPER)["began"]
    assert {k: getattr(paper.began, k) for k in want} == pytest.approx(want)
    assert paper.detector == Params().detector  # the judge: stage 00's world detector


def test_chunked_render_is_render_faces():
    from facelm.data.world import render_faces

    w = gpu_item6.setting_params("default64").world
    want = render_faces(5, 32, 0, 3, world=w)
    for pool in (None, ThreadPoolExecutor(2)):
        got = gpu_item6.render(5, 32, 0, 3, w, pool, chunk=2)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_rate_meter_leaves_out_the_first_burst():
    m = gpu_item6.RateMeter(batch=4, label="t", every=1e9)
    m("start", {"step": 0})
    # steps 1-50 arrive together at t=10 (warm-up), 51-100 at t=11, 101-150 at t=12
    for burst, t in ((range(1, 51), 10.0), (range(51, 101), 11.0), (range(101, 151), 12.0)):
        m.calls[-1].extend((s, t + 1e-6 * i) for i, s in enumerate(burst))
    rate, steps, secs = m.steady()
    assert steps == 100 and secs == pytest.approx(2.0, abs=1e-3) and rate == pytest.approx(200, rel=1e-3)


def test_shell_script_parses_and_names_the_call():
    text = (ROOT / "tools" / "gpu_item6.sh").read_text()
    assert 'run(command="bash tools/gpu_item6.sh", carry=[".whl"], timeout_s=560)' in text
    assert "--dlib" in text and "PYTHONUNBUFFERED=1" in text and "/tmp/site" in text
    subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_item6.sh")], check=True)

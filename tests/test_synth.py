"""facelm synth end to end on tiny models: formats, manifest, determinism, resume, refusals, CLI."""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelm import landmarks as lmk
from facelm.models.began import Generator, save_model
from facelm.models.lgen import LGen, save_lgen
from facelm.evaluation.results import faces_and_landmarks
from facelm.apps.synth import FORMATS, Z_BLOCK, add_parser, latents, synth
from facelm.apps.synth_folder import OutputInUse

ROOT = Path(__file__).resolve().parents[1]
N, SHARD, BATCH = 7, 3, 2  # shards [0,3) [3,6) [6,7); batches of 2 inside each shard


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    G, L = Generator(size=32, width=4, z_dim=64, seed=1), LGen(seed=2)
    with torch.no_grad():  # spread the tiny G's output over the uint8 range
        G.body[-1].weight.mul_(30.0)
    save_model(d / "g.safetensors", G)
    save_lgen(d / "l.safetensors", L)
    return d / "g.safetensors", d / "l.safetensors", G.eval(), L.eval()


def run(models, out, n=N, **kw):
    kw = {"shard_size": SHARD, "batch_size": BATCH, "device": "cpu", "progress": False,
          "workers": 2, **kw}
    return synth(models[0], models[1], out, n, **kw)


def reference(models, z):
    """G(z) and L-Gen(z) through facelm.evaluation.results, batched exactly as synth batches a shard."""
    parts = [faces_and_landmarks(models[2], models[3], torch.from_numpy(z[s:s + SHARD]),
                                 batch_size=BATCH, device="cpu") for s in range(0, len(z), SHARD)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def assert_same_image(a, b):
    """Equal up to a rare +-1 rounding flip (synth runs G channels-last, the reference NCHW)."""
    d = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    assert d.max() <= 1 and (d > 0).mean() < 1e-3, (d.max(), (d > 0).mean())


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", ".synth.lock")}


def cli(argv, capsys):
    """Parse with our own parser built through add_parser, then run: (rc, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="facelm")
    add_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["synth", *map(str, argv)])
        rc = args.func(args)
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------------------ latents
def test_latents_depend_only_on_seed_and_index():
    whole = latents(0, Z_BLOCK + 300, z_dim=64, seed=5)
    cuts = [0, 1, 500, Z_BLOCK - 1, Z_BLOCK + 7, Z_BLOCK + 300]
    pieces = np.concatenate([latents(a, b, z_dim=64, seed=5) for a, b in zip(cuts, cuts[1:])])
    np.testing.assert_array_equal(whole, pieces)
    assert whole.dtype == np.float32 and whole.shape == (Z_BLOCK + 300, 64)
    assert -1 <= whole.min() < -0.99 and 0.99 < whole.max() < 1
    np.testing.assert_allclose(latents(10, 20, z_dim=64, seed=5, truncation=0.5), whole[10:20] * 0.5,
                               rtol=1e-6)
    assert not np.array_equal(latents(0, 10, z_dim=64, seed=6), whole[:10])


# ---------------------------------------------------------------------------- formats
def test_pts_format_reads_back_and_equals_models(models, tmp_path):
    out = tmp_path / "out"
    m = run(models, out)
    shards = sorted(out.glob("shard_*"))
    assert [p.name for p in shards] == ["shard_00000", "shard_00001", "shard_00002"]
    pngs, pts = sorted(out.rglob("*.png")), sorted(out.rglob("*.pts"))
    assert [p.name for p in pngs] == [f"{i:08d}.png" for i in range(N)]
    assert [p.stem for p in pts] == [p.stem for p in pngs]
    z = np.concatenate([np.load(s / "z.npy") for s in shards])
    np.testing.assert_array_equal(z, latents(0, N, z_dim=64, seed=0))
    images, points = reference(models, z)
    assert images.std() > 10  # the comparison below is not between flat grey images
    for i, (png, pt) in enumerate(zip(pngs, pts)):
        bgr = cv2.imread(str(png))
        assert bgr.shape == (32, 32, 3)
        assert_same_image(bgr[..., ::-1], images[i])
        px = lmk.read_pts(pt)
        assert px.shape == (49, 2) and (px >= 0).all() and (px <= 32).all()
        np.testing.assert_allclose(px, lmk.to_pixels(points[i], 32, 32), atol=1e-3)
    lm = np.concatenate([np.load(s / "landmarks.npy") for s in shards])
    np.testing.assert_allclose(lm, points, atol=1e-7)
    assert m["complete"] and not list(out.glob(".*tmp*"))


def test_npz_format_arrays_match(models, tmp_path):
    out = tmp_path / "out"
    m = run(models, out, fmt="npz", truncation=0.5, seed=3)
    assert m["files"] == {"images": "images.npy", "landmarks": "landmarks.npy", "z": "z.npy"}
    assert sorted(p.name for p in out.iterdir()) == [".synth.lock", "images.npy", "landmarks.npy",
                                                      "manifest.json", "z.npy"]
    images = np.load(out / "images.npy", mmap_mode="r")
    lm = np.load(out / "landmarks.npy", mmap_mode="r")
    z = np.load(out / "z.npy", mmap_mode="r")
    assert (images.dtype, images.shape) == (np.uint8, (N, 32, 32, 3))
    assert (lm.dtype, lm.shape) == (np.float32, (N, 49, 2))
    assert (z.dtype, z.shape) == (np.float32, (N, 64))
    np.testing.assert_array_equal(z, latents(0, N, z_dim=64, seed=3, truncation=0.5))
    assert np.abs(z).max() <= 0.5
    ref_images, ref_lm = reference(models, np.array(z))
    assert_same_image(images, ref_images)
    np.testing.assert_allclose(lm, ref_lm, atol=1e-7)


def test_manifest_records_models_and_settings(models, tmp_path):
    out = tmp_path / "out"
    m = run(models, out, seed=4, truncation=0.7, command="facelm synth --seed 4")
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m
    for key, path in (("generator", models[0]), ("lgen", models[1])):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert m[f"{key}_sha256"] == m[key]["sha256"] == digest
    assert (m["seed"], m["truncation"], m["n"], m["image_size"], m["n_points"], m["format"]) \
        == (4, 0.7, N, 32, 49, "pts")
    assert m["facelm_version"] and m["created"] and m["command"] == "facelm synth --seed 4"
    assert m["complete"] is True
    assert [(s["start"], s["stop"], s["state"]) for s in m["shards"]] == \
        [(0, 3, "complete"), (3, 6, "complete"), (6, 7, "complete")]
    assert m["runs"][-1]["faces"] == N and m["runs"][-1]["faces_per_second"] > 0


def test_same_seed_same_bytes(models, tmp_path):
    for fmt in FORMATS:
        for name, seed in (("a", 0), ("b", 0), ("c", 1)):
            run(models, tmp_path / fmt / name, fmt=fmt, seed=seed)
        a, b, c = (files(tmp_path / fmt / name) for name in "abc")
        assert len(a) >= 3 and a == b
        assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


# ------------------------------------------------------------------------------ resume
class Interrupt(Exception):
    pass


def interrupt_after(k):
    def cb(event, state):
        if event == "shard" and state["index"] == k:
            raise Interrupt
    return cb


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_after_interruption_equals_uninterrupted(models, tmp_path, fmt):
    whole, out = tmp_path / "whole", tmp_path / "out"
    run(models, whole, fmt=fmt)
    with pytest.raises(Interrupt):
        run(models, out, fmt=fmt, callbacks=[interrupt_after(0)])
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False
    assert [s["state"] for s in m["shards"]] == ["complete", "pending", "pending"]
    if fmt == "pts":  # shard 0 whole, nothing of shard 1 looks complete
        assert sorted(p.name for p in out.iterdir()) == [".synth.lock", "manifest.json",
                                                          "shard_00000"]
        # a crash mid-shard-1 and one after a rename but before the manifest said so
        (out / ".shard_00001.tmp").mkdir()
        (out / ".shard_00001.tmp" / "00000003.png").write_bytes(b"half a png")
        (out / "shard_00002").mkdir()
        (out / "shard_00002" / "junk.png").write_bytes(b"unrecorded")
        before = {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
                  for p in (out / "shard_00000").iterdir()}
    else:  # arrays still under their partial names
        assert not (out / "images.npy").exists() and (out / "images.partial.npy").exists()
    seen = []
    m = run(models, out, fmt=fmt, callbacks=[lambda e, s: seen.append((e, s.get("index")))])
    assert seen == [("shard", 1), ("shard", 2), ("end", None)]  # shard 0 was not redone
    assert m["complete"] and m["runs"][-1]["first_face"] == SHARD and len(m["runs"]) == 2
    assert files(out) == files(whole)
    if fmt == "pts":
        after = {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
                 for p in (out / "shard_00000").iterdir()}
        assert after == before


def test_complete_output_is_left_alone(models, tmp_path):
    out = tmp_path / "out"
    first = run(models, out)
    stamp = os.stat(out / "shard_00001" / "00000004.png").st_mtime_ns
    again = run(models, out)
    assert again == first
    assert os.stat(out / "shard_00001" / "00000004.png").st_mtime_ns == stamp


def test_mismatched_existing_output_is_refused_unless_overwrite(models, tmp_path):
    out = tmp_path / "out"
    run(models, out)
    for change in ({"seed": 1}, {"n": 5}, {"truncation": 0.9}, {"fmt": "npz"}):
        with pytest.raises(ValueError, match="different synthesis"):
            run(models, out, **change)
    other_g = tmp_path / "g2.safetensors"
    save_model(other_g, Generator(size=32, width=4, z_dim=64, seed=9))
    with pytest.raises(ValueError, match="generator_sha256"):
        synth(other_g, models[1], out, N, shard_size=SHARD, progress=False)
    (out / "notes.txt").write_text("the user's own file")
    (out / "z.csv").write_text("another one, named like ours")
    m = run(models, out, n=2, seed=1, overwrite=True)
    assert m["seed"] == 1 and m["n"] == 2
    # only what synth writes was replaced: no stale shards, the user's file kept
    assert sorted(p.name for p in out.iterdir()) == [".synth.lock", "manifest.json", "notes.txt",
                                                      "shard_00000", "z.csv"]
    assert len(list((out / "shard_00000").glob("*.png"))) == 2


def test_foreign_non_empty_folder_is_refused(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        run(models, out)


# ------------------------------------------------------ one run per folder; damaged shards
def model_args(models, out):
    return ["--generator", models[0], "--lgen", models[1], "--out", out, "-n", N,
            "--shard-size", SHARD, "--batch-size", BATCH, "--device", "cpu", "--workers", 2,
            "--no-progress"]


def test_second_run_into_a_busy_folder_is_refused_and_the_first_completes(models, tmp_path,
                                                                          capsys):
    """Issue 15: two runs into one --out treated each other's manifest as a run to resume."""
    whole, out = tmp_path / "whole", tmp_path / "out"
    run(models, whole)
    inside, release = threading.Event(), threading.Event()

    def hold(event, state):  # the first run pauses after its first shard, lock held
        if event == "shard" and state["index"] == 0:
            inside.set()
            release.wait(120)

    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(m=run(models, out, callbacks=[hold])))
    thread.start()
    try:
        assert inside.wait(120)
        before = files(out)
        for kw in ({}, {"overwrite": True}):
            with pytest.raises(OutputInUse, match="in use by another facelm synth run"):
                run(models, out, **kw)
        rc, stdout, err = cli(model_args(models, out), capsys)
        assert rc == 2 and stdout == "" and err.count("\n") == 1, err
        assert err.startswith("facelm synth: error: output folder ") and "in use" in err
        assert files(out) == before  # the refused runs touched nothing
    finally:
        release.set()
        thread.join(120)
    assert first["m"]["complete"] and files(out) == files(whole)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


HOLDER = """
import sys, time
from facelm.apps.synth import synth

def hold(event, state):
    if event == "shard" and state["index"] == 1:
        print("holding", flush=True)
        time.sleep(600)

synth(sys.argv[1], sys.argv[2], sys.argv[3], {n}, shard_size={shard}, batch_size={batch},
      device="cpu", progress=False, workers=2, callbacks=[hold])
"""


def test_the_lock_holds_across_processes_and_a_killed_run_resumes(models, tmp_path, capsys):
    whole, out = tmp_path / "whole", tmp_path / "out"
    run(models, whole)
    code = HOLDER.format(n=N, shard=SHARD, batch=BATCH)
    proc = subprocess.Popen([sys.executable, "-c", code, str(models[0]), str(models[1]),
                             str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "holding\n", proc.stderr.read() if proc.poll() is not None else line
        rc, _, err = cli(model_args(models, out), capsys)
        assert rc == 2 and err.count("\n") == 1 and "in use by another facelm synth run" in err
    finally:
        proc.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock
        proc.wait(60)
    # what a run killed mid-shard leaves: its own temporary shard folder
    stale = out / ".shard_00002.12345-deadbeef.tmp"
    stale.mkdir()
    (stale / "00000006.png").write_bytes(b"half a png")
    rc, stdout, err = cli(model_args(models, out), capsys)
    assert rc == 0 and f"resumed at face {2 * SHARD}" in stdout, err
    assert files(out) == files(whole) and not stale.exists()


def damage(out: Path, how: str) -> None:
    shard = out / "shard_00001"
    if how == "png missing":
        for p in sorted(shard.glob("*.png"))[:2]:
            p.unlink()
    elif how == "pts missing":
        sorted(shard.glob("*.pts"))[-1].unlink()
    elif how == "png truncated":
        png = sorted(shard.glob("*.png"))[0]
        png.write_bytes(png.read_bytes()[:40])
    elif how == "npy truncated":
        npy = shard / "landmarks.npy"
        npy.write_bytes(npy.read_bytes()[:-10])
    elif how == "shard gone":
        for p in shard.iterdir():
            p.unlink()
        shard.rmdir()
    elif how == "array truncated":
        npy = out / "images.npy"
        npy.write_bytes(npy.read_bytes()[:-1])


@pytest.mark.parametrize("fmt, how", [("pts", "png missing"), ("pts", "pts missing"),
                                      ("pts", "png truncated"), ("pts", "npy truncated"),
                                      ("pts", "shard gone"), ("npz", "array truncated")])
def test_a_damaged_shard_is_made_again_not_trusted(models, tmp_path, fmt, how):
    whole, out = tmp_path / "whole", tmp_path / "out"
    run(models, whole, fmt=fmt)
    run(models, out, fmt=fmt)
    damage(out, how)
    seen = []
    m = run(models, out, fmt=fmt, callbacks=[lambda e, s: seen.append((e, s.get("index")))])
    # pts: only the damaged shard again; npz: one set of arrays for all shards, all again
    remade = [1] if fmt == "pts" else [0, 1, 2]
    assert seen == [*(("shard", k) for k in remade), ("end", None)]
    assert m["complete"] and files(out) == files(whole)
    seen.clear()
    assert run(models, out, fmt=fmt, callbacks=[lambda e, s: seen.append((e, s["faces"]))]) == m
    assert seen == [("end", 0)]  # "already complete" only now


def test_a_manifest_from_before_byte_totals_still_resumes(models, tmp_path):
    out = tmp_path / "out"
    m = run(models, out)
    for s in m["shards"]:
        del s["files"], s["bytes"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert run(models, out) == m


# --------------------------------------------------------------------------------- CLI
def test_cli_writes_faces_and_summary(models, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(["--generator", models[0], "--lgen", models[1], "--out", out,
                           "-n", 4, "--shard-size", 3, "--batch-size", 2, "--device", "cpu",
                           "--seed", 2, "--truncation", 0.8, "--no-progress"], capsys)
    assert rc == 0 and "4 faces" in stdout and "faces/s" in stdout and err == ""
    m = json.loads((out / "manifest.json").read_text())
    assert (m["n"], m["seed"], m["truncation"], m["shard_size"]) == (4, 2, 0.8, 3)
    assert m["command"]
    assert len(list(out.rglob("*.pts"))) == 4
    rc, stdout, _ = cli(["--generator", models[0], "--lgen", models[1], "--out", out, "-n", 4,
                         "--shard-size", 3, "--seed", 2, "--truncation", 0.8, "--no-progress"],
                        capsys)
    assert rc == 0 and "already complete" in stdout


def bad_cases(models, tmp_path):
    g, l = models[0], models[1]
    not_model = tmp_path / "junk.safetensors"
    not_model.write_bytes(b"\x00" * 64)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    ok = ["--generator", g, "--lgen", l]
    return {  # name: (arguments, what the one error line must mention)
        "missing generator": (["--generator", tmp_path / "nope.safetensors", "--lgen", l],
                              "nope.safetensors"),
        "missing lgen": (["--generator", g, "--lgen", tmp_path / "nope.safetensors"],
                         "nope.safetensors"),
        "n zero": ([*ok, "-n", 0], "-n/--num"),
        "n negative": ([*ok, "--num", -3], "-n/--num"),
        "n not a number": ([*ok, "-n", "many"], "many"),
        "truncation zero": ([*ok, "--truncation", 0], "--truncation"),
        "truncation above 1": ([*ok, "--truncation", 1.5], "--truncation"),
        "negative seed": ([*ok, "--seed", -1], "--seed"),
        "batch size zero": ([*ok, "--batch-size", 0], "--batch-size"),
        "shard size zero": ([*ok, "--shard-size", 0], "--shard-size"),
        "bad format": ([*ok, "--format", "zip"], "zip"),
        "absent device": ([*ok, "--device", "cuda:99"], "cuda:99"),
        "unknown device": ([*ok, "--device", "tpu"], "tpu"),
        "junk model file": (["--generator", not_model, "--lgen", l], "not a facelm generator"),
        "models swapped": (["--generator", l, "--lgen", g], "not a facelm generator"),
        "out is a file": ([*ok, "--out", a_file], "a_file"),
        "out under a file": ([*ok, "--out", a_file / "sub"], "not writable"),
    }


def test_bad_arguments_give_one_line_and_do_no_work(models, tmp_path, capsys):
    for name, (argv, mention) in bad_cases(models, tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        if "--out" not in argv:
            argv = [*argv, "--out", out]
        rc, stdout, err = cli([*argv, "--no-progress"], capsys)
        lines = err.strip().splitlines()
        assert rc not in (0, None), name
        assert len(lines) == 1 and lines[0].startswith("facelm synth: error: "), (name, err)
        assert mention in lines[0], (name, err)
        assert stdout == "", name
        assert not out.exists() or not any(out.iterdir()), name  # no work done


def test_default_model_paths_inside_and_outside_a_project(models, tmp_path, monkeypatch,
                                                          capsys):
    proj = tmp_path / "proj"
    for f in ("dvc.yaml", "params.yaml"):
        (proj / f).parent.mkdir(parents=True, exist_ok=True)
        (proj / f).write_text("{}\n")
    (proj / "data" / "began").mkdir(parents=True)
    (proj / "data" / "lgen").mkdir(parents=True)
    (proj / "data" / "began" / "generator.safetensors").write_bytes(models[0].read_bytes())
    (proj / "data" / "lgen" / "lgen.safetensors").write_bytes(models[1].read_bytes())
    monkeypatch.chdir(proj)
    rc, _, err = cli(["--out", tmp_path / "o1", "-n", 2, "--no-progress"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "o1" / "manifest.json").read_text())
    assert m["generator"]["path"] == str(proj / "data" / "began" / "generator.safetensors")
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(["--out", tmp_path / "o2", "-n", 2], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--generator and --lgen required" in err


def test_help_lists_every_option(capsys):
    rc, stdout, _ = cli(["--help"], capsys)
    assert rc == 0
    for opt in ("--generator", "--lgen", "--out", "-n", "--num", "--seed", "--truncation",
                "--batch-size", "--device", "--shard-size", "--format", "--overwrite",
                "--no-progress", "--bf16", "--workers"):
        assert f"{opt} " in stdout or f"{opt}\n" in stdout, opt
    assert stdout.count("default") >= 8


def test_python_m_facelm_synth_runs_as_a_command(models, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "facelm", "synth", "--generator", str(models[0]),
                           "--lgen", str(models[1]), "--out", str(out), "-n", "3",
                           "--device", "cpu", "--format", "npz"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 faces" in proc.stdout and "face/s" in proc.stderr  # the tqdm bar's rate
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and "-n 3" in m["command"]
    assert m["command"].startswith("python -m facelm synth ")
    assert np.load(out / "images.npy").shape == (3, 32, 32, 3)


def test_import_is_light_for_the_cli():
    """facelm.cli imports this module for every subcommand: torch/cv2 must load only on use."""
    code = "import sys, facelm.apps.synth; print('torch' in sys.modules, 'cv2' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


# ------------------------------------------- a label generator on G's features, --keep-frac
from facelm.apps.synth_certain import CALIBRATION_TAG, CANDIDATE_TAG, uniform_stream  # noqa: E402
from facelm.evaluation.uncertainty import keep_threshold  # noqa: E402
from facelm.models.feature_lgen import FeatureLGen, save_feature_lgen  # noqa: E402

CAL = 64  # calibration faces of the keep-frac tests


@pytest.fixture(scope="module")
def features(models, tmp_path_factory):
    """(generator path, features path, G, FeatureLGen) on the tiny G of ``models``."""
    d = tmp_path_factory.mktemp("features")
    F = FeatureLGen(models[2], members=3, grid=8, hidden=4, seed=3).eval()
    save_feature_lgen(d / "f.safetensors", F)
    return models[0], d / "f.safetensors", models[2], F


@torch.no_grad()
def labelled(F, z):
    images, lm, u = F.generate(torch.from_numpy(np.asarray(z)))
    return images, lm.numpy(), u.numpy()


def shard_arrays(out: Path, name: str) -> np.ndarray:
    return np.concatenate([np.load(s / f"{name}.npy") for s in sorted(out.glob("shard_*"))])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_features_label_generator_stores_each_faces_uncertainty(features, tmp_path, fmt):
    out = tmp_path / "out"
    m = run(features, out, fmt=fmt)
    read = (lambda a: np.load(out / f"{a}.npy")) if fmt == "npz" else (lambda a: shard_arrays(out, a))
    z, lm, u = read("z"), read("landmarks"), read("uncertainty")
    np.testing.assert_array_equal(z, latents(0, N, z_dim=64, seed=0))  # no --keep-frac: the plain z rule
    images, ref_lm, ref_u = labelled(features[3], z)
    np.testing.assert_allclose(lm, ref_lm, atol=1e-6)
    np.testing.assert_allclose(u, ref_u, rtol=1e-4)  # batches and memory layout differ
    assert u.shape == (N,) and u.dtype == np.float32 and u.std() > 0
    if fmt == "npz":
        assert_same_image(np.load(out / "images.npy"), images_of(images))
        assert m["files"]["uncertainty"] == "uncertainty.npy"
    assert m["lgen"]["kind"] == "features" and m["lgen"]["generator_digest"] == features[3].generator_digest
    assert m["uncertainty"] and m["keep"] is None
    (out / ("uncertainty.npy" if fmt == "npz" else "shard_00001/uncertainty.npy")).unlink()
    seen = []
    run(features, out, fmt=fmt, callbacks=[lambda e, s: seen.append((e, s.get("index")))])
    assert seen[-2:] == [("shard", 2 if fmt == "npz" else 1), ("end", None)]  # remade, not trusted


def images_of(x):
    from facelm.tensors import to_uint8

    return to_uint8(x)


def test_keep_frac_keeps_the_first_candidates_under_a_calibrated_threshold(features, tmp_path):
    out = tmp_path / "out"
    m = run(features, out, keep_frac=0.5, calibration=CAL, seed=2)
    keep = m["keep"]
    _, _, u_cal = labelled(features[3], uniform_stream(0, CAL, [CALIBRATION_TAG, 2], truncation=1.0, z_dim=64))
    assert keep["threshold"] == pytest.approx(keep_threshold(u_cal, 0.5), rel=1e-4)
    assert (u_cal <= keep["threshold"]).mean() == pytest.approx(0.5, abs=1.5 / CAL)
    assert (keep["keep_frac"], keep["calibration_size"], keep["faces"]) == (0.5, CAL, N)
    assert m["keep_frac"] == 0.5 and m["calibration_size"] == CAL
    assert keep["candidates"] == sum(s["candidates"] for s in m["shards"]) >= N
    assert keep["acceptance_rate"] == pytest.approx(N / keep["candidates"], abs=1e-4)
    z, u = shard_arrays(out, "z"), shard_arrays(out, "uncertainty")
    assert (u <= keep["threshold"]).all()
    for s in m["shards"]:  # shard k: its stream's candidates under the threshold, in order
        cand = uniform_stream(0, s["candidates"], [CANDIDATE_TAG, 2, s["index"]], truncation=1.0, z_dim=64)
        _, lm, u_cand = labelled(features[3], cand)
        ok = u_cand <= keep["threshold"]
        assert ok[-1] and ok.sum() == s["stop"] - s["start"]  # the last candidate drawn was kept
        np.testing.assert_array_equal(z[s["start"]:s["stop"]], cand[ok])
        np.testing.assert_allclose(shard_arrays(out, "landmarks")[s["start"]:s["stop"]], lm[ok], atol=1e-6)
    assert len(list(out.rglob("*.png"))) == N


def test_keep_frac_runs_are_deterministic_and_resume(features, tmp_path, monkeypatch):
    whole, out = tmp_path / "whole", tmp_path / "out"
    first = run(features, whole, keep_frac=0.4, calibration=CAL)
    run(features, tmp_path / "again", keep_frac=0.4, calibration=CAL)
    assert files(tmp_path / "again") == files(whole)
    # the kept faces do not depend on how candidates are batched
    run(features, tmp_path / "batched", keep_frac=0.4, calibration=CAL, batch_size=5)
    np.testing.assert_array_equal(shard_arrays(tmp_path / "batched", "z"), shard_arrays(whole, "z"))
    with pytest.raises(Interrupt):
        run(features, out, keep_frac=0.4, calibration=CAL, callbacks=[interrupt_after(0)])
    recorded = json.loads((out / "manifest.json").read_text())["keep"]
    assert recorded["threshold"] == first["keep"]["threshold"] and recorded["faces"] == SHARD

    def no_calibration(*a, **k):
        raise AssertionError("a resumed run must reuse the recorded threshold")
    monkeypatch.setattr("facelm.apps.synth_run.calibrate", no_calibration)
    m = run(features, out, keep_frac=0.4, calibration=CAL)
    assert m["complete"] and files(out) == files(whole)
    assert m["keep"]["acceptance_rate"] == first["keep"]["acceptance_rate"]
    for change in ({"keep_frac": 0.5}, {"calibration": CAL + 1}, {"keep_frac": None}):
        with pytest.raises(ValueError, match="different synthesis"):
            run(features, out, **{"keep_frac": 0.4, "calibration": CAL, **change})


def test_keep_frac_one_keeps_every_candidate(features, tmp_path):
    m = run(features, tmp_path / "out", keep_frac=1.0, calibration=CAL)
    assert m["keep"]["threshold"] is None and m["keep"]["acceptance_rate"] == 1.0
    z = shard_arrays(tmp_path / "out", "z")
    np.testing.assert_array_equal(z[:SHARD], uniform_stream(0, SHARD, [CANDIDATE_TAG, 0, 0], truncation=1.0, z_dim=64))


def test_keep_frac_and_features_refusals_are_one_line_before_any_work(models, features, tmp_path, capsys):
    other_g = tmp_path / "other.safetensors"
    save_model(other_g, Generator(size=32, width=4, z_dim=64, seed=9))
    f = features[1]
    cases = {  # name: (arguments, what the one error line must mention)
        "keep-frac with an L-Gen on z": (["--generator", models[0], "--lgen", models[1], "--keep-frac", 0.5],
                                         "--keep-frac (keep_frac) needs a label generator on G's features"),
        "keep-frac zero": (["--generator", models[0], "--lgen", f, "--keep-frac", 0], "--keep-frac"),
        "keep-frac above 1": (["--generator", models[0], "--lgen", f, "--keep-frac", 1.5], "--keep-frac"),
        "calibration zero": (["--generator", models[0], "--lgen", f, "--keep-frac", 0.5, "--calibration", 0],
                             "--calibration"),
        "another generator": (["--generator", other_g, "--lgen", f], "reads another generator"),
        "bf16 with features": (["--generator", models[0], "--lgen", f, "--bf16"], "--bf16"),
    }
    for name, (argv, mention) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        rc, stdout, err = cli([*argv, "--out", out, "-n", 3, "--device", "cpu", "--no-progress"], capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and stdout == "", (name, err)
        assert len(lines) == 1 and lines[0].startswith("facelm synth: error: ") and mention in lines[0], (name, err)
        assert not out.exists() or not any(out.iterdir()), name


def test_cli_keep_frac_and_the_default_lgen_follow_params(features, tmp_path, monkeypatch, capsys):
    proj = tmp_path / "proj"
    (proj / "data" / "began").mkdir(parents=True)
    (proj / "data" / "lgen").mkdir(parents=True)
    (proj / "dvc.yaml").write_text("{}\n")
    (proj / "params.yaml").write_text("lgen:\n  kind: features\n")
    (proj / "data" / "began" / "generator.safetensors").write_bytes(Path(features[0]).read_bytes())
    monkeypatch.chdir(proj)
    rc, _, err = cli(["--out", tmp_path / "o0", "-n", 2, "--no-progress"], capsys)
    assert rc == 2 and "features.safetensors does not exist yet" in err, err
    (proj / "data" / "lgen" / "features.safetensors").write_bytes(Path(features[1]).read_bytes())
    rc, stdout, err = cli(["--out", tmp_path / "o1", "-n", 4, "--shard-size", 2, "--batch-size", 3,
                           "--keep-frac", 0.5, "--calibration", 32, "--device", "cpu", "--no-progress"], capsys)
    assert rc == 0 and "kept the most certain 0.5" in stdout and "acceptance rate" in stdout, err
    m = json.loads((tmp_path / "o1" / "manifest.json").read_text())
    assert m["lgen"]["path"] == str(proj / "data" / "lgen" / "features.safetensors")
    assert m["keep"]["calibration_size"] == 32 and m["lgen"]["kind"] == "features"

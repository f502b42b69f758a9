"""Every hot loop against its plain baseline, in one process and one run, as one table.

    python benchmarks/run.py                    # full run (several minutes on 2 cores)
    python benchmarks/run.py --quick            # fewer steps and repeats: ~1-3 min on 2 cores
    python benchmarks/run.py --quick --json bench.json --threads 1
    python benchmarks/run.py --device cuda      # trainers, inversion and synth on the GPU

Rows (facelm vs the baseline written in the benchmark scripts, measured interleaved in the
same run so that machine load hits both alike; best of the repeats):

- machine-speed reference: the plain eager fp32 BEGAN step at 32 px, width 16, batch 16
  (``facelm.report.speed.eager_began_rate`` below; the stages' time plans are in units of it)
- BEGAN step: ``train_began`` (the trainer's own step, batch sampling and stats included)
  vs that eager step, images/s; full run: also at the paper's 128 px, width 64
- inversion: ``invert`` on a batch vs the authors' loop, one image at a time with torch's
  Adam, at equal steps (no restarts or early stop) and from the same start z, so at equal
  final error (both final L1 are printed); latent·steps/s
- L-Gen: ``train_lgen`` vs a DataLoader(TensorDataset) + Adam loop, samples/s
- detector: ``train_detector`` vs a DataLoader over per-face numpy/OpenCV augmentation, images/s
- world renderer: faces/s at 32 px (default supersampling, no baseline) and at 128 px
  (default 2x vs 4x supersampling)
- ``facelm synth``: PNG + .pts written, vs a one-face-at-a-time loop; random-weight models
  of the real architectures (G 32 px width 16; full run: also 128 px width 64)
- dlib annotation: HOG detection + 68-point prediction on 128 px crops, all cores (a process
  pool) vs one worker; faces/s

``--threads`` sets torch's threads (default: all usable cores). On a machine shared with
other jobs use ``--threads 1``: with every core asked for and one of them busy, small
convolutions run many times slower, and the numbers say more about the other jobs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import Row, best_rates, machine_line, markdown, set_threads
from facelm.report.speed import REFERENCE_IMAGES, eager_began_rate, machine

# sizes per mode: steps, images, faces and repeats of every section
MODES = {
    "full": dict(repeats=3, began_steps=200, paper=True, inv=(256, 32, 100), lgen=(6000, 3),
                 det_steps=150, world=(300, 60), synth=(1000, 200), synth128=True, dlib=300),
    "quick": dict(repeats=2, began_steps=60, paper=False, inv=(128, 8, 50), lgen=(6000, 1),
                  det_steps=60, world=(150, 20), synth=(300, 60), synth128=False, dlib=60),
    "smoke": dict(repeats=1, began_steps=2, paper=False, inv=(4, 2, 2), lgen=(64, 1),
                  det_steps=2, world=(2, 1), synth=(8, 2), synth128=False, dlib=2),
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# the trainer's CPU paths, each a row so that the table shows what it buys
BEGAN_VARIANTS = (
    ("fp32 NCHW eager", dict(channels_last=False, compile=False)),
    ("+ channels_last", dict(channels_last=True, compile=False)),
    ("+ channels_last + compile (the default from 2,000 steps)", dict(channels_last=True, compile=True)),
)


def began_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_began as bb

    rows = []
    configs = [(32, 16, 3)] + ([(128, 64, 1)] if m["paper"] or dev.type == "cuda" else [])
    for size, width, warmup in configs:
        steps = m["began_steps"] if size == 32 else 2  # CPU: seconds per step at 128 px
        if dev.type == "cuda":
            warmup, steps = 50, max(steps, 100)
            steps -= steps % warmup  # the trainer syncs every `warmup` steps there
        variants = BEGAN_VARIANTS if size == 32 and dev.type == "cpu" else (("", {}),)
        images = np.random.default_rng(0).integers(0, 256, (256, size, size, 3), dtype=np.uint8)
        # compile happens in the first steps: a longer untimed warm-up keeps it out of the rate
        rates = best_rates(
            m["repeats"] if size == 32 else 1,
            lambda: eager_began_rate(size=size, width=width, batch=16, steps=steps,
                                     warmup=warmup, device=dev),
            *[lambda o=opts: bb.facelm_images_per_s(images, size, width, 16, dev,
                                                    warmup + 20 * bool(o.get("compile")), steps, **o)
              for _, opts in variants])
        base = rates[0]
        if size == 32:
            rows.append(Row("**machine-speed reference**: eager fp32 BEGAN step, 32 px, w16, "
                            "b16", "images/s", base, None, "",
                            f"1 reference unit = {REFERENCE_IMAGES:,} images = "
                            f"{REFERENCE_IMAGES / base:.1f} s"))
        for (name, _), ours in zip(variants, rates[1:]):
            rows.append(Row(f"BEGAN step (train_began) {name}, {size} px, w{width}, b16".replace(" ,", ","),
                            "images/s", ours, base, "eager fp32, D run 3x, 2 backward",
                            f"{steps} timed steps"))
    return rows


def inversion_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_inversion_lgen as bi

    n, n_loop, steps = m["inv"]
    r = bi.bench_inversion(dev, n, n_loop, steps)
    return [Row(f"inversion (invert), batch of {n}, 32 px G w16", "latent·steps/s", r["batched"],
                r["loop"], "authors' loop: one image, torch Adam",
                f"{steps} steps each; final L1 {r['l1_batched']:.4f} vs {r['l1_loop']:.4f} "
                f"(loop's {n_loop} images); random-weight G, its own faces")]


def lgen_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_inversion_lgen as bi

    pairs, epochs = m["lgen"]
    r = bi.bench_lgen(dev, pairs, epochs)
    return [Row("L-Gen training (train_lgen), batch 16", "samples/s", r["train_lgen"],
                r["DataLoader + Adam"], "DataLoader(TensorDataset) + Adam",
                f"{pairs} pairs, {epochs} timed epoch(s)")]


def detector_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_detector as bd

    steps, batch, n = m["det_steps"], 32, 2000
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.2, 0.8, (n, 49, 2)).astype(np.float32)
    if steps >= 10:  # warm-up (allocator, oneDNN kernels) so neither side pays it
        bd.facelm_train(images, landmarks, 10, batch, dev)
        bd.baseline_train(images, landmarks, 10, batch)
    ours, base = best_rates(
        m["repeats"],
        lambda: steps * batch / bd.facelm_train(images, landmarks, steps, batch, dev)[0],
        lambda: steps * batch / bd.baseline_train(images, landmarks, steps, batch))
    return [Row("detector training step (train_detector), 32 px, b32", "images/s", ours, base,
                "DataLoader, per-face OpenCV augmentation (CPU)",
                f"{steps} steps, augmentation on, default DetectorParams")]


def world_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_world as bw

    n32, n128 = m["world"]
    (wall32, _, _), = bw.rates(n32, 32, m["repeats"], [None])
    (wall, _, img), (wall4, _, img4) = bw.rates(n128, 128, m["repeats"], [None, 4])
    diff = np.abs(img.astype(np.int16) - img4.astype(np.int16)).mean()
    return [Row("world renderer (render_faces), 32 px", "faces/s", wall32, None,
                "(default is 4x supersampling already)", f"{n32} faces per run"),
            Row("world renderer (render_faces), 128 px", "faces/s", wall, wall4,
                "4x supersampling", f"default 2x; mean abs. difference to 4x {diff:.2f}/255; {n128} faces")]


def synth_rows(m: dict, dev: torch.device) -> list[Row]:
    import bench_synth as bs

    rows, (n, n_naive) = [], m["synth"]
    configs = [(32, 16, n, n_naive, 256)] + ([(128, 64, 64, 8, 32)] if m["synth128"] else [])
    with tempfile.TemporaryDirectory(prefix="bench_synth.") as tmp:
        work, count = Path(tmp), iter(range(10_000))
        for size, width, n_f, n_b, batch in configs:
            g, lg, _ = bs.make_models(work, size, width)
            ours, base = best_rates(
                m["repeats"],
                lambda: bs.facelm_synth(g, lg, n_f, batch, dev, "pts", work / f"s{next(count)}",
                                        False),
                lambda: bs.naive(g, lg, n_b, dev, work / f"n{next(count)}"))
            rows.append(Row(f"facelm synth, {size} px G w{width}, PNG + .pts", "faces/s", ours,
                            base, "one face at a time, PNG + .pts inline",
                            f"random-weight G and L-Gen; {n_f} faces (baseline {n_b}), batch {batch}"))
    return rows


def dlib_rows(m: dict, dev: torch.device) -> list[Row]:
    try:
        import bench_dlib as bd
        bd.dl.load_predictor()  # loaded once, outside the timings (the pool's forks inherit it)
    except (ImportError, OSError) as err:  # dlib or its model file is missing
        return [Row("dlib annotation, 128 px", "faces/s", None, None, "",
                    f"skipped: {type(err).__name__}: {err}")]
    from facelm.data.world import render_faces

    n, cores = m["dlib"], bd.dl.available_cores()
    faces, _ = render_faces(n, 128, seed=0)
    bd.dl.annotate(faces[:2], "detect", size=128, n_workers=1, progress=False)  # warm-up
    many, one = best_rates(m["repeats"],
                           lambda: bd.timed_rate(faces, "detect", cores, []),
                           lambda: bd.timed_rate(faces, "detect", 1, []))
    return [Row("dlib annotation (HOG + 68 points), 128 px crops", "faces/s", many, one,
                "1 worker", f"{cores} processes (pool start-up included), {n} world faces")]


SECTIONS = {"began": began_rows, "inversion": inversion_rows, "lgen": lgen_rows,
            "detector": detector_rows, "world": world_rows, "synth": synth_rows,
            "dlib": dlib_rows}


def run(mode: str, device: str, threads: int | None, only: list[str] | None = None) -> dict:
    """Run the sections (all, or ``only``) in ``mode``; the result as a JSON-ready dict."""
    m, dev = MODES[mode], torch.device(device)
    n_threads = set_threads(threads)
    info = machine()
    rows: list[Row] = []
    t0 = time.perf_counter()
    for name, fn in SECTIONS.items():
        if only and name not in only:
            continue
        log(f"{name} ... ({time.perf_counter() - t0:.0f} s so far)")
        with contextlib.redirect_stdout(sys.stderr):  # trainers' notices: not in the table
            rows += fn(m, dev)
    reference = next((r.facelm for r in rows if r.loop.startswith("**machine")), None)
    return {"mode": mode, "device": str(dev), "threads": n_threads, "machine": info,
            "reference_images_per_s": reference, "seconds": time.perf_counter() - t0,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "rows": [r.to_dict() for r in rows],
            "_rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1-3 min)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    res = run(mode, args.device, args.threads, only)
    rows = res.pop("_rows")
    print(f"facelm benchmarks ({mode} run, device {res['device']}, {res['date']})")
    print(f"machine: {machine_line(res['machine'])}")
    if res["reference_images_per_s"]:
        print(f"machine-speed reference: {res['reference_images_per_s']:.0f} images/s "
              f"(eager BEGAN step, 32 px, width 16, batch 16)")
    print()
    print(markdown(rows))
    print(f"\nratio = facelm / baseline (higher is better); {res['seconds']:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

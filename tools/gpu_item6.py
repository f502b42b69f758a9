"""Issue #12 item 6: BEGAN at 64 px and at the paper's 128 px on a GPU, measured there.

For each setting, with facelm's own code end to end:

- ``default64``: the embedded default (``facelm.config`` defaults = the shipped params.yaml)
  with ``image_size: 64``, but G kept by M (``best_by: M``, ``best_after: 0``): dlib, which the
  default keeps G by, is not on the GPU machine;
- ``paper128``: the ``began`` section of ``configs/paper-celeba.yaml`` (width 64, gamma 0.5,
  lr 1e-4, eta 2, no skips, ...) at 128 px, but on the rendered face world (``dataset:
  world``; CelebA is not on the GPU machine). Every other section is the embedded default.

it renders the world faces at that size (stage 01's training / held-out indices and stage
00's detector indices, ``facelm.data.world.render_faces``, in a process pool), trains the
judge as stage 00 does (``train_detector`` with the params' ``detector`` section), trains
the BEGAN with ``train_began`` (its ``auto`` speed settings: on CUDA bf16 and channels_last
on, compile off) for a wall-clock budget, and measures quality as stage 02 does
(``evaluate_generator``: precision / recall / FD of ``evaluation.quality_n`` G(z) against
as many held-out faces in the judge's features, plus the data-vs-data floor; dlib is not on
the GPU machine, see ``--dlib``).

Time budget: ``train_began`` has no time limit, so per setting (all inside ``--seconds``):
1. a short throw-away probe run (``--probe-steps``, own folder) measures images/s in this
   process (it also pays the first call's cuDNN autotuning);
2. the real run, fresh, with ``steps`` chosen to fill what is left of the budget;
3. top-ups: while a useful share of the budget is left, the run is extended by resuming
   from facelm's checkpoint with a larger ``steps`` (``train_began`` resumes bit-exactly).
``best_window`` must be <= ``steps``: when the run is shorter than the setting's window
(5,000 steps in the paper's setting) it is clamped to the first call's steps, and the JSON
says so (``best_window_used``). ``--deadline`` bounds the whole process: a setting's
budget is clipped so that its quality and the later settings (``--min-seconds`` of
training each, plus rendering and judge) still fit; the last setting gets what is left.

Images/s reported (real training images per second, batch x steps / s):
``images_per_s``: facelm's own figure for the real run's training loops (all calls, incl.
checkpoint writes and sample grids, in a process already warmed by the probe);
``images_per_s_steady``: the same loops between host syncs, leaving out each call's first
sync window (50 steps on CUDA, 1 on CPU: cuDNN autotuning, allocator warm-up); there is no
compile warm-up to leave out on CUDA (``compile: auto`` is off there);
``probe.images_per_s``: the probe's whole loop, warm-up included.

Results go to ``<out>/gpu_item6.json`` (rewritten after every phase, so a killed run still
leaves its figures), ``<out>/G_<setting>.safetensors`` (the generator stage 02 would judge:
best M window) and ``<out>/grid_<setting>.png`` (16 G(z), stage 02's Fig. 3 seed).

Run (GPU machine, see tools/gpu_item6.sh)::

    python tools/gpu_item6.py --seconds 165 240 --deadline 470
    python tools/gpu_item6.py --smoke --device cpu --out /tmp/gpu_smoke   # the whole path, seconds
    python tools/gpu_item6.py --dlib G_default64.safetensors G_paper128.safetensors  # CPU, dlib
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _early_threads(argv: list[str]) -> None:
    """``--threads N`` also caps the BLAS / OpenMP pools, which must be set before numpy
    loads: on shared cores a 2-thread OpenBLAS eigh (the FD) ran 100x slower than 1 thread.
    ``--smoke`` without ``--threads`` means one thread (tiny models run fastest so)."""
    if "--smoke" in argv and not any(a.startswith("--threads") for a in argv):
        argv = [*argv, "--threads", "1"]
    for i, a in enumerate(argv):
        n = argv[i + 1] if a == "--threads" and i + 1 < len(argv) else a[10:] if a.startswith("--threads=") else None
        if n and n.isdigit() and int(n) > 0:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(var, n)


if __name__ == "__main__":
    _early_threads(sys.argv[1:])

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing facelm

# light imports only at the top: spawned rendering workers re-import this file (no torch there)
from facelm.config import AUTHORS_KEEPING, FRESH_ENCODER, Params, deep_merge, parse_params, replace  # noqa: E402
from facelm.data.world import render_faces  # noqa: E402
from facelm.params_file import read_params_file  # noqa: E402

SETTINGS = ("default64", "paper128")
PAPER = ROOT / "configs" / "paper-celeba.yaml"
JSON_NAME = "gpu_item6.json"
SAFETY = 0.92          # share of the measured rate's step count that is asked for
CALL_OVERHEAD_S = 2.0  # per train_began call: models, resume, final checkpoint, weights
MIN_TOPUP_S = 8.0      # a top-up is only worth its resume when this much budget is left


# ----------------------------------------------------------------------------- settings
def setting_params(name: str, smoke: bool = False) -> Params:
    """The validated params of one setting (world data, judge = the default detector)."""
    base = Params().to_dict()  # the embedded default
    if name == "default64":  # kept by M: no dlib on the GPU machine (see the docstring)
        over: dict[str, Any] = {"image_size": 64, "began": AUTHORS_KEEPING}
    elif name == "paper128":
        # the paper's BEGAN has no mode regulariser, so no encoder of stage 02 to start from
        over = {"image_size": 128, "began": read_params_file(PAPER)["began"],
                "inversion": FRESH_ENCODER}
    else:
        raise ValueError(f"unknown setting {name!r} (choose from {SETTINGS})")
    if smoke:  # the path, not the numbers: a model a CPU steps through in milliseconds
        over = deep_merge(over, {"began": {"width": 8, "batch_size": 4},
                                 "detector": {"steps": 10, "batch_size": 8, "width": 4}})
    return parse_params(deep_merge(base, over))


# ----------------------------------------------------------------------------- data
def render(n: int, size: int, seed: int, start: int, world, pool: ProcessPoolExecutor | None,
           chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces ``start .. start + n - 1`` of the world: face i depends only on (seed, i), so
    chunks rendered in worker processes give exactly ``render_faces(n, size, seed, start)``."""
    starts = list(range(start, start + n, chunk))
    jobs = [(min(chunk, start + n - s), size, seed, s) for s in starts]
    if pool is None:
        parts = [render_faces(*j, world=world) for j in jobs]
    else:
        parts = [f.result() for f in [pool.submit(_render_job, j, world) for j in jobs]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _render_job(job: tuple[int, int, int, int], world) -> tuple[np.ndarray, np.ndarray]:
    return render_faces(*job, world=world)


def world_faces(p: Params, n: dict[str, int], pool, workers: int) -> dict[str, tuple]:
    """Stage 01's splits (train 0.., held-out after it) and stage 00's faces (detector
    train / val from DETECTOR_WORLD_START), as ``prepare_world`` and ``detector_faces`` index them."""
    from facelm.data.prepare import DETECTOR_WORLD_START

    size, seed, w = p.image_size, p.seed, p.world
    chunk = max(64, math.ceil(max(n.values()) / max(workers, 1)))
    return {
        "train": render(n["train"], size, seed, 0, w, pool, chunk),
        "heldout": render(n["heldout"], size, seed, n["train"], w, pool, chunk),
        "det_train": render(n["det_train"], size, seed, DETECTOR_WORLD_START, w, pool, chunk),
        "det_val": render(n["det_val"], size, seed, DETECTOR_WORLD_START + n["det_train"], w, pool, chunk),
    }


# ----------------------------------------------------------------------------- rates
class RateMeter:
    """``train_began`` callback: host-sync timestamps -> images/s without warm-up.

    On CUDA the trainer copies its stats to the host every ``sync_every`` steps and then
    emits that group's "step" events back to back, so the last event of a burst is a step
    whose time is known exactly. Per call ("start" event) the rate runs from the end of its
    first burst to the end of its last one. It also prints a progress line every ``every`` s.
    """

    def __init__(self, batch: int, label: str, every: float = 15.0, gap: float = 1e-3):
        self.batch, self.label, self.every, self.gap = batch, label, every, gap
        self.calls: list[list[tuple[int, float]]] = []
        self.last_print = time.perf_counter()

    def __call__(self, event: str, state: dict) -> None:
        now = time.perf_counter()
        if event == "start":
            self.calls.append([])
        elif event == "step":
            self.calls[-1].append((int(state["step"]), now))
            if now - self.last_print > self.every:
                self.last_print = now
                print(f"  {self.label}: step {state['step']}  M {state['M']:.4f}  k {state['k']:.4f}",
                      flush=True)

    def _burst_ends(self, ev: list[tuple[int, float]]) -> list[tuple[int, float]]:
        return [e for i, e in enumerate(ev) if i + 1 == len(ev) or ev[i + 1][1] - e[1] > self.gap]

    def steady(self) -> tuple[float, int, float]:
        """(images/s, steps, seconds) summed over calls, each without its first burst."""
        steps, secs = 0, 0.0
        for ev in self.calls:
            ends = self._burst_ends(ev)
            if len(ends) >= 2:
                steps += ends[-1][0] - ends[0][0]
                secs += ends[-1][1] - ends[0][1]
        return (steps * self.batch / secs if secs > 0 else float("nan")), steps, secs


# ----------------------------------------------------------------------------- training
def train_in_budget(images: np.ndarray, cfg, out_dir: Path, seed: int, device: str,
                    budget_s: float, probe_steps: int, sync_every: int, label: str,
                    first_share: float = SAFETY) -> dict:
    """Probe, then one fresh run sized to the budget, then resumed top-ups; see the docstring.

    ``first_share``: share of the time left after the probe that the first real call is
    sized for (the smoke run asks for half, so that its top-ups exercise the resume path)."""
    from facelm.training.began import train_began

    t_start = time.perf_counter()
    deadline = t_start + budget_s
    # 1. probe: its own folder, so the real run starts fresh from the seed
    probe_cfg = replace(cfg, steps=probe_steps, best_window=min(cfg.best_window, probe_steps))
    meter = RateMeter(cfg.batch_size, f"{label} probe")
    pr = train_began(images, probe_cfg, out_dir / "probe", seed=seed, device=device,
                     sync_every=sync_every, progress=False, callbacks=[meter])
    rate = meter.steady()[0]
    rate = rate if math.isfinite(rate) else pr.images_per_s  # too short to leave warm-up out
    shutil.rmtree(out_dir / "probe", ignore_errors=True)
    probe = {"steps": pr.steps, "seconds": pr.seconds, "images_per_s": pr.images_per_s,
             "images_per_s_steady": rate}
    print(f"  {label} probe: {pr.steps} steps in {pr.seconds:.1f} s, {pr.images_per_s:.0f} images/s "
          f"({rate:.0f} without the first sync window)", flush=True)

    overhead = min(CALL_OVERHEAD_S, 0.1 * budget_s)
    min_topup = min(MIN_TOPUP_S, 0.1 * budget_s)

    def steps_for(seconds_left: float, per_s: float, share: float = SAFETY) -> int:
        return int(per_s / cfg.batch_size * max(0.0, seconds_left - overhead) * share)

    # 2. the real run, sized by the probe's rate; best_window fixed here for all its calls
    steps = max(1, steps_for(deadline - time.perf_counter(), rate, first_share))
    main_cfg = replace(cfg, steps=steps, best_window=min(cfg.best_window, steps))
    meter = RateMeter(cfg.batch_size, label)
    res = train_began(images, main_cfg, out_dir, seed=seed, device=device,
                      sync_every=sync_every, progress=False, callbacks=[meter])
    calls = [{"steps": res.steps, "seconds": res.seconds, "images_per_s": res.images_per_s}]
    # 3. top-ups, resumed from the checkpoint, at the rate the real run itself reached
    while len(calls) < 4:
        left = deadline - time.perf_counter()
        steady = meter.steady()[0]
        extra = steps_for(left, steady if math.isfinite(steady) else res.images_per_s)
        if left < min_topup or extra < max(2, res.steps // 50):
            break
        res = train_began(images, replace(main_cfg, steps=res.steps + extra), out_dir, seed=seed,
                          device=device, sync_every=sync_every, progress=False, callbacks=[meter])
        calls.append({"steps": res.steps, "seconds": res.seconds, "images_per_s": res.images_per_s,
                      "resumed_from": res.resumed_from})
    steady, steady_steps, steady_s = meter.steady()
    return {
        "budget_s": budget_s, "wall_s": time.perf_counter() - t_start,
        "steps": res.steps, "seconds": res.total_seconds,
        "images_per_s": res.steps * cfg.batch_size / res.total_seconds if res.total_seconds else 0.0,
        "images_per_s_steady": steady, "steady_steps": steady_steps, "steady_seconds": steady_s,
        "M_final": res.M_final, "k_t": float(res.k[-1]), "M_last": float(res.M[-1]),
        "best_step": res.best_step, "best_M": res.best_M,
        "best_window_used": main_cfg.best_window, "best_window_config": cfg.best_window,
        "calls": calls, "probe": probe,
    }


# ----------------------------------------------------------------------------- quality
def measure_quality(gen_path: Path, judge, faces: dict, p: Params, device: str) -> dict:
    """Stage 02's ``evaluate_generator`` (seed + 2, ``quality_n``), without dlib."""
    from facelm.evaluation.quality import evaluate_generator
    from facelm.models.began import load_generator

    G = load_generator(gen_path, device=device)
    q, _ = evaluate_generator(G, judge, faces["train"][0], faces["heldout"][0],
                              replace(p.evaluation, dlib=False), seed=p.seed + 2)
    return {"quality": {k[4:]: v for k, v in q.items() if not k.startswith("gen_floor_")},
            "floor": {k[10:]: v for k, v in q.items() if k.startswith("gen_floor_")}}


def save_grid(gen_path: Path, path: Path, seed: int, device: str) -> None:
    """16 G(z) (stage 02's Fig. 3 z seed) as a 4 x 4 PNG."""
    import cv2
    import torch

    from facelm.checkpoint import atomic_write
    from facelm.models.began import load_generator
    from facelm.report.figures import tile
    from facelm.tensors import sample_z, to_uint8

    G = load_generator(gen_path, device=device)
    with torch.no_grad():
        faces = to_uint8(G(sample_z(16, G.z_dim, seed=seed).to(device)))
    grid = tile(faces, 4)  # 4 x 4, 1 px white gaps
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cv2 could not encode the grid")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(png.tobytes()))


# ----------------------------------------------------------------------------- driver
class Report:
    """``gpu_item6.json``, rewritten atomically after every phase."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data = path, {**head, "settings": {}}
        self.write()

    def write(self) -> None:
        from facelm.checkpoint import atomic_write

        text = json.dumps(self.data, indent=2, default=float, allow_nan=True)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text + "\n"))


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "host_cpus": os.cpu_count()}
    if device.startswith("cuda"):
        info.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def run_setting(name: str, args: argparse.Namespace, report: Report, pool, work: Path,
                budget_fn) -> None:
    """One setting: render, judge, BEGAN in budget, quality, files; the JSON after each."""
    import torch

    from facelm.landmarks import nme
    from facelm.models.detector import predict_landmarks
    from facelm.training.detector import train_detector

    p = setting_params(name, args.smoke)
    rec: dict[str, Any] = {"image_size": p.image_size, "dataset": p.dataset, "seed": p.seed,
                           "config": {"began": p.began.model_dump(), "detector": p.detector.model_dump(),
                                      "evaluation": p.evaluation.model_dump()},
                           "status": "rendering", "timings_s": {}}
    report.data["settings"][name] = rec
    report.write()
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    n = {"train": pick(args.n_train, p.world.n_train), "heldout": pick(args.n_heldout, p.world.n_heldout),
         "det_train": pick(args.n_detector, p.detector.n_train), "det_val": pick(args.n_detector_val, p.detector.n_val)}
    rec["n"] = n
    t = time.perf_counter()
    faces = world_faces(p, n, pool, args.workers)
    rec["timings_s"]["render"] = time.perf_counter() - t
    print(f"[{name}] rendered {sum(n.values())} faces at {p.image_size} px in "
          f"{rec['timings_s']['render']:.1f} s", flush=True)

    # the judge, as stage 00 (train_detector on the detector section), and its val NME
    rec["status"] = "judge"
    report.write()
    t = time.perf_counter()
    det = train_detector(*faces["det_train"], p.detector, seed=p.seed, device=args.device, progress=False)
    judge = det.model
    val_nme = float(nme(predict_landmarks(judge, faces["det_val"][0]), faces["det_val"][1]).mean())
    rec["timings_s"]["judge"] = time.perf_counter() - t
    rec["judge"] = {"steps": p.detector.steps, "train_seconds": det.seconds, "nme_val": val_nme}
    print(f"[{name}] judge: {p.detector.steps} steps in {det.seconds:.1f} s, val NME {val_nme:.4f}",
          flush=True)

    # BEGAN in the wall-clock budget
    budget = budget_fn()
    rec["status"] = "training"
    report.write()
    if budget <= 0:
        rec["status"] = "skipped: no time left before --deadline"
        report.write()
        return
    print(f"[{name}] BEGAN for {budget:.0f} s: {json.dumps(p.began.model_dump())}", flush=True)
    out_dir = work / name / "began"
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run, never an old checkpoint
    sync = args.sync_every or (50 if args.device.startswith("cuda") else 1)
    t = time.perf_counter()
    rec["train"] = train_in_budget(faces["train"][0], p.began, out_dir, p.seed, args.device, budget,
                                   args.probe_steps, sync, name, 0.5 if args.smoke else SAFETY)
    rec["timings_s"]["began"] = time.perf_counter() - t
    tr = rec["train"]
    for key in ("steps", "seconds", "images_per_s", "M_final", "k_t"):
        rec[key] = tr[key]
    print(f"[{name}] BEGAN: {tr['steps']} steps, {tr['seconds']:.1f} s in the loop, "
          f"{tr['images_per_s']:.0f} images/s ({tr['images_per_s_steady']:.0f} steady), "
          f"M {tr['M_final']:.4f}, k_t {tr['k_t']:.4f}", flush=True)
    gen = args.out / f"G_{name}.safetensors"
    shutil.copyfile(out_dir / "generator.safetensors", gen)
    rec["generator_file"] = gen.name
    rec["status"] = "quality"
    report.write()

    # quality, as stage 02 (the best-window G it keeps), then the last G if time allows
    t = time.perf_counter()
    rec.update(measure_quality(gen, judge, faces, p, args.device))
    save_grid(gen, args.out / f"grid_{name}.png", p.seed + 3, args.device)
    rec["grid_file"] = f"grid_{name}.png"
    rec["timings_s"]["quality"] = time.perf_counter() - t
    q, f = rec["quality"], rec["floor"]
    print(f"[{name}] quality: precision {q['precision']:.3f} recall {q['recall']:.3f} FD {q['fd']:.2f} "
          f"(floor {f['precision']:.3f} {f['recall']:.3f} {f['fd']:.2f})", flush=True)
    rec["status"] = "done"
    report.write()
    if args.deadline is None or time.perf_counter() - args.t0 < args.deadline - args.reserve:
        t = time.perf_counter()
        rec["quality_last"] = measure_quality(out_dir / "generator_last.safetensors", judge, faces, p,
                                              args.device)["quality"]
        rec["timings_s"]["quality_last"] = time.perf_counter() - t
        report.write()
    del judge, det
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_all(args: argparse.Namespace) -> dict:
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.gettempdir()) / "gpu_item6_work"  # never under $OUT
    report = Report(args.out / JSON_NAME, {"issue": "#12 item 6", "smoke": args.smoke,
                                           "args": {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in vars(args).items() if k != "dlib"},
                                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                           **device_info(args.device)})
    seconds = list(args.seconds) + [args.seconds[-1]] * (len(args.settings) - len(args.seconds))
    pool = None
    if args.workers > 1:  # spawned before any CUDA work; workers import numpy/cv2 only
        import multiprocessing as mp
        pool = ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"))
    try:
        for i, name in enumerate(args.settings):
            def budget(i: int = i) -> float:
                """This setting's seconds, clipped so that its quality (``--reserve``) and the
                later settings (each at least ``--min-seconds`` of training + ``--reserve`` +
                ``--overhead``) still fit the deadline: a late setting gets what is left."""
                if args.deadline is None:
                    return seconds[i]
                later = sum(min(s, args.min_seconds) + args.reserve + args.overhead
                            for s in seconds[i + 1:])
                left = args.deadline - (time.perf_counter() - args.t0)
                return min(seconds[i], left - args.reserve - later)
            try:
                run_setting(name, args, report, pool, work, budget)
            except Exception as err:  # keep the other setting's figures
                report.data["settings"].setdefault(name, {})["status"] = f"failed: {type(err).__name__}: {err}"
                report.write()
                print(f"[{name}] FAILED: {type(err).__name__}: {err}", flush=True)
                if args.smoke:
                    raise
    finally:
        if pool is not None:
            pool.shutdown()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    report.data["finished_s"] = time.perf_counter() - args.t0
    report.write()
    return report.data


# ----------------------------------------------------------------------------- dlib (CPU)
def dlib_rates(paths: list[str], n: int, seed: int, workers: int) -> dict[str, float]:
    """dlib's HOG face-found rate (stage 02's protocol, ``evaluation`` of the defaults) on ``n``
    G(z) of each generator, z = sample_z(n, z_dim, seed)."""
    from facelm.evaluation.quality import dlib_found, draw_faces
    from facelm.models.began import load_generator

    cfg = Params().evaluation
    out = {}
    for path in paths:
        faces = draw_faces(load_generator(path, device="cpu"), n, seed)
        out[str(path)], se = dlib_found(faces, cfg, n_workers=workers)
        print(f"{path}: dlib finds a face in {out[str(path)]:.3f} ± {se:.3f} of {n} G(z) "
              f"(seed {seed}, {cfg.dlib_size} px)", flush=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    a.add_argument("--seconds", nargs="+", type=float, default=None,
                   help="BEGAN wall-clock budget per setting (one value, or one per setting; "
                        "default 150, smoke 2)")
    a.add_argument("--deadline", type=float, default=None,
                   help="seconds from start by which everything must be done (clips the budgets)")
    a.add_argument("--reserve", type=float, default=20.0, help="s kept per setting for its quality")
    a.add_argument("--overhead", type=float, default=40.0,
                   help="s a later setting needs for rendering and its judge (for --deadline)")
    a.add_argument("--min-seconds", type=float, default=60.0,
                   help="BEGAN seconds kept for each later setting when --deadline clips a budget")
    a.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    a.add_argument("--out", type=Path, default=None, help="results folder (default $OUT or ./gpu_item6_out)")
    a.add_argument("--work", type=Path, default=None, help="scratch folder: faces are not written, checkpoints are "
                   "(default $TMPDIR/gpu_item6_work, deleted at the end)")
    a.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    a.add_argument("--n-train", type=int, default=None, help="GAN training faces (default world.n_train)")
    a.add_argument("--n-heldout", type=int, default=None, help="held-out faces (default world.n_heldout)")
    a.add_argument("--n-detector", type=int, default=None, help="judge training faces (default detector.n_train)")
    a.add_argument("--n-detector-val", type=int, default=None, help="judge val faces (default detector.n_val)")
    a.add_argument("--probe-steps", type=int, default=None, help="steps of the rate probe (default 200; smoke 3)")
    a.add_argument("--sync-every", type=int, default=None, help="train_began sync_every (default 50 CUDA, 1 CPU)")
    a.add_argument("--workers", type=int, default=None, help="rendering processes (default cores - 1, max 15)")
    a.add_argument("--threads", type=int, default=0,
                   help="torch and BLAS CPU threads (0: their defaults; smoke: 1)")
    a.add_argument("--smoke", action="store_true",
                   help="tiny n, BEGAN width 8 / batch 4, a 10-step judge, 3-step probe, 2 s per setting, "
                        "1 thread")
    a.add_argument("--dlib", nargs="+", metavar="PATH", default=None,
                   help="instead: dlib's face-found rate on 500 G(z) of these generator files (CPU)")
    a.add_argument("--dlib-n", type=int, default=500)
    a.add_argument("--dlib-seed", type=int, default=123, help="sample_z seed (tools/began_quality_on_train.py's)")
    args = a.parse_args(argv)
    args.t0 = time.perf_counter()
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("gpu_item6_out")
    if args.smoke:
        for key, value in (("n_train", 48), ("n_heldout", 16), ("n_detector", 32), ("n_detector_val", 8),
                           ("probe_steps", 3)):
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.seconds = args.seconds or [2.0 if args.smoke else 150.0]
    args.threads = args.threads or (1 if args.smoke else 0)
    args.probe_steps = args.probe_steps or 200
    if args.workers is None:
        args.workers = 1 if args.smoke else min(15, max(1, (os.cpu_count() or 2) - 1))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dlib:
        rates = dlib_rates(args.dlib, args.dlib_n, args.dlib_seed, args.workers if args.workers > 1 else 1)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_item6_dlib.json").write_text(json.dumps(
            {"n": args.dlib_n, "seed": args.dlib_seed, "dlib_found": rates}, indent=2) + "\n")
        return 0
    data = run_all(args)
    print(json.dumps({n: {k: s.get(k) for k in ("status", "steps", "images_per_s", "M_final", "k_t",
                                                 "quality", "floor")}
                      for n, s in data["settings"].items()}, indent=1, default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

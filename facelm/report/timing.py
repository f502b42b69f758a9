"""Time you can plan by: a machine-speed reference and a small cost model of the stages.

(Over 350 lines only with its docstrings, which document every cost term / widget; the
code itself is under 300 lines.)

**Reference.** :func:`reference_speed` is the images/s of a plain eager fp32 BEGAN step
(32 px, width 16, batch 16, on the CPU, in the current torch thread setting; see
:func:`eager_began_rate`), measured for about 2 s after a warm-up and cached per machine
(CPU model, cores, threads, torch version) in ``$XDG_CACHE_HOME/facelm/speed.json``
(``~/.cache/facelm/speed.json``; the environment variable ``FACELM_SPEED_CACHE`` names
another file). ``benchmarks/run.py`` prints the same number first, as its machine-speed row.

**Reference unit** (ru): the time this machine takes for 1,000 reference steps, i.e.
``REFERENCE_IMAGES / reference`` seconds (16,000 images; 74 s at 215 img/s). A stage's
cost in ru is the same on every machine, up to how differently machines run different
kernels; its expected seconds are ``ru * REFERENCE_IMAGES / reference``. The default
``params.yaml`` costs about 12.6 ru in all (02_began 7.2, 07_augmentation 2.0,
03_inversion 1.8, 04_lgen 0.9, the rest 0.8): 15.2 min at 220 img/s, 39 min at 85 img/s.

**Cost model.** A stage costs ``overhead + sum(c_term * work_term)`` ru, where each work is
a count from the parameters (``px`` = image_size², ``w`` = a network's width):

=========  ==========================================================  =================
term       work                                                        stages
=========  ==========================================================  =================
overhead   1 (kernel start, imports, figures, HTML export)             every stage
render     faces rendered × px (the face world)                        00, 01
detector   steps × batch × px × w² × (1 + depth), every training       00, 07 (7·ks·seeds)
began      steps × batch × px × w² (compile and the quality sample     02
           absorbed)
inversion  images × steps (the cap) × px × w²                          03
encoder    encoder steps × encoder batch × px × w² (``init: encoder``)  03
lgen       optimiser steps of the z L-Gen (tiny MLP: per-step          04, 07 (ks·seeds
           overhead dominates)                                         K-runs)
features   feature-head steps × batch × members × grid²                04, 07 (K-runs)
forward    faces through G and the judge × px × w²                     06
dlib       faces × dlib_size² (when ``evaluation.dlib``)               02, 06
=========  ==========================================================  =================

**Calibration (approximate).** Each constant is fitted so that the default ``params.yaml``
predicts the stage times of one default run on the development machine (a fresh clone of
``790d16a``, 2026-12-03, 2-core AMD EPYC, torch 2.13 CPU, all cores, papermill durations;
03_inversion from a forced rerun of that stage ten minutes later, which gave the same metrics;
:data:`CALIBRATION_SECONDS`), whose reference was measured at its start
(:data:`CALIBRATION_REFERENCE`). ``overhead`` is the whole of 05_results, ``render`` the rest
of 01_preprocess, ``began``, ``inversion`` and ``forward`` the rest of 02, 03 and 06 (06 after
its dlib term), ``features`` the rest of 04 after its z L-Gen, ``detector`` the rest of
07_augmentation after its K-run label generators; 00_detector, not fitted, is then predicted
at 46.6 s for its 47.1. Three terms were timed apart: ``lgen``, the z L-Gen alone (22 s for 37,500
steps at a reference of 215 img/s, :data:`CALIBRATION_LGEN`), ``dlib`` (135 faces/s at 128 px
against a busy run's reference of 97 img/s, i.e. 300 faces/s at 215: :data:`CALIBRATION_DLIB`),
and ``encoder``, the inversion's encoder as stage 03 prints it (:data:`CALIBRATION_ENCODER`).
Inversion's constant absorbs its early stop, so a changed ``tol``/``patience`` (or a generator
whose faces stop sooner or later) moves it. The calibration run had ``inversion.landmark_weight``
0; the default's 3 adds the judge's pass per Adam step, which the model does not count (in the
``587eb85`` run stage 03 took 1.09x its prediction, the other stages 1.06-1.22x on a host that
slowed during the run). The reference itself is noisy (a 2 s measurement):
on the development machines it read 202-284 img/s on 2026-12-01/02 and 126-139 on 2026-12-03.
Machines differ in more than the reference: the same 7,000-step BEGAN cost 6.0 ru on the
2026-12-02 machine and 4.9 ru on the 2026-12-03 one. Expect ±30 %.

A celeba run's preprocessing (and the stages whose size is its crop count) has no estimate:
:func:`expected_seconds` returns None for it.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facelm.config import BEGANParams, Params, replace

__all__ = ["REFERENCE_IMAGES", "CALIBRATION_SECONDS", "CALIBRATION_REFERENCE", "calibration_params",
           "machine", "machine_key", "cache_path", "eager_began_rate", "reference_speed", "stage_work",
           "expected_units", "expected_seconds", "format_duration", "format_plan",
           "format_actual", "plan_stage", "note_in_report"]

REFERENCE_IMAGES = 16_000  # one reference unit: 1,000 reference steps of batch 16
REFERENCE_CONFIG = {"size": 32, "width": 16, "batch": 16}
CACHE_ENV = "FACELM_SPEED_CACHE"
# papermill durations of the default params.yaml on the development machine (seconds)
CALIBRATION_SECONDS = {"00_detector": 29.4, "01_preprocess": 8.4, "02_began": 519.8,
                       "03_inversion": 132.4, "04_lgen": 61.9, "05_results": 3.2,
                       "06_evaluation": 13.0, "07_augmentation": 141.9}
# reference img/s measured right after that run (b8ab044, 2026-12-04, Intel Xeon, 2 cores)
CALIBRATION_REFERENCE = 220.6
# terms timed apart from the default run (the first calibration, at a reference of 215 img/s):
CALIBRATION_DLIB = (300.0, 215.0)        # dlib faces/s at 128 px, all cores; reference img/s
CALIBRATION_LGEN = (22.0, 215.0, 37_500)  # the z L-Gen alone: seconds, reference, optimiser steps
# a fresh inversion encoder (init: encoder, 600 steps of 32), as stage 03 printed it in the
# default run of 790d16a (2026-12-03), whose stage 03 still trained one
CALIBRATION_ENCODER = (51.5, 129.7, 600)  # seconds, reference img/s of that run, steps
# the calibration run's own settings where the default has changed since (none: it ran the
# default of b8ab044)
CALIBRATION_SETTINGS: dict[str, dict] = {}
# a BEGAN step with began.recon_weight > 0 (E on the batch, G on twice the batch) against one
# without: 1.3-1.6x in the BEGAN loops of eleven stage-02 exps on one machine (docs/experiments.md)
RECON_STEP_COST = 1.4
# of that extra 0.4, the part that does not shrink with began.recon_batch (the extra kernel
# launches of E's pass and G's larger one): in two runs of benchmarks/bench_began.py (AMD EPYC,
# 2026-12-06) a step with the term on 16 / 8 / 4 of 16 faces cost 1.42-1.61x / 1.39-1.41x /
# 1.18-1.29x one without it; a line through them leaves about a quarter of the extra fixed
RECON_FIXED_COST = 0.12


def recon_step_cost(b: BEGANParams) -> float:
    """A BEGAN step's cost with ``began`` section ``b``'s mode regulariser, against one without."""
    if not b.recon_weight:
        return 1.0
    share = (b.recon_batch or b.batch_size) / b.batch_size
    return 1.0 + RECON_FIXED_COST + (RECON_STEP_COST - 1.0 - RECON_FIXED_COST) * share


# ------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers)
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict:
    """What the timings depend on: CPU model, usable cores, torch threads, torch build."""
    cuda = torch.cuda.is_available()
    return {"cpu": _cpu_model(), "cores": _cores(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "python": platform.python_version(), "platform": platform.platform()}


def machine_key(info: dict | None = None) -> str:
    """The cache key of a machine: CPU model, cores, threads and torch version."""
    m = info or machine()
    return f"{m['cpu']} | {m['cores']} cores | {m['threads']} threads | torch {m['torch']}"


def cache_path() -> Path:
    """``$FACELM_SPEED_CACHE``, else ``$XDG_CACHE_HOME/facelm/speed.json`` (~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facelm" / "speed.json"


# ---------------------------------------------------------------------------- reference
def eager_began_rate(*, size: int = 32, width: int = 16, batch: int = 16,
                     seconds: float | None = None, steps: int | None = None, warmup: int = 3,
                     device: str | torch.device = "cpu") -> float:
    """Images/s of the plain BEGAN step one writes first (the benchmarks' baseline).

    fp32, eager, NCHW; separate forward passes D(x), D(G(z).detach()) and D(G(z)); two
    backward passes (the second also computes D gradients it throws away); k_t read back
    to the host every step; batches drawn from 256 random uint8 images; Adam and BEGAN
    settings from ``BEGANParams()``. Timed for ``steps`` steps, or until ``seconds`` have
    passed (at least one step), after ``warmup`` untimed steps. The global RNG is untouched.
    """
    from facelm.models.began import Discriminator, Generator
    from facelm.tensors import to_tensor

    if (seconds is None) == (steps is None):
        raise ValueError("give exactly one of seconds and steps")
    dev, cfg = torch.device(device), BEGANParams()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    images = rng.integers(0, 256, (256, size, size, 3), dtype=np.uint8)
    with torch.random.fork_rng(devices=[]):  # layer constructors draw from the global RNG
        G, D = Generator(size, width, 64, seed=1).to(dev), Discriminator(size, width, 64).to(dev)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    k, done, t0 = cfg.k0, 0, 0.0
    while True:
        if done == warmup:
            sync()
            t0 = time.perf_counter()
        x = to_tensor(images[rng.integers(0, len(images), batch)], dev)
        z = (torch.rand(batch, 64, generator=gen) * 2 - 1).to(dev)
        fake = G(z)
        L_real = (x - D(x)).abs().mean()
        L_fake_d = (fake.detach() - D(fake.detach())).abs().mean()
        opt_D.zero_grad()
        (L_real - k * L_fake_d).backward()
        opt_D.step()
        L_G = (fake - D(fake)).abs().mean()
        opt_G.zero_grad()
        L_G.backward()
        opt_G.step()
        k = float(np.clip(k + cfg.lambda_k * (cfg.gamma * L_real.item() - L_G.item()), 0, 1))
        done += 1
        timed = done - warmup
        if timed > 0 and (timed == steps or (seconds is not None and
                                              time.perf_counter() - t0 >= seconds)):
            sync()
            return timed * batch / (time.perf_counter() - t0)


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: measure again


def reference_speed(*, threads: int | None = None, seconds: float = 2.0, refresh: bool = False,
                    cache: str | os.PathLike | None = None) -> float:
    """The machine-speed reference in images/s (see the module docstring), cached.

    ``threads``: torch threads to measure with (None or 0: the current setting, restored
    afterwards either way). ``refresh`` measures again and replaces the cached value
    (do it on a quiet machine: a busy one caches a low reference and over-long plans).
    ``cache``: the cache file (default :func:`cache_path`).
    """
    from facelm.checkpoint import atomic_write

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        info = machine()
        key, path = machine_key(info), Path(cache) if cache is not None else cache_path()
        entries = _read_cache(path)
        hit = entries.get(key)
        if not refresh and isinstance(hit, dict) and _positive(hit.get("images_per_s")):
            return float(hit["images_per_s"])
        rate = eager_began_rate(seconds=seconds)
    finally:
        torch.set_num_threads(before)
    entries[key] = {"images_per_s": rate, "seconds": seconds, "config": REFERENCE_CONFIG,
                    "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": info}
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(entries, indent=1)))
    except OSError:
        pass  # a read-only home: the plan still works, it just measures every time
    return rate


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


# ---------------------------------------------------------------------------- cost model
def _faces(p: Params) -> tuple[int, int] | None:
    """(training faces, held-out faces): known up front for the world only."""
    return (p.world.n_train, p.world.n_heldout) if p.dataset == "world" else None


def _detector(p: Params, steps: int, trainings: int = 1) -> float:
    d = p.detector
    return trainings * steps * d.batch_size * p.image_size ** 2 * d.width ** 2 * (1 + d.depth)


def _stage_00(p: Params) -> dict:
    d = p.detector
    render = (d.n_train + d.n_val) * p.image_size ** 2 if d.data == "world" else 0.0
    return {"render": render, "detector": _detector(p, d.steps)}


def _stage_01(p: Params) -> dict | None:
    f = _faces(p)
    return None if f is None else {"render": sum(f) * p.image_size ** 2}


def _stage_03(p: Params) -> dict | None:
    f, q = _faces(p), p.inversion
    if f is None:
        return None
    images = min(q.n_train or f[0], f[0]) + f[1] + q.n_mirror
    px_w2 = p.image_size ** 2 * p.began.width ** 2
    encoder = q.encoder_steps * q.encoder_batch_size * px_w2 if q.init == "encoder" else 0.0
    return {"inversion": images * q.steps * px_w2, "encoder": encoder}


def _feature_steps(p: Params, steps: int, batch: int) -> float:
    """The feature label generator's work: member-cells through the heads."""
    f = p.lgen.features
    return steps * batch * f.members * f.grid ** 2


def _stage_04(p: Params) -> dict | None:
    f, g = _faces(p), p.lgen
    if f is None:
        return None
    pairs = min(p.inversion.n_train or f[0], f[0])
    per_epoch = pairs // g.batch_size if g.drop_last else math.ceil(pairs / g.batch_size)
    fb = g.features.batch_size
    return {"lgen": g.epochs * per_epoch,
            "features": _feature_steps(p, g.features.epochs * math.ceil(pairs / fb), fb)}


def _stage_06(p: Params) -> dict | None:
    f, e = _faces(p), p.evaluation
    if f is None:
        return None
    faces = e.n_random + f[1]
    width2 = p.began.width ** 2 + p.detector.width ** 2
    return {"forward": faces * p.image_size ** 2 * width2,
            "dlib": faces * e.dlib_size ** 2 if e.dlib else 0.0}


def _stage_07(p: Params) -> dict:
    a = p.augmentation
    runs = len(a.ks) * a.seeds  # each: 7 detectors (real only, 3 conditions x 2 settings) and
    # the K-run label generators of setting k
    return {"detector": _detector(p, a.steps, 7 * runs), "lgen": runs * a.lgen_steps,
            "features": _feature_steps(p, runs * a.features_steps, p.lgen.features.batch_size)}


_STAGES: dict[str, Callable[[Params], dict | None]] = {
    "00_detector": _stage_00, "01_preprocess": _stage_01,
    "02_began": lambda p: {"began": p.began.steps * p.began.batch_size * p.image_size ** 2
                                    * p.began.width ** 2
                                    * recon_step_cost(p.began)},
    "03_inversion": _stage_03, "04_lgen": _stage_04, "05_results": lambda p: {},
    "06_evaluation": _stage_06, "07_augmentation": _stage_07,
}


def stage_work(stage: str, params: Params) -> dict[str, float] | None:
    """The work of each cost term of ``stage`` (without the overhead), None when unknown."""
    fn = _STAGES.get(stage)
    return None if fn is None else fn(params)


def _ru(seconds: float, reference: float = CALIBRATION_REFERENCE) -> float:
    return seconds * reference / REFERENCE_IMAGES


def calibration_params() -> Params:
    """The settings of the run :data:`CALIBRATION_SECONDS` was timed on: the defaults with
    :data:`CALIBRATION_SETTINGS` applied."""
    p = Params()
    return replace(p, **{k: replace(getattr(p, k), **v) for k, v in CALIBRATION_SETTINGS.items()})


@functools.lru_cache(maxsize=1)
def _constants() -> dict[str, float]:
    """Reference units per unit of work, fitted to :data:`CALIBRATION_SECONDS`."""
    p, t, over = calibration_params(), CALIBRATION_SECONDS, CALIBRATION_SECONDS["05_results"]
    fresh = replace(p, inversion=replace(p.inversion, encoder_start="fresh",
                                         encoder_steps=CALIBRATION_ENCODER[2]))
    c = {"overhead": _ru(over),
         "dlib": _ru(1.0 / CALIBRATION_DLIB[0], CALIBRATION_DLIB[1]) / 128 ** 2,  # a 128 px face
         "lgen": _ru(CALIBRATION_LGEN[0], CALIBRATION_LGEN[1]) / CALIBRATION_LGEN[2],
         "encoder": _ru(*CALIBRATION_ENCODER[:2]) / stage_work("03_inversion", fresh)["encoder"]}

    def fit(term: str, stage: str) -> None:
        """The stage's time above the overhead and its already known terms is this term's."""
        work = stage_work(stage, p)
        known = sum(c[k] * w for k, w in work.items() if k != term and k in c)
        c[term] = (_ru(t[stage] - over) - known) / work[term]

    fit("render", "01_preprocess")
    fit("began", "02_began")
    fit("inversion", "03_inversion")
    fit("features", "04_lgen")
    fit("detector", "07_augmentation")
    fit("forward", "06_evaluation")
    return c


def expected_units(stage: str, params: Params) -> float | None:
    """The cost of ``stage`` with ``params`` in reference units; None for an unknown stage
    or a size known only once it runs (a celeba crop count)."""
    work = stage_work(stage, params)
    if work is None:
        return None
    c = _constants()
    return c["overhead"] + sum(c[term] * w for term, w in work.items())


def expected_seconds(stage: str, params: Params, reference: float | None = None) -> float | None:
    """Expected wall time of ``stage`` on this machine (``reference`` img/s; default
    :func:`reference_speed` with ``params.threads``), or None (see :func:`expected_units`)."""
    units = expected_units(stage, params)
    if units is None:
        return None
    reference = reference if reference is not None else reference_speed(threads=params.threads)
    return units * REFERENCE_IMAGES / reference


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"7.3 min"`` or ``"2.1 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def format_plan(stage: str, params: Params, reference: float | None = None) -> str:
    """One line for the start of a stage, e.g. ``"expected ≈ 7.3 min on this machine
    (5.87 reference units; reference 215 img/s)"``."""
    units = expected_units(stage, params)
    if units is None:
        return f"expected duration of {stage}: unknown (no cost model for it with these parameters)"
    reference = reference if reference is not None else reference_speed(threads=params.threads)
    seconds = units * REFERENCE_IMAGES / reference
    return (f"expected ≈ {format_duration(seconds)} on this machine ({units:.3g} reference "
            f"units; reference {reference:.0f} img/s)")


def format_actual(seconds: float, expected: float | None = None) -> str:
    """One line for the end of a stage: ``"took 6.9 min (expected ≈ 7.3 min: 0.95x)"``."""
    if expected is None or not expected > 0:
        return f"took {format_duration(seconds)}"
    return (f"took {format_duration(seconds)} (expected ≈ {format_duration(expected)}: "
            f"{seconds / expected:.2f}x)")


def plan_stage(stage: str, params: Params) -> tuple[str, float | None]:
    """``(format_plan line, expected seconds or None)`` for the stage runner; never raises
    (a plan is a courtesy: a failure to make one must not stop a stage)."""
    try:
        reference = reference_speed(threads=params.threads)
        return format_plan(stage, params, reference), expected_seconds(stage, params, reference)
    except Exception as err:  # noqa: BLE001
        return f"expected duration of {stage}: unknown ({type(err).__name__}: {err})", None


def note_in_report(notebook: str | os.PathLike, lines: list[str]) -> None:
    """Put ``lines`` (the plan and the actual duration) in a markdown cell at the top of an
    executed notebook, so its HTML report shows them."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    text = "**Stage time** — " + "; ".join(lines)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(text, metadata={"tags": ["facelm-timing"]}))
    nbformat.write(nb, notebook)

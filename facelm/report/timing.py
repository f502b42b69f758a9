"""Time you can plan by: a small cost model of the stages, in machine-speed reference units.

A stage's cost in reference units (ru, :mod:`facelm.report.speed`: 1,000 plain BEGAN steps on
this machine) is the same on every machine, up to how differently machines run different
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
slowed during the run). The reference itself is noisy (see :mod:`facelm.report.speed`).
Machines differ in more than the reference: the same 7,000-step BEGAN cost 6.0 ru on the
2026-12-02 machine and 4.9 ru on the 2026-12-03 one. Expect ±30 %.

A celeba run's preprocessing (and the stages whose size is its crop count) has no estimate:
:func:`expected_seconds` returns None for it.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Callable

from facelm.config import BEGANParams, Params, replace
from facelm.report.speed import REFERENCE_IMAGES, reference_speed

__all__ = ["CALIBRATION_SECONDS", "CALIBRATION_REFERENCE", "calibration_params", "recon_step_cost",
           "stage_work", "expected_units", "expected_seconds", "format_duration", "format_plan",
           "format_actual", "plan_stage", "note_in_report"]

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

"""Helpers shared by the benchmark scripts: threads, device sync, interleaved best-of timing,
one result row per hot loop and its markdown table."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a fresh clone without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from facelm.report.speed import machine  # noqa: E402


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads(threads)`` (None or 0: all usable cores); the count set."""
    n = threads or machine()["cores"]
    torch.set_num_threads(n)
    return n


def sync(device: torch.device | str) -> None:
    """Wait for the device (a no-op on the CPU), so a timer reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_rates(repeats: int, *fns: Callable[[], float]) -> list[float]:
    """The best of ``repeats`` calls of each rate function (higher is better), called in turn
    within each repeat so that load from other processes hits all of them alike."""
    best = [0.0] * len(fns)
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], fn())
    return best


@dataclass
class Row:
    """One hot loop against its plain baseline, measured in the same run."""

    loop: str                      # what is timed
    unit: str                      # "images/s", "faces/s", ...
    facelm: float | None           # facelm's rate (None: not measured)
    baseline: float | None         # the plain baseline's rate (None: no baseline)
    baseline_is: str = ""          # what the baseline is, in a few words
    note: str = ""                 # sizes, models, final errors

    @property
    def ratio(self) -> float | None:
        return self.facelm / self.baseline if self.facelm is not None and self.baseline else None

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def _num(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def markdown(rows: list[Row]) -> str:
    """The rows as one markdown table."""
    lines = ["| hot loop | unit | facelm | baseline | ratio | baseline is | notes |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:  # a "|" inside a cell would split it
        r = Row(*(v.replace("|", "/") if isinstance(v, str) else v for v in
                  (r.loop, r.unit, r.facelm, r.baseline, r.baseline_is, r.note)))
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        lines.append(f"| {r.loop} | {r.unit} | {_num(r.facelm)} | {_num(r.baseline)} | {ratio} "
                     f"| {r.baseline_is} | {r.note} |")
    return "\n".join(lines)


def machine_line(info: dict | None = None) -> str:
    """One line naming the machine the numbers come from."""
    m = info or machine()
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    build = f"CUDA {m['cuda']}" if m.get("cuda") else "CPU build"
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({build}, mkldnn "
            f"{'on' if m['mkldnn'] else 'off'}), {m['threads']} threads{gpu}; "
            f"Python {m['python']}, {m['platform']}")

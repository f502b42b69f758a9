"""Paired differences over seeds and their Student-t confidence interval.

A seed pairs two conditions: the same real faces and the same detector initialisation, so
the per-seed difference (condition minus baseline) removes what the seeds share. The mean
difference gets a two-sided Student-t interval over the seeds; with one seed it has no
spread to measure, and the interval is undefined (``None``), never guessed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Interval", "t_quantile", "t_interval", "paired_differences"]

_GRID = 4001  # Simpson points for the t density's integral (error < 1e-9 for every df)


def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom, x >= 0 (Simpson's rule)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    t = np.linspace(0.0, x, _GRID)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
    weights = np.ones(_GRID)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return 0.5 + float(weights @ density) * (x / (_GRID - 1)) / 3.0


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0.5 < p < 1``),
    by bisection on its distribution function."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:  # df = 1, p = 0.975 needs hi near 12.7
        lo, hi = hi, 2.0 * hi
    for _ in range(60):  # the bracket halves each time: far below float precision after 60
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided confidence interval (``lo``/``hi`` are
    ``None`` when ``n < 2``: one value says nothing about the spread)."""

    mean: float
    lo: float | None
    hi: float | None
    n: int
    level: float = 0.95

    @property
    def defined(self) -> bool:
        """Whether the interval exists (two or more values)."""
        return self.lo is not None

    def text(self, digits: int = 4) -> str:
        """``+0.0123 [-0.0010, +0.0256]``, or the mean with ``CI undefined (1 seed)``."""
        if not self.defined:
            return f"{self.mean:+.{digits}f} (CI undefined: {self.n} seed)"
        return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with its Student-t interval: mean ± t_{(1+level)/2, n-1} · s / √n,
    ``s`` the sample standard deviation (ddof 1). Undefined (``lo = hi = None``) for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"t_interval needs one or more finite values, got {x.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"t_interval needs 0 < level < 1, got {level}")
    mean, n = float(x.mean()), len(x)
    if n < 2:
        return Interval(mean, None, None, n, level)
    half = t_quantile((1.0 + level) / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_differences(condition: dict, baseline: dict) -> list[float]:
    """``condition[s] - baseline[s]`` for every seed ``s``, in seed order. The two must hold
    the same seeds: an unpaired seed would turn a paired comparison into an unpaired one."""
    if set(condition) != set(baseline) or not condition:
        raise ValueError(f"paired differences need the same seeds on both sides, got "
                         f"{sorted(condition)} and {sorted(baseline)}")
    return [float(condition[s]) - float(baseline[s]) for s in sorted(condition)]

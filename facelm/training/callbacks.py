"""Trainer callbacks that attach logging to facelm's trainers from the outside.

Trainers call ``cb(event, state)``; these adapters turn such calls into dvclive metrics,
plots and images, so ``facelm`` trainers know nothing of logging (minGPT's pattern).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np


def open_live(folder: str | Path):
    """A dvclive logger that never edits dvc.yaml and never starts a DVC experiment."""
    from dvclive import Live

    return Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False, report=None)


class LiveImages:
    """Log the trainer's "sample" events (uint8 NHWC grids of a fixed z) as dvclive images."""

    def __init__(self, live, name: str = "samples", ncols: int = 8):
        self.live, self.name, self.ncols = live, name, ncols

    def __call__(self, event: str, state: dict) -> None:
        if event != "sample":
            return
        from facelm.report.figures import annotate, tile

        images = state["images"]
        grid = tile(annotate(images, None, scale=max(1, 64 // images.shape[1])), self.ncols)
        self.live.log_image(f"{self.name}/step_{state['step']:07d}.png", grid)


def log_history(live, history: dict[str, Iterable[float]], every: int = 1, prefix: str = "") -> None:
    """Log curves (equal-length arrays keyed by name; ``step`` optional) as dvclive plots.

    Logging after training from the trainer's full history (kept in its checkpoints) gives
    complete curves even when a run was interrupted and resumed.
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    steps = arrays.pop("step", None)
    n = len(next(iter(arrays.values())))
    if steps is None:
        steps = np.arange(n)
    for i in range(0, n, every):
        live.step = int(steps[i])
        for name, values in arrays.items():
            if np.isfinite(values[i]):
                live.log_metric(f"{prefix}{name}", float(values[i]))

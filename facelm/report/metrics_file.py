"""A stage's metrics file (``metrics/NN_name.json``), written only with registered keys.

The values are what DVC compares between runs, so the format is fixed: flat JSON, keys in
the order given, ints as ints, floats rounded to 6 decimals, two-space indent.
"""
from __future__ import annotations

import json
from pathlib import Path

from facelm.checkpoint import atomic_write
from facelm.report.metrics import check_keys, stages


def _plain(value):
    """numpy scalars -> Python numbers; floats rounded to 6 decimals (stable, readable JSON)."""
    value = value.item() if hasattr(value, "item") else value
    return round(value, 6) if isinstance(value, float) else value


def write_metrics(path: str | Path, metrics: dict) -> dict:
    """Write a stage's flat metrics JSON atomically; return the values as written.

    Every key must be registered; when the file is named after a stage (``metrics/NN_name.json``)
    every key must belong to that stage. Values become plain ints/floats (floats rounded to
    6 decimals), in the order given.
    """
    path = Path(path)
    check_keys(metrics, stage=path.stem if path.stem in stages() else None)
    clean = {key: _plain(value) for key, value in metrics.items()}
    text = json.dumps(clean, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return clean

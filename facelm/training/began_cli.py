"""``facelm train-began``: the BEGAN trainer from the command line (and under torchrun).

It reads the ``began`` section, ``seed`` and ``threads`` of ``--params``; every ``began`` field
has a flag (``--steps``, ``--lambda-k``, ...) that overrides it. One JSON line per rank says
what the run did, so a launcher can check that the replicas agree::

    torchrun --standalone --nproc-per-node 4 -m facelm train-began \
        --params params.yaml --images faces.npy --out data/began [--steps 200000 ...]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from facelm.config import BEGANParams, load_params, replace
from facelm.training.began import train_began

__all__ = ["add_parser", "cli_settings", "run_cli"]


def _on_off(s: str) -> bool:
    s = s.lower()
    if s in ("1", "true", "on", "yes"):
        return True
    if s in ("0", "false", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {s!r}")


def _yaml_scalar(s: str) -> Any:
    return yaml.safe_load(s)


def _override_fields() -> dict[str, Any]:
    """``BEGANParams`` field name -> its default value (for the flag's type only)."""
    return dict(vars(BEGANParams()))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``facelm train-began`` (``func=run_cli``) to an argparse subparsers object.

    It reads the ``began`` section, ``seed`` and ``threads`` of ``--params``; every
    ``began`` field has a flag (``--steps``, ``--lambda-k``, ...) that overrides it.
    """
    p = subparsers.add_parser(
        "train-began", help="train BEGAN on a uint8 [N, S, S, 3] .npy (torchrun for DDP)",
        description="Train BEGAN with the began section of a params file. Under "
                    "`torchrun --nproc-per-node N -m facelm train-began ...` every process "
                    "joins one DistributedDataParallel run.")
    p.add_argument("--params", default="params.yaml", help="parameters file (relative to the project root)")
    p.add_argument("--images", required=True, help=".npy of uint8 [N, S, S, 3] (memory-mapped)")
    p.add_argument("--out", required=True, help="output folder (weights, checkpoint/)")
    p.add_argument("--seed", type=int, default=None, help="override the params file's seed")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the params file's threads; 0 leaves torch's)")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("overrides of the params file's began section")
    for name, default in _override_fields().items():
        # an optional key (default None) takes a YAML scalar, as in params.yaml ("null" too);
        # the config then checks it like any other value
        kind = (_on_off if isinstance(default, bool) else _yaml_scalar if default is None
                else type(default))
        g.add_argument("--" + name.replace("_", "-"), dest=f"began_{name}", type=kind,
                       default=argparse.SUPPRESS, metavar=name.upper(), help=f"began.{name}")
    p.set_defaults(func=run_cli)
    return p


def cli_settings(args: argparse.Namespace) -> tuple[BEGANParams, int, int]:
    """``(began section with the flags' overrides, seed, threads)`` from parsed arguments."""
    params = load_params(args.params)
    given = vars(args)  # a flag not given is absent (SUPPRESS): "null" is a value like any other
    overrides = {name: given[f"began_{name}"] for name in _override_fields() if f"began_{name}" in given}
    cfg = replace(params.began, **overrides)
    seed = params.seed if args.seed is None else args.seed
    threads = params.threads if args.threads is None else args.threads
    return cfg, seed, threads


def run_cli(args: argparse.Namespace) -> int:
    """Run ``facelm train-began``; prints one JSON line per rank (a launcher can check
    that the replicas agree) and returns 0."""
    cfg, seed, threads = cli_settings(args)
    path = Path(args.images)
    if not path.is_file():
        raise FileNotFoundError(f"--images: no such file: {path}")
    if threads:
        torch.set_num_threads(threads)
    images = np.load(path, mmap_mode="r")
    from facelm.evaluation.quality import dlib_scorer

    scorer = dlib_scorer(load_params(args.params).evaluation, cfg, seed)
    res = train_began(images, cfg, args.out, seed=seed, device=args.device,
                      progress=not args.no_progress, scorer=scorer)
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)),
                      "world_size": int(os.environ.get("WORLD_SIZE", 1)),
                      "steps": res.steps, "best_step": res.best_step,
                      "resumed_from": res.resumed_from, "M_final": res.M_final,
                      "images_per_s": res.images_per_s,
                      "weights_digest": res.weights_digest}), flush=True)
    return 0

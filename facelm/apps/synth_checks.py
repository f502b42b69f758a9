"""The checks of ``facelm synth`` that run before any work: arguments, device, and the two
models (the generator and a label generator of either kind) and whether they belong together."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facelm.apps.synth_shards import FORMATS

if TYPE_CHECKING:  # torch loads lazily: `facelm --help` should not wait for it
    import torch

__all__ = ["resolve_device", "load_models", "check_kind", "check_args"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA when available else CPU; refuses a CUDA device that is absent."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) here")
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return dev


def load_models(generator: Path, lgen: Path, device: torch.device):
    """Load the generator and the label generator (either kind), turning any failure into one
    ValueError naming the file; a label generator on G's features must read this very G."""
    from facelm.models.began import load_generator
    from facelm.models.lgen import load_label_generator

    for name, path in (("generator", generator), ("lgen", lgen)):
        if not path.is_file():
            raise FileNotFoundError(f"{name} model not found: {path}")
    models = []
    for name, path, load in (("generator", generator, load_generator),
                             ("lgen", lgen, load_label_generator)):
        try:
            models.append(load(path, device))
        except Exception as err:  # a safetensors/JSON/shape error: not a facelm model
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path} is not a facelm {name} model ({detail})") from None
    G, L = models
    if G.z_dim != L.z_dim:
        raise ValueError(f"the generator takes z of {G.z_dim} dims but the L-Gen takes "
                         f"{L.z_dim}: they were not trained together")
    if L.kind == "features" and not L.matches(G):
        from facelm.models.feature_lgen import generator_digest

        raise ValueError(f"{lgen} reads another generator than {generator} (generator digest "
                         f"{L.generator_digest[:12]} stored there, {generator_digest(G)[:12]} given)")
    return G, L


def check_kind(L, lgen: Path, keep_frac: float | None, bf16: bool) -> None:
    """Refuse options the label generator's kind cannot serve (before any work)."""
    if L.kind != "features" and keep_frac is not None:
        raise ValueError(f"--keep-frac (keep_frac) needs a label generator on G's features "
                         f"(lgen.kind: features), but {lgen} is an L-Gen on z, which has no "
                         f"uncertainty")
    if L.kind == "features" and bf16:
        raise ValueError(f"--bf16 (bf16) is for an L-Gen on z: {lgen} reads G's feature maps, "
                         f"whose precision bf16 would cut")


def check_args(*, n, seed, truncation, batch_size, shard_size, fmt, workers, keep_frac,
               calibration) -> None:
    """Raise ValueError naming the first argument of :func:`facelm.apps.synth_run.synth` out of range."""
    def integer(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    for name, value in (("n", n), ("batch_size", batch_size), ("shard_size", shard_size),
                        ("workers", workers), ("calibration", calibration)):
        if not integer(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) \
            or not 0 < truncation <= 1:
        raise ValueError(f"truncation must be in (0, 1], got {truncation!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if keep_frac is not None and (isinstance(keep_frac, bool) or not isinstance(
            keep_frac, (int, float)) or not 0 < keep_frac <= 1):
        raise ValueError(f"keep_frac must be in (0, 1], got {keep_frac!r}")

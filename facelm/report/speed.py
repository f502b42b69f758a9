"""The machine-speed reference: how fast this machine runs a plain BEGAN step.

:func:`reference_speed` is the images/s of a plain eager fp32 BEGAN step (32 px, width 16,
batch 16, on the CPU, in the current torch thread setting; see :func:`eager_began_rate`),
measured for about 2 s after a warm-up and cached per machine (CPU model, cores, threads,
torch version) in ``$XDG_CACHE_HOME/facelm/speed.json`` (``~/.cache/facelm/speed.json``; the
environment variable ``FACELM_SPEED_CACHE`` names another file). ``benchmarks/run.py`` prints
the same number first, as its machine-speed row, and ``facelm.report.timing`` plans stages in
**reference units** (ru): the time this machine takes for 1,000 reference steps, i.e.
``REFERENCE_IMAGES / reference`` seconds (16,000 images; 74 s at 215 img/s).

The reference is noisy (a 2 s measurement, on hosts whose speed drifts): on the development
machines it read 202-284 img/s on 2026-12-01/02, 126-139 on 2026-12-03 and 150-190 on 2026-12-07.
Measure it with ``reference_speed(refresh=True)`` on a quiet machine.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from facelm.config import BEGANParams

__all__ = ["REFERENCE_IMAGES", "REFERENCE_CONFIG", "CACHE_ENV", "machine", "machine_key",
           "cache_path", "eager_began_rate", "reference_speed"]

REFERENCE_IMAGES = 16_000  # one reference unit: 1,000 reference steps of batch 16
REFERENCE_CONFIG = {"size": 32, "width": 16, "batch": 16}
CACHE_ENV = "FACELM_SPEED_CACHE"


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

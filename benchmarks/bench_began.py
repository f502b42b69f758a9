"""BEGAN training throughput: facelm's trainer against a plain reference step, same run.

    python benchmarks/bench_began.py --threads 1   # CPU: default (32 px, w16), paper (128 px, w64)
    python benchmarks/bench_began.py --device cuda # GPU: 128 px, w64; fp32 / bf16+CL / +compile

The reference is the straightforward loop one would write first
(facelm.report.speed.eager_began_rate): fp32, eager, NCHW, separate forward passes D(x),
D(G(z).detach()) and D(G(z)), two backward passes (the second also computes D gradients it
throws away), k_t read back to the host every step. At 32 px, width 16 it is the project's
machine-speed reference.
facelm is `train_began` itself (batch sampling and stats included) timed from its "step"
callbacks after a warm-up, with config.py's defaults (the mode regulariser on) unless a row
says otherwise. Numbers are training images per second (batch 16, one process).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facelm.config import AUTHORS_KEEPING, BEGANParams, replace  # noqa: E402
from facelm.report.speed import eager_began_rate  # noqa: E402
from facelm.training.began import train_began  # noqa: E402

# config.py's defaults (lr, betas, gamma, lambda_k of both loops), G kept by M: the default's
# dlib judging runs twice per 7,000 steps, not in the steps timed here
CFG = replace(BEGANParams(), **AUTHORS_KEEPING)


def reference_images_per_s(images, size, width, batch, device, warmup, steps) -> float:
    """Plain fp32 eager BEGAN step (:func:`facelm.report.speed.eager_began_rate`, the
    machine-speed reference at 32 px, width 16), images/s after ``warmup`` steps. It draws
    from random images of its own; ``images`` is accepted for symmetry with facelm's side."""
    return eager_began_rate(size=size, width=width, batch=batch, steps=steps, warmup=warmup,
                            device=device)


def facelm_images_per_s(images, size, width, batch, device, warmup, steps, **opts) -> float:
    """`train_began` images/s between its "step" callbacks at warmup and warmup + steps
    (``size`` is that of ``images``)."""
    stamps: dict[int, float] = {}
    sync = warmup if device.type == "cuda" else 1  # flush points land on both ends
    assert device.type != "cuda" or steps % sync == 0

    def cb(event, state):
        if event == "step":
            stamps[state["step"]] = time.perf_counter()

    n = warmup + steps  # no checkpoint or sample before the end
    cfg = replace(CFG, width=width, z_dim=64, steps=n, batch_size=batch, best_window=n,
                  checkpoint_every=n, sample_every=n, **opts)
    with tempfile.TemporaryDirectory() as d:
        train_began(images, cfg, d, seed=0, device=device, sync_every=sync, progress=False,
                    callbacks=[cb])
    return steps * batch / (stamps[warmup + steps] - stamps[warmup])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--steps", type=int, default=0, help="timed steps (0: per-config default)")
    p.add_argument("--configs", default="default,paper", help="CPU: any of default,paper")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f", {torch.get_num_threads()} threads"))
    print("| config | variant | images/s | ratio vs reference |")
    print("|---|---|---:|---:|")

    def row(config, name, ips, ref):
        print(f"| {config} | {name} | {ips:.3g} | {ips / ref:.2f}x |", flush=True)

    rng = np.random.default_rng(0)
    if device.type == "cpu":
        configs = {"default": (32, 16, 3, a.steps or 20), "paper": (128, 64, 1, a.steps or 2)}
        for name in a.configs.split(","):
            size, width, warmup, steps = configs[name]
            label = f"{name} ({size} px, w{width}, b16)"
            images = rng.integers(0, 256, (256, size, size, 3), dtype=np.uint8)
            ref = reference_images_per_s(images, size, width, 16, device, warmup, steps)
            row(label, "reference fp32 eager, 2 backward", ref, ref)
            for update in (("joint", "alternate") if name == "default" else ("joint",)):
                ips = facelm_images_per_s(images, size, width, 16, device, warmup, steps,
                                          update=update)
                row(label, f"facelm {update}", ips, ref)
            # not the default on CPU: faster where the CPU has bf16 units, but on an AMX Xeon
            # its G lost dlib's faces (docs/experiments.md, "bf16 autocast on a CPU")
            ips = facelm_images_per_s(images, size, width, 16, device, warmup, steps, bf16=True)
            row(label, "facelm joint, bf16 autocast", ips, ref)
            if name == "default":
                # began.recon_batch: the regulariser on the batch's first n faces only
                for n in (8, 4):
                    ips = facelm_images_per_s(images, size, width, 16, device, warmup, steps,
                                              recon_batch=n)
                    row(label, f"facelm joint, mode regulariser on {n} of 16 faces", ips, ref)
                ips = facelm_images_per_s(images, size, width, 16, device, warmup, steps,
                                          recon_weight=0.0)
                row(label, "facelm joint, no mode regulariser", ips, ref)
    else:
        size, width, warmup, steps = 128, 64, 50, a.steps or 300
        label = f"paper ({size} px, w{width}, b16)"
        images = rng.integers(0, 256, (2048, size, size, 3), dtype=np.uint8)
        ref = reference_images_per_s(images, size, width, 16, device, warmup, steps)
        row(label, "reference fp32 eager, 2 backward", ref, ref)
        for name, opts in [("facelm fp32", dict(channels_last=False, bf16=False)),
                           ("facelm bf16 + channels_last", dict(channels_last=True, bf16=True)),
                           ("facelm bf16 + channels_last + compile",
                            dict(channels_last=True, bf16=True, compile=True))]:
            ips = facelm_images_per_s(images, size, width, 16, device, warmup, steps, **opts)
            row(label, name, ips, ref)


if __name__ == "__main__":
    main()

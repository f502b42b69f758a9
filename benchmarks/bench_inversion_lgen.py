"""Throughput of facelm.inversion.invert and facelm.training.lgen.train_lgen against plain baselines.

    python benchmarks/bench_inversion_lgen.py [--device cpu|cuda] [--threads 1]

(a) batched inversion vs the authors' loop, one image at a time (a fresh torch Adam on one
    z per image, as PointGen1.py does), at equal steps (restarts and early stop off) and
    equal final error: both start from the same z and take the same Adam steps, so their
    final L1 agree up to float rounding; both are printed. Rates are latent·steps/s.
    G: BEGAN generator size 32 width 16, random weights; the targets are G's own faces.
(b) train_lgen vs a plain DataLoader(TensorDataset) loop, batch 16, same MLP (samples/s);
(c) the paper's L-Gen schedule (1000 epochs, batch 16, 202,599 pairs) projected to wall
    time from (b).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from common import set_threads, sync
from facelm.config import InversionParams, LGenParams, replace
from facelm.inversion import invert, start_z
from facelm.models.began import Generator
from facelm.models.lgen import LGen
from facelm.tensors import pick_device, to_tensor, to_uint8
from facelm.training.lgen import train_lgen

SEED = 0


def inversion_problem(dev: torch.device, n: int, size: int = 32, width: int = 16):
    """A random-weight G (eval mode) and ``n`` faces it can make exactly."""
    G = Generator(size=size, width=width, z_dim=64, seed=1).to(dev).eval()
    with torch.no_grad():
        z = torch.rand(n, 64, generator=torch.Generator().manual_seed(1)).mul(2).sub(1)
        images = to_uint8(G(z.to(dev)))
    return G, images


def fixed_steps(steps: int, batch_size: int) -> "InversionParams":
    """Every image takes all ``steps`` updates: no restarts, patience beyond the budget."""
    return replace(InversionParams(), steps=steps, restart_threshold=None, patience=steps + 1,
                   batch_size=batch_size, init="random",  # the authors' start, as the loop's
                   landmark_weight=0.0)  # and their pixel loss


def batched(G, images, steps: int, dev) -> tuple[float, np.ndarray]:
    """facelm's ``invert`` on all images in one batch: (seconds, per-image final L1)."""
    sync(dev)
    t0 = time.perf_counter()
    res = invert(G, images, fixed_steps(steps, len(images)), seed=SEED, progress=False, device=dev)
    sync(dev)
    return time.perf_counter() - t0, res.l1


def authors_loop(G, images, steps: int, dev) -> tuple[float, np.ndarray]:
    """One image at a time, as the authors' code: a z of its own, torch's Adam on it, the
    L1 loss, z clamped to [-1, 1] after each step; the best z kept (as ``invert`` does).
    Same start points as ``invert``. Returns (seconds, per-image final L1, images in [0, 1])."""
    cfg = InversionParams()
    l1 = np.zeros(len(images), np.float32)
    sync(dev)
    t0 = time.perf_counter()
    for i in range(len(images)):
        x = to_tensor(images[i:i + 1], dev)
        z = torch.from_numpy(start_z(SEED, np.array([i]), 0, 64)).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        best_loss, best_l1 = math.inf, math.nan
        for it in range(steps + 1):  # the last pass only evaluates the last update
            x_hat = G(z)
            loss = (x_hat - x).abs().mean()
            if loss.item() < best_loss:
                best_loss = loss.item()
                best_l1 = float((x_hat.detach().clamp(-1, 1) - x).abs().mean() / 2)
            if it == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(-1.0, 1.0)
        l1[i] = best_l1
    sync(dev)
    return time.perf_counter() - t0, l1


def bench_inversion(dev: torch.device, n: int, n_loop: int, steps: int, size: int = 32,
                    width: int = 16) -> dict:
    """Latent·steps/s of both and their mean final L1 on the loop's images."""
    G, images = inversion_problem(dev, n, size, width)
    invert(G, images[:2], fixed_steps(2, 2), seed=SEED, progress=False, device=dev)  # warm-up
    t_b, l1_b = batched(G, images, steps, dev)
    t_l, l1_l = authors_loop(G, images[:n_loop], steps, dev)
    return {"batched": n * steps / t_b, "loop": n_loop * steps / t_l,
            "l1_batched": float(l1_b[:n_loop].mean()), "l1_loop": float(l1_l.mean()),
            "n": n, "n_loop": n_loop, "steps": steps}


def _dataloader_epoch(model, opt, loader, dev) -> int:
    steps = 0
    for zb, yb in loader:
        zb, yb = zb.to(dev), yb.to(dev)
        loss = F.mse_loss(model(zb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return steps


def bench_lgen(dev: torch.device, n: int, epochs: int, fused_too: bool = False) -> dict:
    """Samples/s of ``train_lgen`` and of DataLoader loops (default Adam; fused Adam too),
    batch 16, ``epochs`` timed epochs after one warm-up epoch."""
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (n, 64)).astype(np.float32)
    y = rng.uniform(0, 1, (n, 49, 2)).astype(np.float32)
    cfg = replace(LGenParams(), epochs=epochs + 1, batch_size=16)

    stamps: list[float] = []
    train_lgen(z, y, cfg, None, seed=0, device=dev, progress=False,
               callbacks=[lambda ev, st: stamps.append(time.perf_counter())])
    rates = {"train_lgen": n * epochs / (stamps[epochs] - stamps[0])}  # epoch 1: warm-up

    variants = [("DataLoader + Adam", None)] + ([("DataLoader + fused Adam", True)] if fused_too else [])
    for name, fused in variants:
        model = LGen().to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                               fused=fused)
        loader = DataLoader(TensorDataset(torch.from_numpy(z), torch.from_numpy(y)),
                            batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
        _dataloader_epoch(model, opt, loader, dev)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(epochs):
            _dataloader_epoch(model, opt, loader, dev)
        sync(dev)
        rates[name] = n * epochs / (time.perf_counter() - t0)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--n-images", type=int, default=256, help="images in the batched inversion")
    ap.add_argument("--n-loop", type=int, default=32, help="images in the one-at-a-time loop")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n-pairs", type=int, default=16_000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    dev = pick_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    r = bench_inversion(dev, args.n_images, args.n_loop, args.steps, args.size, args.width)
    print(f"(a) inversion, G size {args.size} width {args.width}, {args.steps} steps per image:")
    print(f"    batched ({r['n']} per batch): {r['batched']:10.0f} latent·steps/s   "
          f"final L1 {r['l1_batched']:.4f} (on the loop's {r['n_loop']} images)")
    print(f"    authors' loop, one image:   {r['loop']:10.0f} latent·steps/s   "
          f"final L1 {r['l1_loop']:.4f}")
    print(f"    ratio batched / loop: {r['batched'] / r['loop']:.1f}x")
    rates = bench_lgen(dev, args.n_pairs, args.epochs, fused_too=True)
    ours = rates.pop("train_lgen")
    print(f"(b) L-Gen training, batch 16, {args.n_pairs} pairs, {args.epochs} timed epochs:")
    print(f"    train_lgen:                  {ours:9.0f} samples/s")
    for name, sps in rates.items():
        print(f"    {name:28s} {sps:9.0f} samples/s   (train_lgen is {ours / sps:.2f}x)")
    steps = math.ceil(202_599 / 16) * 1000
    print(f"(c) paper L-Gen schedule: 1000 epochs x {math.ceil(202_599 / 16)} steps = "
          f"{steps:,} steps -> {steps * 16 / ours / 3600:.1f} h at {ours:.0f} samples/s on {dev}")


if __name__ == "__main__":
    main()

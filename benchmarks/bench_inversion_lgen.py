"""Throughput of facelm.inversion.invert and facelm.models.lgen.train_lgen against plain baselines.

    python benchmarks/bench_inversion_lgen.py [--device cpu|cuda] [--threads 1]

(a) batched inversion vs a loop inverting one image at a time, the same number of Adam
    steps for every image (restarts and early stop off), BEGAN generator size 32 width 16;
(b) train_lgen's steps/s vs a plain DataLoader(TensorDataset) loop, batch 16, same MLP;
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

from facelm.inversion import invert
from facelm.models.lgen import LGen, train_lgen
from facelm.tensors import pick_device, to_uint8

try:
    from facelm.models.began import Generator
except ImportError:  # the same architecture, for when began.py is absent
    class Generator(torch.nn.Module):
        def __init__(self, size: int = 32, width: int = 16, z_dim: int = 64, seed: int = 0):
            super().__init__()
            torch.manual_seed(seed)
            self.width, self.z_dim = width, z_dim
            self.fc = torch.nn.Linear(z_dim, 8 * 8 * width)
            conv = lambda: torch.nn.Conv2d(width, width, 3, padding=1)  # noqa: E731
            layers = []
            for _ in range(int(math.log2(size // 8))):
                layers += [conv(), torch.nn.ELU(), conv(), torch.nn.ELU(),
                           torch.nn.Upsample(scale_factor=2)]
            layers += [conv(), torch.nn.ELU(), conv(), torch.nn.ELU(),
                       torch.nn.Conv2d(width, 3, 3, padding=1)]
            self.body = torch.nn.Sequential(*layers)

        def forward(self, z):
            return self.body(self.fc(z).view(-1, self.width, 8, 8))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_inversion(dev: torch.device, n: int, steps: int, size: int, width: int) -> None:
    G = Generator(size=size, width=width).to(dev).eval()
    with torch.no_grad():
        z = torch.rand(n, 64, generator=torch.Generator().manual_seed(1)).mul(2).sub(1)
        images = to_uint8(G(z.to(dev)))
    kw = dict(steps=steps, restart_threshold=None, patience=None, progress=False, device=dev)
    invert(G, images[:2], **kw)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    invert(G, images, batch_size=n, **kw)
    _sync(dev)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        invert(G, images[i:i + 1], first_index=i, batch_size=1, **kw)
    _sync(dev)
    t_loop = time.perf_counter() - t0
    print(f"(a) inversion, BEGAN G size {size} width {width}, {n} images x {steps} steps:")
    print(f"    batched ({n}/batch): {n / t_batched:9.2f} images/s   ({t_batched:.2f} s)")
    print(f"    one image at a time: {n / t_loop:9.2f} images/s   ({t_loop:.2f} s)")
    print(f"    ratio batched / loop: {t_loop / t_batched:.1f}x")


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


def bench_lgen(dev: torch.device, n: int, epochs: int) -> float:
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (n, 64)).astype(np.float32)
    y = rng.uniform(0, 1, (n, 49, 2)).astype(np.float32)
    steps_per_epoch = math.ceil(n / 16)

    stamps = []
    train_lgen(z, y, epochs=epochs + 1, batch_size=16, device=dev, progress=False,
               callbacks=[lambda ev, st: stamps.append(time.perf_counter())])
    ours = steps_per_epoch * epochs / (stamps[epochs] - stamps[0])  # first epoch = warm-up

    results = {}
    for name, fused in [("DataLoader + Adam (default)", None), ("DataLoader + fused Adam", True)]:
        model = LGen().to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=fused)
        loader = DataLoader(TensorDataset(torch.from_numpy(z), torch.from_numpy(y)),
                            batch_size=16, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        _dataloader_epoch(model, opt, loader, dev)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        steps = sum(_dataloader_epoch(model, opt, loader, dev) for _ in range(epochs))
        _sync(dev)
        results[name] = steps / (time.perf_counter() - t0)

    print(f"(b) L-Gen training, batch 16, {n} pairs, {epochs} timed epochs:")
    print(f"    train_lgen:                  {ours:8.0f} steps/s")
    for name, sps in results.items():
        print(f"    {name:28s} {sps:8.0f} steps/s   (train_lgen is {ours / sps:.2f}x)")
    return ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--n-pairs", type=int, default=16_000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_inversion(dev, args.n_images, args.steps, args.size, args.width)
    sps = bench_lgen(dev, args.n_pairs, args.epochs)
    steps = math.ceil(202_599 / 16) * 1000
    print(f"(c) paper L-Gen schedule: 1000 epochs x {math.ceil(202_599 / 16)} steps = "
          f"{steps:,} steps -> {steps / sps / 3600:.1f} h at {sps:.0f} steps/s on {dev}")


if __name__ == "__main__":
    main()

"""Face-crop throughput: images/s with one worker against all cores, on a made-up CelebA tree.

    python benchmarks/bench_preprocess.py [--n 300] [--width 500] [--height 400] [--size 128]

Builds a fake in-the-wild tree (rendered faces pasted into cluttered backgrounds of about
width x height pixels), then runs ``preprocess_celeba`` with ``n_workers=1`` (the baseline,
in-process) and ``n_workers=0`` (all cores), and prints images/s and the ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from facelm.config import CelebAParams, replace
from facelm.data.celeba_crops import preprocess_celeba
from facelm.data.fakeceleba import make_fake_celeba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--scale-factor", type=float, default=1.1)
    ap.add_argument("--min-neighbors", type=int, default=5)
    ap.add_argument("--min-size", type=int, default=30)
    ap.add_argument("--shard-size", type=int, default=100)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "celeba"
        t = time.perf_counter()
        # detect=None: the tree is for timing, not for a known outcome (building it stays fast)
        lo, hi = sorted((args.width, args.height))
        make_fake_celeba(root, n=args.n, layout="wild", seed=0, corrupt=0, no_face=0, detect=None,
                         wild_size=(lo, hi), scale_range=(1.2, 2.2))
        print(f"tree: {args.n} images of {lo}..{hi} px per side, built in {time.perf_counter() - t:.1f} s")
        cfg = replace(CelebAParams(), layout="wild", scale_factor=args.scale_factor, min_neighbors=args.min_neighbors,
                      min_size=args.min_size, shard_size=args.shard_size)
        rates = {}
        for workers in (1, 0):
            t = time.perf_counter()
            res = preprocess_celeba(root, Path(tmp) / f"out{workers}", replace(cfg, n_workers=workers), args.size,
                                    progress=False)
            seconds = time.perf_counter() - t
            rates[workers] = args.n / seconds
            label = "1 worker" if workers == 1 else f"all cores ({os.cpu_count()} workers)"
            print(f"{label:>24}: {rates[workers]:7.1f} images/s ({seconds:.2f} s, kept {len(res)}, "
                  f"skipped {sum(res.skipped.values())})")
        print(f"speed-up all cores / 1 worker: {rates[0] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()

"""torch.compile on CPU: the BEGAN trainer with channels_last, with and without compile.

    python benchmarks/bench_began_compile.py [--steps 400] [--repeats 2]

`benchmarks/run.py --quick` times 60 steps, too few for compile's steady state; this times
longer windows, interleaved with the eager machine-speed reference (images/s, best repeat).
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from bench_began import facelm_images_per_s
from common import best_rates
from facelm.report.speed import eager_began_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    dev = torch.device("cpu")
    images = np.random.default_rng(0).integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    ref, cl, cl_compile = best_rates(
        a.repeats,
        lambda: eager_began_rate(size=32, width=16, batch=16, steps=a.steps, warmup=10),
        lambda: facelm_images_per_s(images, 32, 16, 16, dev, 10, a.steps, channels_last=True, compile=False),
        lambda: facelm_images_per_s(images, 32, 16, 16, dev, 40, a.steps, channels_last=True, compile=True))
    print(f"eager reference {ref:.0f} images/s; channels_last {cl:.0f} ({cl / ref:.2f}x); "
          f"channels_last + compile {cl_compile:.0f} ({cl_compile / ref:.2f}x); {a.steps} timed steps")


if __name__ == "__main__":
    main()

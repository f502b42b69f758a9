"""dlib annotator throughput: faces/s on 128 px crops, one worker against all cores.

Three workloads on rendered world faces: HOG detection + 68-point prediction (``"detect"``),
prediction in boxes from known landmarks, and 32 px crops upscaled to 128 first (the default
world's size). Each is timed with ``n_workers=1`` (in-process) and with all cores (a process
pool, its start-up included, as a caller pays it), interleaved within each repeat so load
from other processes hits both alike; the ratio column compares them in the same run.

    python benchmarks/bench_dlib.py [--n 600] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from facelm.data.world import render_faces  # noqa: E402
from facelm.models import dlib_landmarks as dl  # noqa: E402

SIZE = 128


def timed_rate(images: np.ndarray, boxes, workers: int, repeats_log: list[float]) -> float:
    """Faces/s of one annotate call, also appended to ``repeats_log`` (the caller takes the best)."""
    t0 = time.perf_counter()
    dl.annotate(images, boxes, size=SIZE, n_workers=workers, progress=False)
    rate = len(images) / (time.perf_counter() - t0)
    repeats_log.append(rate)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=600, help="faces per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cores = dl.available_cores()
    dl.load_predictor()  # loaded once, outside the timings (the pool's forks inherit it)
    faces128, truth128 = render_faces(args.n, SIZE, seed=0)
    faces32, _ = render_faces(args.n, 32, seed=0)
    work = {"detect + predict, 128 px": (faces128, "detect"),
            "predict in landmark boxes, 128 px": (faces128, truth128),
            "detect + predict, 32 -> 128 px": (faces32, "detect")}
    print(f"{args.n} faces per call, best of {args.repeats}; all cores = {cores} processes")
    print(f"{'workload':<36} {'1 worker f/s':>12} {'all cores f/s':>13} {'ratio':>6}")
    for name, (images, boxes) in work.items():
        dl.annotate(images[:8], boxes if isinstance(boxes, str) else boxes[:8], size=SIZE,
                    n_workers=1, progress=False)  # warm-up
        one: list[float] = []
        many: list[float] = []
        for _ in range(args.repeats):
            timed_rate(images, boxes, 1, one)
            timed_rate(images, boxes, cores, many)
        print(f"{name:<36} {max(one):>12.0f} {max(many):>13.0f} {max(many) / max(one):>5.2f}x")


if __name__ == "__main__":
    main()

"""Stage 07's augmentation study scored on VALIDATION faces, to choose its settings honestly.

Stage 07 scores every detector on the held-out faces, which must not steer a choice. This runs
the same study (`facelm.evaluation.augmentation.study`, params.yaml's settings with ``-S``
overrides) on the project's G, inversions and stage-04 label generators, but scores the
detectors on 500 fresh world faces from index 2,000,000 on (`validation_probe.py`'s), and
prints the summary table and one JSON line of the mean change per (setting, K, condition).

    python tools/augmentation_probe.py [-S augmentation.real_fraction=0.5 ...]

Run it in a project where stages 00-04 have run.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validation_probe import N, VALIDATION_START, with_overrides  # noqa: E402

from facelm.config import parse_params  # noqa: E402
from facelm.data.world import render_faces  # noqa: E402
from facelm.evaluation import augmentation, augmentation_summary  # noqa: E402
from facelm.models.began import load_generator  # noqa: E402
from facelm.params_file import read_params_file  # noqa: E402
from facelm.paths import project_root  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-S", "--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    root = project_root()
    params = parse_params(with_overrides(read_params_file(root / "params.yaml"), args.sets))
    val, val_truth = render_faces(N, params.image_size, params.seed, VALIDATION_START,
                                  world=params.world)
    G = load_generator(root / "data" / "began" / "generator.safetensors", device="cpu")
    real, stage04 = augmentation.load_study_inputs(root)
    t0 = time.perf_counter()
    rows = augmentation.study(real, np.asarray(val), np.asarray(val_truth, np.float32), G,
                              stage04, params)
    table = augmentation_summary.summarise(rows)
    print(augmentation_summary.summary_text(table))
    changes = {f"{e['setting']}/{e['k']}/{e['condition']}": round(float(e["change"]), 4)
               for e in table if e["condition"] != "real"}
    print(" ".join(args.sets) or "(params.yaml)", json.dumps(
        {"seconds": round(time.perf_counter() - t0), "mean_change": round(float(np.mean(list(changes.values()))), 4),
         **changes}))

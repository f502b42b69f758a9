"""L-Gen settings measured on TRAINING pairs, for choosing them honestly.

Fits L-Gen on the inversions of training faces 0-4999 and reports its NME on training faces
5000-5999 after 10, 25, 50 and 100 epochs, for each setting given as key=value overrides of
the lgen section (the held-out faces that stage 04 reports are never read):

    python tools/lgen_probe.py "" "z_noise=0.15" "z_noise=0.15 weight_decay=0.3"

Run it in a project where stages 01-03 have run (it reads params.yaml, data/faces and
data/latents/z_train.npy). It uses facelm's own trainer, so what it measures is what stage 04 trains.
"""
import sys
import time

import numpy as np
import torch

from facelm.config import load_params, replace
from facelm.data.faceset import load_split
from facelm.landmarks import nme
from facelm.paths import project_root
from facelm.training.lgen import train_lgen

REPORT = (10, 25, 50, 100)

if __name__ == "__main__":
    root = project_root()
    params = load_params(root / "params.yaml")
    z = np.load(root / "data" / "latents" / "z_train.npy")
    landmarks = np.asarray(load_split(root / "data" / "faces", "train").landmarks[:len(z)])
    for spec in sys.argv[1:] or [""]:
        changes = dict(kv.split("=", 1) for kv in spec.split())
        cfg = replace(params.lgen, epochs=max(REPORT),
                      **{k: type(getattr(params.lgen, k))(v) for k, v in changes.items()})
        errors: dict[int, float] = {}

        def at_epoch(event: str, state: dict) -> None:
            if event == "epoch" and state["epoch"] in REPORT:
                model = state["model"]
                model.eval()
                with torch.no_grad():
                    pred = model(torch.from_numpy(z[5000:6000])).numpy()
                model.train()
                errors[state["epoch"]] = round(float(nme(pred, landmarks[5000:6000]).mean()), 4)

        t0 = time.perf_counter()
        train_lgen(z[:5000], landmarks[:5000], cfg, None, seed=params.seed, callbacks=[at_epoch],
                   progress=False)
        print(f"{spec or '(params.yaml)':40s} NME at epochs {errors}  {time.perf_counter() - t0:.0f} s",
              flush=True)

"""Inversion settings measured on TRAINING faces, for choosing them honestly.

The encoder learns from training faces 0-4999; faces 5000-5499 are inverted. For each number
of encoder steps and each cap on Adam steps it prints the mean L1 of G(z_r) and the judge's
NME on G(z_r) against the truth of x (the error budget's row (b), on training faces), with
the seconds each part took:

    python tools/inversion_probe.py data/began/generator.safetensors 200,1000 20,40,60 [lr_schedule=cosine ...]

Run it in a project where stages 00-02 have run (it reads params.yaml, data/detector and
data/faces); key=value pairs override the inversion section.
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facelm.config import load_params, replace
from facelm.data.faceset import load_split
from facelm.inversion import build_encoder, invert
from facelm.landmarks import nme
from facelm.models.began import load_generator
from facelm.models.detector import load_detector, predict_landmarks
from facelm.paths import project_root
from facelm.tensors import to_uint8

if __name__ == "__main__":
    root = project_root()
    params = load_params(root / "params.yaml")
    G = load_generator(sys.argv[1], device="cpu")
    encoder_steps = [int(a) for a in sys.argv[2].split(",")]
    adam_steps = [int(a) for a in sys.argv[3].split(",")]
    overrides = dict(a.split("=", 1) for a in sys.argv[4:])
    base = params.inversion
    overrides = {k: type(getattr(base, k))(v) for k, v in overrides.items()}
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    train = load_split(root / "data" / "faces", "train")
    fit_faces = np.asarray(train.images[:5000])
    faces, truth = np.asarray(train.images[5000:5500]), np.asarray(train.landmarks[5000:5500])
    print(f"judge on these data faces: {nme(predict_landmarks(judge, faces), truth).mean():.4f}")
    for es in encoder_steps:
        cfg = replace(base, encoder_steps=es, **overrides)
        t0 = time.perf_counter()
        E = build_encoder(G, cfg, seed=params.seed, images=fit_faces, began_dir=Path(sys.argv[1]).parent)
        t_enc = time.perf_counter() - t0
        for steps in adam_steps:
            t0 = time.perf_counter()
            r = invert(G, faces, replace(cfg, steps=steps), seed=params.seed, encoder=E, judge=judge,
                       progress=False)
            t_inv = time.perf_counter() - t0
            with torch.no_grad():
                geometry = nme(predict_landmarks(judge, to_uint8(G(torch.from_numpy(r.z)))), truth).mean()
            print(f"encoder {es:5d} ({t_enc:5.1f} s)  Adam {steps:4d} ({t_inv:5.1f} s)  "
                  f"L1 {r.l1.mean():.4f}  judge on G(z_r) vs truth {geometry:.4f}  {overrides}", flush=True)

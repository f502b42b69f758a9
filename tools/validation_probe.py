"""Generator candidates on VALIDATION faces: fresh world faces that neither G nor the metrics saw.

Stage 02/03's metrics use the held-out faces, which must not steer tuning; training faces
flatter a G that was trained to reconstruct them (``began.recon_weight``). The rendered world
can draw as many new faces as needed, so this renders 500 faces from index 2,000,000 on
(stage 01 uses 0.., stage 00's detector 1,000,000..) and, for each generator file, prints:

- G(z) against them: k-NN precision / recall and FD in the judge's features, dlib's found rate;
- the inversion (params.yaml's settings; encoder trained on training faces 0-4999) of these
  faces and of training faces 5000-5499: mean L1, and dlib's NME of G(z_r) against the truth
  (the outside check of the geometry kept) with its found rate.

    python tools/validation_probe.py data/began/generator.safetensors [more.safetensors ...]

Run it in a project where stages 00 and 01 have run.
"""
import json
import sys
import time

import numpy as np
import torch

from facelm.config import load_params
from facelm.data.faceset import load_split
from facelm.data.world import render_faces
from facelm.evaluation.quality import generator_quality
from facelm.inversion import invert, train_encoder
from facelm.landmarks import nme
from facelm.models.began import load_generator
from facelm.models.detector import load_detector
from facelm.models.dlib_landmarks import annotate, face_found_rate
from facelm.paths import project_root
from facelm.tensors import sample_z, to_uint8

VALIDATION_START = 2_000_000
N = 500


def inversion_row(G, faces, truth, params, E, judge, size: int) -> dict:
    r = invert(G, faces, params.inversion, seed=params.seed, encoder=E, judge=judge, progress=False)
    with torch.no_grad():
        recon = to_uint8(G(torch.from_numpy(r.z)))
    points, found = annotate(recon, "detect", size=size, n_workers=1, progress=False)
    return {"l1": float(r.l1.mean()), "dlib_nme": float(nme(points[found], truth[found]).mean()),
            "dlib_found": float(found.mean())}


if __name__ == "__main__":
    root = project_root()
    params = load_params(root / "params.yaml")
    size = params.evaluation.dlib_size
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    train = load_split(root / "data" / "faces", "train")
    val, val_truth = render_faces(2 * N, params.image_size, params.seed, VALIDATION_START,
                                  world=params.world)
    fit = np.asarray(train.images[:5000])
    tr, tr_truth = np.asarray(train.images[5000:5000 + N]), np.asarray(train.landmarks[5000:5000 + N])
    for path in sys.argv[1:]:
        t0 = time.perf_counter()
        G = load_generator(path, device="cpu")
        with torch.no_grad():
            drawn = to_uint8(G(sample_z(N, G.z_dim, seed=123)))
        row = generator_quality(judge, val[:N], val[N:], drawn)
        row["gen_dlib_found"] = face_found_rate(drawn, size=size, n_workers=1, progress=False)
        E = train_encoder(G, params.inversion, seed=params.seed, images=fit, progress=False)
        for name, faces, truth in (("val", val[:N], val_truth[:N]), ("train", tr, tr_truth)):
            row.update({f"{name}_{k}": v for k, v in
                        inversion_row(G, faces, truth, params, E, judge, size).items()})
        row["seconds"] = time.perf_counter() - t0
        print(path, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)

"""Generator candidates on VALIDATION faces: fresh world faces that neither G nor the metrics saw.

Stage 02/03's metrics use the held-out faces, which must not steer tuning; training faces
flatter a G that was trained to reconstruct them (``began.recon_weight``). The rendered world
can draw as many new faces as needed, so this renders 500 faces from index 2,000,000 on
(stage 01 uses 0.., stage 00's detector 1,000,000..) and, for each generator file, prints:

- G(z) against them: k-NN precision / recall and FD in the judge's features (500 G(z)), dlib's
  found rate on ``evaluation.dlib_found_n`` G(z) (the same z stream) with its standard error;
- the inversion (params.yaml's settings; encoder trained on training faces 0-4999, from the
  ``encoder.safetensors`` beside G's file when ``inversion.encoder_start`` is began) of these
  faces and of training faces 5000-5499: mean L1, and dlib's NME of G(z_r) against the truth
  (the outside check of the geometry kept) with its found rate, and the inversion's seconds.

    python tools/validation_probe.py [--inversion-only] [-S inversion.steps=60 ...] \
        data/began/generator.safetensors [more.safetensors ...]

``-S key=value`` overrides a parameter (a dotted key, a YAML value) as ``dvc exp run -S`` does;
``--inversion-only`` skips G's own quality (it does not change with the inversion settings).

Run it in a project where stages 00 and 01 have run.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import yaml

from facelm.config import parse_params
from facelm.params_file import read_params_file
from facelm.data.faceset import load_split
from facelm.data.world import render_faces
from facelm.evaluation.quality import dlib_found, draw_faces, generator_quality
from facelm.inversion import build_encoder, invert
from facelm.landmarks import nme
from facelm.models.began import load_generator
from facelm.models.detector import load_detector
from facelm.models.dlib_landmarks import annotate
from facelm.paths import project_root
from facelm.tensors import to_uint8

VALIDATION_START = 2_000_000
N = 500


def inversion_row(G, faces, truth, params, E, judge, size: int) -> dict:
    t0 = time.perf_counter()
    r = invert(G, faces, params.inversion, seed=params.seed, encoder=E, judge=judge, progress=False)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        recon = to_uint8(G(torch.from_numpy(r.z)))
    points, found = annotate(recon, "detect", size=size, n_workers=1, progress=False)
    return {"l1": float(r.l1.mean()), "dlib_nme": float(nme(points[found], truth[found]).mean()),
            "dlib_found": float(found.mean()), "invert_s": seconds}


def with_overrides(data: dict, sets: list[str]) -> dict:
    """``data`` with each ``a.b.c=value`` of ``sets`` applied (value parsed as YAML)."""
    for item in sets:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = data
        for k in parents:
            node = node.setdefault(k, {}) or {}
        node[leaf] = yaml.safe_load(value)
    return data


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generators", nargs="+", type=Path)
    ap.add_argument("-S", "--set", action="append", default=[], dest="sets")
    ap.add_argument("--inversion-only", action="store_true")
    args = ap.parse_args()
    root = project_root()
    params = parse_params(with_overrides(read_params_file(root / "params.yaml"), args.sets))
    size = params.evaluation.dlib_size
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    train = load_split(root / "data" / "faces", "train")
    val, val_truth = render_faces(2 * N, params.image_size, params.seed, VALIDATION_START,
                                  world=params.world)
    fit = np.asarray(train.images[:5000])
    tr, tr_truth = np.asarray(train.images[5000:5000 + N]), np.asarray(train.landmarks[5000:5000 + N])
    for path in args.generators:
        t0 = time.perf_counter()
        G = load_generator(path, device="cpu")
        row = {}
        if not args.inversion_only:
            n_dlib = params.evaluation.dlib_found_n
            drawn = draw_faces(G, max(N, n_dlib), seed=123)
            row = generator_quality(judge, val[:N], val[N:], drawn[:N])
            row["gen_dlib_found"], row["gen_dlib_found_se"] = dlib_found(drawn[:n_dlib], params.evaluation)
        t1 = time.perf_counter()
        E = build_encoder(G, params.inversion, seed=params.seed, images=fit, began_dir=path.parent)
        row["encoder_s"] = time.perf_counter() - t1
        for name, faces, truth in (("val", val[:N], val_truth[:N]), ("train", tr, tr_truth)):
            row.update({f"{name}_{k}": v for k, v in
                        inversion_row(G, faces, truth, params, E, judge, size).items()})
        row["seconds"] = time.perf_counter() - t0
        print(path, " ".join(args.sets), json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)

"""Does the inversion's landmark term keep geometry? Measured on TRAINING faces.

The encoder learns from training faces 0-4999 (params.yaml's settings); faces 5000-5499 are
inverted by `facelm.inversion.invert` with ``inversion.landmark_weight`` set to each given w.
For each w it prints the L1, the judge's NME of G(z_r) against the truth (no outside check
once w > 0: the judge is in the loss) and dlib's NME and found rate on G(z_r) (the outside
check):

    python tools/geometry_probe.py 0,0.3,1,3,10

Run it in a project where stages 00-02 have run.
"""
import sys
import time

import numpy as np
import torch

from facelm.config import load_params, replace
from facelm.data.faceset import load_split
from facelm.inversion import build_encoder, invert
from facelm.landmarks import nme
from facelm.models.began import load_generator
from facelm.models.detector import load_detector, predict_landmarks
from facelm.models.dlib_landmarks import annotate
from facelm.paths import project_root
from facelm.tensors import to_uint8


def dlib_nme(images: np.ndarray, truth: np.ndarray, size: int) -> tuple[float, float]:
    """dlib's mean NME over the faces it finds, and the share it finds."""
    points, found = annotate(images, "detect", size=size, progress=False)
    return float(nme(points[found], truth[found]).mean()), float(found.mean())


if __name__ == "__main__":
    root = project_root()
    params = load_params(root / "params.yaml")
    G = load_generator(root / "data" / "began" / "generator.safetensors", device="cpu")
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    train = load_split(root / "data" / "faces", "train")
    fit_faces = np.asarray(train.images[:5000])
    faces, truth = np.asarray(train.images[5000:5500]), np.asarray(train.landmarks[5000:5500])
    size = params.evaluation.dlib_size
    print("on the data faces: judge NME %.4f, dlib NME %.4f (found %.3f)"
          % (nme(predict_landmarks(judge, faces), truth).mean(), *dlib_nme(faces, truth, size)))
    E = build_encoder(G, params.inversion, seed=params.seed, images=fit_faces,
                      began_dir=root / "data" / "began")
    for w in [float(a) for a in sys.argv[1].split(",")]:
        t0 = time.perf_counter()
        r = invert(G, faces, replace(params.inversion, landmark_weight=w), seed=params.seed,
                   encoder=E, judge=judge, progress=False)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            recon = to_uint8(G(torch.from_numpy(r.z)))
        geometry = nme(predict_landmarks(judge, recon), truth).mean()
        print("w %5.2f: L1 %.4f  judge %.4f  dlib NME %.4f (found %.3f)  %.1f s"
              % (w, r.l1.mean(), geometry, *dlib_nme(recon, truth, size), seconds), flush=True)

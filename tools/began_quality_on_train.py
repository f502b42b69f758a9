"""Generator quality on TRAINING faces, for choosing BEGAN settings honestly.

Stage 02's `gen_*` metrics compare G(z) with the held-out faces that the metrics report, so
they must not steer tuning. This compares G(z) with training faces instead (the same judge
features and k-NN precision/recall, FD and dlib face-found rate as stage 02):

    python tools/began_quality_on_train.py data/began/generator.safetensors [more.safetensors ...]

Run it in a project where stages 00 and 01 have run (it reads data/detector and data/faces).
"""
import json
import sys

import torch

from facelm.data.faceset import load_split
from facelm.evaluation.quality import generator_quality
from facelm.models.began import load_generator
from facelm.models.detector import load_detector
from facelm.models.dlib_landmarks import face_found_rate
from facelm.paths import project_root
from facelm.tensors import sample_z, to_uint8

N = 500  # faces per set: G(z), training faces 1000.., floor faces 2000..

if __name__ == "__main__":
    root = project_root()
    train = load_split(root / "data" / "faces", "train").images
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    for path in sys.argv[1:]:
        G = load_generator(path, device="cpu")
        with torch.no_grad():
            faces = to_uint8(G(sample_z(N, G.z_dim, seed=123)))
        q = generator_quality(judge, train[1000:1000 + N], train[2000:2000 + N], faces)
        q["dlib_found"] = face_found_rate(faces, size=128, n_workers=1, progress=False)
        print(path, json.dumps({k: round(v, 4) for k, v in q.items()}))

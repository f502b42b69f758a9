"""Generator quality on TRAINING faces, for choosing BEGAN settings honestly.

Stage 02's `gen_*` metrics compare G(z) with the held-out faces that the metrics report, so
they must not steer tuning. This compares G(z) with training faces instead (the same judge
features and k-NN precision/recall on 500 G(z), FD and dlib face-found rate on
``evaluation.dlib_found_n`` G(z) as stage 02):

    python tools/began_quality_on_train.py data/began/generator.safetensors [more.safetensors ...]

Run it in a project where stages 00 and 01 have run (it reads data/detector and data/faces).
"""
import json
import sys

from facelm.config import load_params
from facelm.data.faceset import load_split
from facelm.evaluation.quality import dlib_found, draw_faces, generator_quality
from facelm.models.began import load_generator
from facelm.models.detector import load_detector
from facelm.paths import project_root

N = 500  # faces per set: G(z), training faces 1000.., floor faces 2000..

if __name__ == "__main__":
    root = project_root()
    train = load_split(root / "data" / "faces", "train").images
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    cfg = load_params(root / "params.yaml").evaluation  # dlib_size, dlib_found_n: stage 02's
    for path in sys.argv[1:]:
        G = load_generator(path, device="cpu")
        faces = draw_faces(G, max(N, cfg.dlib_found_n), seed=123)
        q = generator_quality(judge, train[1000:1000 + N], train[2000:2000 + N], faces[:N])
        q["dlib_found"], q["dlib_found_se"] = dlib_found(faces[:cfg.dlib_found_n], cfg)
        print(path, json.dumps({k: round(v, 4) for k, v in q.items()}))

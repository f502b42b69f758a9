"""tools/began_trajectory.py: quality at every checkpoint, without changing the G that is trained."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from facelm.config import AUTHORS_KEEPING, Params, replace
from facelm.models.detector import LandmarkDetector
from facelm.training.began import train_began

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from began_trajectory import Trajectory  # noqa: E402


def test_measuring_each_checkpoint_leaves_training_unchanged(tmp_path):
    torch.set_num_threads(1)
    params = Params()
    params = replace(params, began=replace(params.began, width=4, z_dim=8, batch_size=4, steps=4,
                                           best_window=2, checkpoint_every=2, sample_every=10_000,
                                           recon_weight=0.1, compile=False, **AUTHORS_KEEPING))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    val = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    judge = LandmarkDetector(32, 49, 4, 0).eval()
    out = tmp_path / "trajectory.json"
    traj = Trajectory(params, judge, val, out, dlib_n=8, n=20)

    plain = train_began(images, params.began, tmp_path / "plain", seed=0, progress=False)
    measured = train_began(images, params.began, tmp_path / "measured", seed=0, progress=False,
                           callbacks=[traj])
    assert measured.weights_digest == plain.weights_digest
    rows = json.loads(out.read_text())
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert 0.0 <= r["gen_precision"] <= 1.0 and 0.0 <= r["dlib_found"] <= 1.0
        assert r["gen_fd"] > r["floor_fd"] >= 0.0  # an untrained G is farther than data is

"""Training and inference throughput of facelm.models.detector against a plain baseline, same run.

Baseline: the same network fed by a torch DataLoader over a Dataset that augments one face
at a time in numpy/OpenCV (mirror + cv2.warpAffine + jitter, then default collation), the way
such a trainer is usually first written. facelm: images resident as one uint8 tensor, the
whole batch augmented at once with affine_grid/grid_sample.

    python benchmarks/bench_detector.py [--steps 150] [--threads 2] [--repeats 3]

With --accuracy it also trains the default detector on rendered face-world faces
(facelm.data.world) for several training budgets and training-set sizes and prints the NME on
held-out faces with the training time:

    python benchmarks/bench_detector.py --accuracy [--size 32] [--heldout 500]
"""
from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from facelm.config import AugmentationParams, DetectorParams, replace
from facelm.landmarks import flip_landmarks
from facelm.models.detector import LandmarkDetector, predict_landmarks
from facelm.tensors import to_tensor
from facelm.training.augment import AugmentConfig
from facelm.training.detector import train_detector


class PerSampleFaces(Dataset):
    """One face at a time: numpy/OpenCV augmentation with the same ranges as AugmentConfig."""

    def __init__(self, images, landmarks, augment: bool, seed: int = 0):
        self.images, self.landmarks, self.augment = images, landmarks, augment
        self.cfg, self.rng = AugmentConfig(), np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img, pts = np.array(self.images[i]), self.landmarks[i].copy()
        s = img.shape[0]
        if self.augment:
            c, r = self.cfg, self.rng
            if r.random() < 0.5:
                img, pts = img[:, ::-1], flip_landmarks(pts)
            a = math.radians(r.uniform(-c.rotate, c.rotate))
            z = math.exp(r.uniform(-1, 1) * math.log1p(c.scale))
            t = r.uniform(-c.shift, c.shift, 2) * s
            # pixel coordinates with centres at integers: rotate/scale about the centre, then move
            m = z * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            centre = np.array([s / 2 - 0.5, s / 2 - 0.5])
            mat = np.concatenate([m, (centre - m @ centre + t)[:, None]], 1)
            img = cv2.warpAffine(np.ascontiguousarray(img), mat, (s, s), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            pts = ((pts * s - 0.5) @ m.T + mat[:, 2] + 0.5) / s
        x = to_tensor(img)  # CHW in [-1, 1]
        if self.augment:
            x = (x - x.mean()) * (1 + r.uniform(-c.contrast, c.contrast)) + x.mean() \
                + r.uniform(-c.brightness, c.brightness)
        return x.clamp(-1, 1), torch.from_numpy(pts.astype(np.float32))


def baseline_train(images, landmarks, steps, batch_size, lr=2e-3):
    model = LandmarkDetector.from_params(DetectorParams(), images.shape[1], landmarks.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = DataLoader(PerSampleFaces(images, landmarks, True), batch_size, shuffle=True,
                        drop_last=True)
    step, t0 = 0, time.perf_counter()
    while step < steps:
        for x, y in loader:
            loss = F.l1_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return time.perf_counter() - t0


def facelm_train(images, landmarks, steps, batch_size, device="cpu"):
    """``train_detector`` with the default DetectorParams for ``steps`` steps of
    ``batch_size``: (seconds of the whole call, result)."""
    cfg = replace(DetectorParams(), steps=steps, batch_size=batch_size)
    t0 = time.perf_counter()
    res = train_detector(images, landmarks, cfg, seed=0, device=device, progress=False)
    return time.perf_counter() - t0, res


def baseline_predict(model, images, batch_size=256):
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in DataLoader(PerSampleFaces(images, np.zeros((len(images), 49, 2), np.float32),
                                              False), batch_size):
            out.append(model(x).numpy())
    return np.concatenate(out)


def accuracy(size: int, heldout: int, seeds: int):
    """NME on held-out world faces vs training steps (K = 2000) and vs K (default steps)."""
    from facelm.landmarks import nme
    from facelm.data.world import render_faces

    x, y = render_faces(2000, size, seed=0)
    xt, yt = render_faces(heldout, size, seed=0, start=1_000_000)  # faces never trained on
    print(f"mean-shape NME {nme(np.broadcast_to(y.mean(0), yt.shape), yt).mean():.4f}")
    print(f"{'K':>5} {'steps':>5} {'seed':>4} {'NME':>7} {'NME no flip-test':>16} {'train s':>7}")
    cfg = DetectorParams()
    default_steps = AugmentationParams().steps  # the budget of each augmentation-study detector
    runs = [(2000, s) for s in (300, 600, default_steps, 2500)] + \
           [(k, default_steps) for k in (100, 500)]
    for k, steps in runs:
        for seed in range(seeds):
            res = train_detector(x[:k], y[:k], replace(cfg, steps=steps), seed=seed, device="cpu",
                                 progress=False)
            e = nme(predict_landmarks(res.model, xt), yt).mean()
            e1 = nme(predict_landmarks(res.model, xt, flip_test=False), yt).mean()
            print(f"{k:5d} {steps:5d} {seed:4d} {e:7.4f} {e1:16.4f} {res.seconds:7.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n", type=int, default=2000, help="faces (random pixels and points)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accuracy", action="store_true", help="NME on face-world faces instead")
    ap.add_argument("--size", type=int, default=32, help="--accuracy: image size")
    ap.add_argument("--heldout", type=int, default=500, help="--accuracy: held-out faces")
    ap.add_argument("--seeds", type=int, default=1, help="--accuracy: runs per setting")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.accuracy:
        print(f"torch {torch.__version__}, {args.threads} threads, {args.size} px")
        return accuracy(args.size, args.heldout, args.seeds)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps of "
          f"{args.batch_size}, {args.n} faces; best of {args.repeats} interleaved runs")
    for size in (32, 64):
        images = rng.integers(0, 256, (args.n, size, size, 3), dtype=np.uint8)
        landmarks = rng.uniform(0.2, 0.8, (args.n, 49, 2)).astype(np.float32)
        # warm-up (allocator, oneDNN kernels) so neither side pays it
        facelm_train(images, landmarks, 10, args.batch_size)
        baseline_train(images, landmarks, 10, args.batch_size)
        ours = base = math.inf
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            seconds, res = facelm_train(images, landmarks, args.steps, args.batch_size)
            ours = min(ours, seconds)
            base = min(base, baseline_train(images, landmarks, args.steps, args.batch_size))
        n_img = args.steps * args.batch_size
        print(f"{size:3d} px train   facelm {n_img / ours:8.0f} img/s   baseline "
              f"{n_img / base:8.0f} img/s   ratio {base / ours:5.2f}x")
        predict_landmarks(res.model, images[:256])
        ours = ours_flip = base = math.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = predict_landmarks(res.model, images, flip_test=False)  # the baseline's work
            ours = min(ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            predict_landmarks(res.model, images)
            ours_flip = min(ours_flip, time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = baseline_predict(res.model, images)
            base = min(base, time.perf_counter() - t0)
        assert np.allclose(a, b, atol=1e-4)
        print(f"{size:3d} px infer   facelm {args.n / ours:8.0f} img/s   baseline "
              f"{args.n / base:8.0f} img/s   ratio {base / ours:5.2f}x   "
              f"(with flip_test: {args.n / ours_flip:.0f} img/s)")

if __name__ == "__main__":
    main()

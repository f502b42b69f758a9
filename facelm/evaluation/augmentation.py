"""The paper's open question, asked fairly: does latent-space augmentation help a detector?

Two settings, both reported, every number labelled with its own:

- ``all``: the label generators of stage 04, trained on the (z_r, landmarks) pairs of every
  labelled training face. A detector trained on K real faces then gets labels learned from
  far more than K annotations, so this is not a fair test of augmentation.
- ``k`` (DatasetGAN / HandsOff style): G and the inversion used every face (they need no
  labels), but the label generators of a K-run are trained on those same K faces' pairs and
  nothing else.

For each K and seed, detectors with the same budget of steps are trained on the K real
faces alone (one detector, shared by both settings) and, per setting, on the K faces plus
``n_synth`` latent-augmented faces (G(z), labels) labelled by the paper's L-Gen ("lgen"), by
the feature label generator ("features"), and by the feature label generator filtered
("features_filtered": the ``n_synth`` candidates of lowest uncertainty among
``n_synth / lgen.features.keep_frac``). A seed fixes the real subset, the detector's
initialisation and the candidate z in every condition and setting (a paired design); all
detectors are scored on the same real test faces. The summary is in
:mod:`facelm.evaluation.augmentation_summary`.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelm.config import AugmentationParams, DetectorParams, LGenParams, Params, replace
from facelm.data.faceset import load_split
from facelm.evaluation.results import label_generator_path
from facelm.evaluation.uncertainty import lowest
from facelm.landmarks import nme
from facelm.models.detector import predict_landmarks
from facelm.models.feature_lgen import FeatureLGen, hypercolumns, label_uncertainty, load_feature_lgen
from facelm.models.lgen import load_lgen
from facelm.tensors import pick_device, sample_z, to_uint8
from facelm.training.common import derive_seed, tensor_fingerprint
from facelm.training.detector import train_detector
from facelm.training.feature_lgen import train_feature_lgen
from facelm.training.lgen import train_lgen

SETTINGS = ("all", "k")
CONDITIONS = ("real", "lgen", "features", "features_filtered")
SHARED = "both"  # the setting of the real-only rows: one detector serves both settings


@dataclass(frozen=True)
class Labellers:
    """One setting's label generators and the pairs they learned from."""

    lgen: torch.nn.Module   # the paper's L-Gen on z (kind "z")
    features: FeatureLGen   # the heads on G's features (kind "features")
    pairs: str              # fingerprint of their (z, landmarks) training pairs


@dataclass(frozen=True)
class RealFaces:
    """Labelled training faces that have an inversion: the pool the K faces are drawn from."""

    images: np.ndarray      # uint8 [N, S, S, 3]
    landmarks: np.ndarray   # float32 [N, P, 2]
    z: np.ndarray           # float32 [N, z_dim], their z_r

    def __post_init__(self):
        if not len(self.images) == len(self.landmarks) == len(self.z):
            raise ValueError(f"RealFaces needs as many images, landmarks and z, got "
                             f"{len(self.images)}, {len(self.landmarks)} and {len(self.z)}")


# (z, landmarks, seed) -> the label generators of a K-run, trained on exactly those pairs
LabellerTrainer = Callable[[np.ndarray, np.ndarray, int], Labellers]


def load_study_inputs(root: str | Path) -> tuple[RealFaces, Labellers]:
    """The pool of labelled training faces that have an inversion (stage 03's z_r of the first
    faces) and stage 04's label generators (setting all), from the project at ``root``."""
    root = Path(root)
    train = load_split(root / "data" / "faces", "train")
    z = np.load(root / "data" / "latents" / "z_train.npy")  # z_r of the first len(z) faces
    landmarks = np.asarray(train.landmarks[:len(z)])
    real = RealFaces(np.asarray(train.images[:len(z)]), landmarks, z)
    stage04 = Labellers(load_lgen(label_generator_path(root, "z"), device="cpu"),
                        load_feature_lgen(label_generator_path(root, "features"), device="cpu"),
                        pairs_fingerprint(z, landmarks))
    return real, stage04


def pairs_fingerprint(z: np.ndarray, landmarks: np.ndarray) -> str:
    """A short sha1 of (z, landmarks) pairs: equal iff the pairs are."""
    as_t = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in (z, landmarks)]  # a writable copy
    return tensor_fingerprint(*as_t)[:16]


def subset_fingerprint(idx: np.ndarray) -> str:
    """A short sha1 of a subset's indices: equal iff the subsets are."""
    return hashlib.sha1(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def label_epochs(steps: int, n_pairs: int, batch_size: int) -> int:
    """Epochs that take about ``steps`` optimiser steps over ``n_pairs`` pairs (at least 1)."""
    return max(1, math.ceil(steps / math.ceil(n_pairs / batch_size)))


def k_run_trainer(G, lgen: LGenParams, cfg: AugmentationParams, device=None) -> LabellerTrainer:
    """Setting k's trainer: stage 04's recipes (``lgen``, ``lgen.features``) on the K pairs,
    for ``cfg.lgen_steps`` / ``cfg.features_steps`` optimiser steps (:func:`label_epochs`)."""
    def train(z: np.ndarray, landmarks: np.ndarray, seed: int) -> Labellers:
        n = len(z)
        z_cfg = replace(lgen, epochs=label_epochs(cfg.lgen_steps, n, lgen.batch_size))
        f = lgen.features
        f_cfg = replace(f, epochs=label_epochs(cfg.features_steps, n, f.batch_size))
        z_model = train_lgen(z, landmarks, z_cfg, None, seed=seed, device=device, progress=False).model
        f_model = train_feature_lgen(G, z, landmarks, f_cfg, None, seed=derive_seed(seed, 1),
                                     device=device, progress=False).model
        return Labellers(z_model, f_model, pairs_fingerprint(z, landmarks))
    return train


def real_subset(n: int, k: int, seed: int, repeat: int) -> np.ndarray:
    """The sorted indices of the K real faces of one repeat (drawn from seed, K, repeat)."""
    if k > n:
        raise ValueError(f"augmentation.ks asks for {k} real faces, only {n} have an inversion")
    return np.sort(np.random.default_rng([seed, k, repeat]).choice(n, size=k, replace=False))


@dataclass
class Pool:
    """The candidate faces of one seed, labelled by every labeller set (keyed like them)."""

    images: np.ndarray                 # uint8 [C, S, S, 3] G(z) of the candidates
    z_labels: dict[Hashable, np.ndarray]        # L-Gen(z) of the first n_synth candidates
    feature_labels: dict[Hashable, np.ndarray]  # [C, P, 2] the feature ensemble's mean
    uncertainty: dict[Hashable, np.ndarray]     # [C] its members' spread (NME units)


@torch.no_grad()
def label_pool(G, labellers: dict[Hashable, Labellers], z: torch.Tensor, n_synth: int,
               batch_size: int = 256, device=None) -> Pool:
    """One G pass over the candidates ``z``: G(z), and for every labeller set the feature
    labels and uncertainty of all candidates and L-Gen's labels of the first ``n_synth``.
    Every feature label generator must read this very G (the same weights and grid)."""
    dev = pick_device(device)
    feats = [lab.features for lab in labellers.values()]
    first = feats[0]
    if any(not f.matches(G) or (f.grid, f.rgb) != (first.grid, first.rgb) for f in feats):
        raise ValueError("label_pool: every feature label generator must be trained on this G "
                         "with the same grid (rerun stage 04 after stage 02)")
    G = G.to(dev).eval()
    for lab in labellers.values():
        lab.lgen.to(dev).eval()
        lab.features.to(dev).eval()
    images, labels = [], {key: [] for key in labellers}
    for chunk in torch.split(z, batch_size):
        image, raw = hypercolumns(G, chunk.to(dev), first.grid, first.rgb)
        images.append(to_uint8(image))
        for key, lab in labellers.items():
            labels[key].append(lab.features.members_from_hypercolumns(raw).cpu())
    members = {key: torch.cat(parts, 1) for key, parts in labels.items()}  # [M, C, P, 2]
    z_synth = torch.split(z[:n_synth], batch_size)
    z_labels = {key: torch.cat([lab.lgen(c.to(dev)).float().cpu() for c in z_synth]).numpy()
                for key, lab in labellers.items()}
    return Pool(np.concatenate(images), z_labels,
                {key: m.mean(0).numpy() for key, m in members.items()},
                {key: label_uncertainty(m).numpy() for key, m in members.items()})


def synthetic_set(pool: Pool, key: Hashable, condition: str, n_synth: int
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(images, landmarks, mean uncertainty or NaN) that ``condition`` adds, from labeller
    set ``key``. "lgen" and "features" label the same first ``n_synth`` candidates."""
    if condition == "lgen":
        return pool.images[:n_synth], pool.z_labels[key], float("nan")
    if condition not in ("features", "features_filtered"):
        raise ValueError(f"unknown augmented condition {condition!r}; one of {CONDITIONS[1:]}")
    u = pool.uncertainty[key]
    keep = lowest(u, n_synth) if condition == "features_filtered" else np.arange(n_synth)
    return pool.images[keep], pool.feature_labels[key][keep], float(u[keep].mean())


def real_repeats(k: int, n_synth: int, real_fraction: float | None) -> int:
    """How many times the K real faces enter an augmented training set so that about
    ``real_fraction`` of its uniform draws are real (``augmentation.real_fraction``; None: once).
    Repeating a face is weighting it: the detector samples its set uniformly and augments
    every draw afresh."""
    if real_fraction is None or n_synth == 0:
        return 1
    return max(1, round(real_fraction / (1.0 - real_fraction) * n_synth / k))


def _scored_detector(x, y, test: tuple[np.ndarray, np.ndarray], cfg: DetectorParams, seed: int,
                     device) -> tuple[float, float]:
    """(mean NME on the test faces, training seconds) of a detector trained on (x, y)."""
    result = train_detector(x, y, cfg, seed=seed, device=device, progress=False)
    pred = predict_landmarks(result.model, test[0], device=device)
    return float(nme(pred, test[1]).mean()), result.seconds


def _repeat_rows(real: RealFaces, idx: np.ndarray, pool: Pool, keys: dict[str, Hashable],
                 pairs: dict[str, str], test, cfg: DetectorParams, n_synth: int, *, k: int,
                 repeat: int, detector_seed: int, real_fraction: float | None, device) -> list[dict]:
    """The 1 + 3 x len(keys) detectors of one (K, repeat): real only, then per setting."""
    base = {"k": k, "seed": repeat, "subset": subset_fingerprint(idx),
            "detector_seed": detector_seed, "n_real": k}
    real_x, real_y = np.asarray(real.images[idx]), np.asarray(real.landmarks[idx], np.float32)
    score, seconds = _scored_detector(real_x, real_y, test, cfg, detector_seed, device)
    rows = [{**base, "setting": SHARED, "condition": "real", "n_synth": 0, "real_repeats": 1, "label_pairs": "",
             "label_uncertainty": float("nan"), "nme": score, "seconds": seconds}]
    for setting, key in keys.items():
        for condition in CONDITIONS[1:]:
            x, y, u = synthetic_set(pool, key, condition, n_synth)
            reps = real_repeats(k, len(x), real_fraction)
            score, seconds = _scored_detector(np.concatenate([real_x] * reps + [x]),
                                              np.concatenate([real_y] * reps + [y]),
                                              test, cfg, detector_seed, device)
            rows.append({**base, "setting": setting, "condition": condition, "n_synth": len(x),
                         "real_repeats": reps,
                         "label_pairs": pairs[setting], "label_uncertainty": u, "nme": score,
                         "seconds": seconds})
    return rows


def study(real: RealFaces, test_images: np.ndarray, test_landmarks: np.ndarray, G,
          stage04: Labellers, params: Params, *, train_labellers: LabellerTrainer | None = None,
          device=None) -> list[dict]:
    """Rows ``{setting, k, seed, condition, nme, subset, detector_seed, label_pairs, ...}``,
    seven detectors per (K in ``augmentation.ks``, repeat < ``augmentation.seeds``).

    ``stage04`` are setting all's label generators; setting k's are made per (K, repeat) by
    ``train_labellers`` (default :func:`k_run_trainer`) from the K faces' pairs alone. Per
    repeat one candidate pool of z (``n_synth / keep_frac``) goes through G once.
    """
    a, seed = params.augmentation, params.seed
    if max(a.ks) > len(real.z):
        raise ValueError(f"augmentation.ks {list(a.ks)} ask for more real faces than the "
                         f"{len(real.z)} given")
    cfg = replace(params.detector, steps=a.steps)
    train_labellers = train_labellers or k_run_trainer(G, params.lgen, a, device)
    n_pool = math.ceil(a.n_synth / params.lgen.features.keep_frac)
    test = (np.asarray(test_images), np.asarray(test_landmarks, np.float32))
    rows = []
    for r in range(a.seeds):
        subsets = {k: real_subset(len(real.z), k, seed, r) for k in a.ks}
        labellers: dict[Hashable, Labellers] = {"all": stage04}
        for k, idx in subsets.items():
            labellers[k] = train_labellers(np.asarray(real.z[idx]), np.asarray(real.landmarks[idx]),
                                           derive_seed(seed, k, r, 1))
        z = sample_z(n_pool, G.z_dim, derive_seed(seed, r, 2), a.truncation)
        pool = label_pool(G, labellers, z, a.n_synth, device=device)
        for k, idx in subsets.items():
            rows += _repeat_rows(real, idx, pool, {"all": "all", "k": k},
                                 {"all": stage04.pairs, "k": labellers[k].pairs}, test, cfg,
                                 a.n_synth, k=k, repeat=r, detector_seed=derive_seed(seed, k, r),
                                 real_fraction=a.real_fraction, device=device)
    return rows

"""Training the label generator on G's features (``lgen.kind: features``), resumable.

The same (z_r, landmarks) pairs as L-Gen and the same loss (the MSE of eq. 4 on unit
coordinates), but the input is G's hypercolumns at z_r. G is frozen, so its features are
computed once, standardised per channel, reduced to their leading principal components (the
model's input transform, fitted here on the training features) and kept on the device; each
epoch only the heads run. Every member draws its own shuffle of the pairs, and all members
step together: member m's batch is block m of one batched matmul.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from facelm.config import FeatureLabelParams
from facelm.models.began import Generator
from facelm.models.feature_lgen import FeatureLGen, context_columns, hypercolumns, save_feature_lgen
from facelm.tensors import pick_device
from facelm.training.common import config_hash, resume_epochs, save_checkpoint, tensor_fingerprint

__all__ = ["CKPT_NAME", "WEIGHTS_NAME", "FeatureLGenResult", "checkpoint_path",
           "precompute_features", "fit_input_transform", "train_feature_lgen"]

WEIGHTS_NAME = "features.safetensors"  # the trained model, in out_dir
CKPT_NAME = "features_ckpt.pt"         # the training state, in out_dir/checkpoint


@dataclass
class FeatureLGenResult:
    """What `train_feature_lgen` returns."""

    model: FeatureLGen                # trained (best-validation if validated), eval mode
    loss: np.ndarray                  # float32 [epochs], training MSE per epoch (members' mean)
    val_loss: np.ndarray | None       # float32 [epochs], validation MSE of the ensemble mean
    best_epoch: int | None            # 1-based epoch of the kept best-validation model


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where `train_feature_lgen` keeps its resumable training state under ``out_dir``."""
    return Path(out_dir) / "checkpoint" / CKPT_NAME


def _pairs(z, landmarks, z_dim: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    z, y = (t.detach().float().cpu() if torch.is_tensor(t) else torch.from_numpy(np.array(t, np.float32))
            for t in (z, landmarks))
    if z.ndim != 2 or z.shape[1] != z_dim or y.ndim != 3 or y.shape[-1] != 2 or len(z) != len(y) \
            or len(z) == 0:
        raise ValueError(f"{name}: expected z [N, {z_dim}] and landmarks [N, P, 2] with the same "
                         f"N > 0, got {tuple(z.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(z).all() and torch.isfinite(y).all()):
        raise ValueError(f"{name}: z and landmarks must be finite")
    return z, y


@torch.no_grad()
def precompute_features(model: FeatureLGen, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """G's raw hypercolumns ``[N, C, grid, grid]`` at ``z`` (on z's device)."""
    return torch.cat([hypercolumns(model.G, chunk, model.grid, model.rgb)[1]
                      for chunk in torch.split(z, batch_size)])


@torch.no_grad()
def fit_input_transform(model: FeatureLGen, feats: torch.Tensor) -> None:
    """Set the model's per-channel mean and std and its whitened principal axes (``proj``)
    from raw training hypercolumns ``[N, C, g, g]``. Each axis's sign is fixed (largest
    entry positive), so equal data give equal weights on any machine."""
    x = feats.transpose(0, 1).reshape(feats.shape[1], -1)             # [C, cells]
    mean, std = x.mean(1), x.std(1, correction=0).clamp_min(1e-6)     # a constant channel stays 0
    x = (x - mean[:, None]) / std[:, None]
    var, axes = torch.linalg.eigh((x @ x.T).double() / x.shape[1])    # ascending
    var, axes = var.float(), axes.float()
    var, axes = var.flip(0)[:model.components], axes.flip(1)[:, :model.components].T
    axes *= torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    model.feat_mean.copy_(mean)
    model.feat_std.copy_(std)
    model.proj.copy_(axes / var.clamp_min(1e-6).sqrt()[:, None])


def _heads_input(model: FeatureLGen, feats: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Raw hypercolumns ``[N, C, g, g]`` -> the heads' input, cells-major ``[N, g*g, K * context²]``
    (what `MemberHeads.forward_members` reads in place: no per-step unfold or copy)."""
    return torch.cat([context_columns(model.project(f), model.context).flatten(2).transpose(1, 2)
                      for f in feats.split(chunk)])


def _epoch(model: FeatureLGen, opt: torch.optim.Optimizer, feats: torch.Tensor, y: torch.Tensor,
           perms: torch.Tensor, batch_size: int) -> float:
    """One pass in which member m visits the pairs in the order ``perms[m]``; the mean loss."""
    members, n = perms.shape
    total = torch.zeros((), device=feats.device)
    for s in range(0, n, batch_size):
        idx = perms[:, s:s + batch_size]                     # [M, B]
        b = idx.shape[1]
        x = feats.index_select(0, idx.reshape(-1)).view(members, b, *feats.shape[1:])
        loss = F.mse_loss(model.heads.forward_members(x), y[idx])  # eq. 4, all members at once
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * b
    return float(total) / n  # the epoch's one sync


@torch.no_grad()
def _ensemble_mse(model: FeatureLGen, feats: torch.Tensor, y: torch.Tensor, chunk: int = 512) -> float:
    """MSE of the members' mean on the heads' (cells-major) input."""
    g = model.grid
    total = sum(F.mse_loss(model.heads(f.transpose(1, 2).reshape(len(f), -1, g, g)).mean(0),
                           y[s:s + chunk], reduction="sum")
                for s, f in ((s, feats[s:s + chunk]) for s in range(0, len(feats), chunk)))
    return float(total) / y.numel()


def train_feature_lgen(
    G: Generator,                          # the generator whose features are read (copied, frozen)
    z: np.ndarray | torch.Tensor,          # float32 [N, z_dim] latents (from inversion)
    landmarks: np.ndarray | torch.Tensor,  # float32 [N, P, 2] unit coordinates
    cfg: FeatureLabelParams,               # members, grid, hidden, epochs, batch, AdamW, checkpoints
    out_dir: str | Path | None,            # features.safetensors + checkpoint/ here (None: no files)
    *,
    seed: int,                             # member initialisations and shuffles
    val_z: np.ndarray | torch.Tensor | None = None,          # optional validation pairs
    val_landmarks: np.ndarray | torch.Tensor | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> FeatureLGenResult:
    """Fit a `FeatureLGen` on ``G`` to (z, landmarks) pairs with the MSE of eq. 4 and AdamW.

    G's features at every z are computed once, standardised and projected with the training
    set's statistics (:func:`fit_input_transform`) and kept on the device as the heads'
    input (N x grid² x components x 9 floats: 440 MB for 6,000 pairs at grid 8). Each epoch every member shuffles the pairs with its own stream
    of one seeded CPU ``torch.Generator``. With validation pairs the ensemble mean's MSE is
    measured after every epoch and the best epoch's weights are returned.

    With ``out_dir`` the heads, optimiser, shuffling state, histories and epoch are saved
    atomically to `checkpoint_path` every ``cfg.checkpoint_every`` epochs and at the end,
    and the model to ``out_dir/features.safetensors``. A later call with the same G, data
    and configuration (checked by hash; ``cfg.epochs`` may differ) resumes from there,
    giving the same weights as an uninterrupted run; another run's checkpoint is overwritten
    with a warning.
    """
    z_t, y_t = _pairs(z, landmarks, G.z_dim, "z/landmarks")
    has_val = val_z is not None or val_landmarks is not None
    if has_val and (val_z is None or val_landmarks is None):
        raise ValueError("give both val_z and val_landmarks, or neither")
    vz_t, vy_t = _pairs(val_z, val_landmarks, G.z_dim, "val_z/val_landmarks") if has_val else (None, None)
    if has_val and vy_t.shape[1:] != y_t.shape[1:]:
        raise ValueError(f"validation landmarks {tuple(vy_t.shape)} do not match training {tuple(y_t.shape)}")
    dev = pick_device(device)
    model = FeatureLGen(G, y_t.shape[1], cfg.members, cfg.grid, cfg.hidden, seed=seed).to(dev)
    # everything that changes the result except `epochs` (no schedule depends on it)
    config = {**model.config(), "generator": model.generator_digest, "batch_size": cfg.batch_size,
              "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": seed,
              "data": tensor_fingerprint(z_t, y_t, vz_t, vy_t)}
    chash = config_hash(config)

    raw = precompute_features(model, z_t.to(dev))
    fit_input_transform(model, raw)
    feats, y_t = _heads_input(model, raw), y_t.to(dev)
    del raw
    if has_val:
        vfeats, vy_t = _heads_input(model, precompute_features(model, vz_t.to(dev))), vy_t.to(dev)
    opt = torch.optim.AdamW(model.heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=dev.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(seed)  # CPU: the same shuffles on every device
    epochs = cfg.epochs
    ckpt = checkpoint_path(out_dir) if out_dir is not None else None
    p = resume_epochs(ckpt, chash, config=config, name="feature L-Gen", limit=epochs,
                      module=model.heads, module_key="heads", opt=opt, gen=gen, device=dev)
    loss_hist, val_hist, best, start = p.loss, p.val, p.best, p.start

    n = len(feats)
    bar = tqdm(range(start, epochs), initial=start, total=epochs, unit="epoch", desc="feature L-Gen",
               disable=not progress)
    model.train()
    for epoch in bar:
        perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(model.n_members)]).to(dev)
        loss_hist.append(_epoch(model, opt, feats, y_t, perms, cfg.batch_size))
        if has_val:
            model.eval()
            val_hist.append(_ensemble_mse(model, vfeats, vy_t))
            model.train()
            if val_hist[-1] < best["val"]:
                best = {"val": val_hist[-1], "epoch": epoch + 1,
                        "state": {k: v.detach().clone() for k, v in model.heads.state_dict().items()}}
        bar.set_postfix(loss=f"{loss_hist[-1]:.3g}", **({"val": f"{val_hist[-1]:.3g}"} if has_val else {}))
        if ckpt is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == epochs):
            save_checkpoint(ckpt, {
                "heads": model.heads.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "epoch": epoch + 1, "config": config,
                "config_hash": chash, "loss": loss_hist, "val_loss": val_hist,
                "best_val": best["val"], "best_epoch": best["epoch"], "best_state": best["state"]})
    bar.close()

    if best["state"] is not None:
        model.heads.load_state_dict(best["state"])
    model.eval()
    if out_dir is not None:
        save_feature_lgen(Path(out_dir) / WEIGHTS_NAME, model)
    return FeatureLGenResult(model, np.asarray(loss_hist, np.float32),
                             np.asarray(val_hist, np.float32) if has_val else None,
                             best["epoch"] if has_val else None)

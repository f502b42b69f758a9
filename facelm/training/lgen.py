"""Training L-Gen (paper section V): the MSE of eq. 4 with Adam, resumable.

The (z, landmarks) pairs live on the device as tensors and are shuffled by index, with no
DataLoader and no host round trip per step; the epoch's loss is read once per epoch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from facelm.config import LGenParams
from facelm.models.lgen import LGen, save_lgen
from facelm.tensors import pick_device
from facelm.training.common import config_hash, resume_epochs, save_checkpoint, tensor_fingerprint

__all__ = ["CKPT_NAME", "WEIGHTS_NAME", "LGenResult", "checkpoint_path", "train_lgen"]

WEIGHTS_NAME = "lgen.safetensors"  # the trained model, in out_dir
CKPT_NAME = "lgen_ckpt.pt"         # the training state, in out_dir/checkpoint


@dataclass
class LGenResult:
    """What `train_lgen` returns."""

    model: LGen                       # trained (best-validation if kept), eval mode
    loss: np.ndarray                  # float32 [epochs], mean training MSE per epoch
    val_loss: np.ndarray | None       # float32 [epochs], validation MSE per epoch
    best_epoch: int | None            # 1-based epoch of the kept best-validation model


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where `train_lgen` keeps its resumable training state under ``out_dir``."""
    return Path(out_dir) / "checkpoint" / CKPT_NAME


def _as_pairs(z, landmarks, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    # arrays are copied: stage 04 reads them from read-only files, which torch will not share
    z = z.float() if torch.is_tensor(z) else torch.from_numpy(np.array(z, dtype=np.float32))
    y = (landmarks.float() if torch.is_tensor(landmarks)
         else torch.from_numpy(np.array(landmarks, dtype=np.float32)))
    if z.ndim != 2 or y.ndim != 3 or y.shape[-1] != 2 or len(z) != len(y) or len(z) == 0:
        raise ValueError(f"{name}: expected z [N, z_dim] and landmarks [N, P, 2] with the same "
                         f"N > 0, got {tuple(z.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(z).all() and torch.isfinite(y).all()):
        raise ValueError(f"{name}: z and landmarks must be finite")
    return z, y


def _validation_pairs(val_z, val_landmarks, z_t: torch.Tensor, y_t: torch.Tensor
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if val_z is None and val_landmarks is None:
        return None, None
    if val_z is None or val_landmarks is None:
        raise ValueError("give both val_z and val_landmarks, or neither")
    vz_t, vy_t = _as_pairs(val_z, val_landmarks, "val_z/val_landmarks")
    if vz_t.shape[1] != z_t.shape[1] or vy_t.shape[1] != y_t.shape[1]:
        raise ValueError(f"validation shapes {tuple(vz_t.shape)}, {tuple(vy_t.shape)} do "
                         f"not match training {tuple(z_t.shape)}, {tuple(y_t.shape)}")
    return vz_t, vy_t


@torch.no_grad()
def _mse(model: LGen, z: torch.Tensor, y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    total = torch.zeros((), device=z.device)
    for s in range(0, len(z), chunk):
        total += F.mse_loss(model(z[s:s + chunk]), y[s:s + chunk], reduction="sum")
    return total / y.numel()


def _epoch(model: LGen, opt: torch.optim.Optimizer, z_t: torch.Tensor, y_t: torch.Tensor,
           perm: torch.Tensor, n_used: int, batch_size: int, noise: torch.Tensor | None) -> float:
    """One pass over ``perm[:n_used]`` in batches; the mean loss over its samples. ``noise``
    (``[n_used, z_dim]``, or None) is added to the epoch's z, which stay in the cube."""
    total = torch.zeros((), device=z_t.device)
    for s in range(0, n_used, batch_size):
        idx = perm[s:s + batch_size]
        z = z_t[idx] if noise is None else (z_t[idx] + noise[s:s + batch_size]).clamp(-1.0, 1.0)
        loss = F.mse_loss(model(z), y_t[idx])  # eq. 4
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(idx)
    return float(total) / n_used  # the epoch's one sync


def train_lgen(
    z: np.ndarray | torch.Tensor,          # float32 [N, z_dim] latents (from inversion)
    landmarks: np.ndarray | torch.Tensor,  # float32 [N, P, 2] unit coordinates
    cfg: LGenParams,                       # widths, epochs, batch, Adam, drop_last, checkpoints
    out_dir: str | Path | None,            # lgen.safetensors + checkpoint/ here (None: no files)
    *,
    seed: int,                             # weight init and shuffling
    val_z: np.ndarray | torch.Tensor | None = None,          # optional validation pairs
    val_landmarks: np.ndarray | torch.Tensor | None = None,
    keep_best: bool = True,                # with validation: return the best-val model
    device: str | torch.device | None = None,
    callbacks: Iterable[Callable[[str, dict], None]] = (),
    progress: bool = True,
) -> LGenResult:
    """Fit an `LGen` to (z, landmarks) pairs with the MSE of eq. 4 and Adam.

    Each epoch shuffles all pairs with a seeded CPU ``torch.Generator`` (``randperm``) and
    steps through them in batches of ``cfg.batch_size`` (the last one partial unless
    ``cfg.drop_last``). Two regularisers that the paper does not have: ``cfg.z_noise`` > 0
    adds Gaussian noise of that std to each z (drawn from the same generator, then clamped to
    [-1, 1]), so that nearby z, which G draws alike, get alike landmarks; ``cfg.weight_decay``
    > 0 uses AdamW with that decoupled decay instead of Adam. With ``val_z``/``val_landmarks`` the validation MSE is measured after
    every epoch and, with ``keep_best``, the weights of the best epoch are returned (the
    authors' code: 80/20 split, best-validation model).

    With ``out_dir``, model, optimiser, shuffling-generator state, histories and epoch are
    saved atomically to `checkpoint_path` every ``cfg.checkpoint_every`` epochs and at the
    end, and the trained model to ``out_dir/lgen.safetensors``. A later call with the same
    configuration and data (checked by hash; ``cfg.epochs`` may differ) resumes from
    there, giving the same weights as an uninterrupted run; a checkpoint of another run
    is overwritten (with a warning), one that cannot be read safely is refused by name.

    Callbacks ``cb(event, state)``: "epoch" with {epoch, loss, val_loss, model}, and
    "end" with {epoch, loss, val_loss, best_epoch, model}.
    """
    z_t, y_t = _as_pairs(z, landmarks, "z/landmarks")
    vz_t, vy_t = _validation_pairs(val_z, val_landmarks, z_t, y_t)
    has_val, n, epochs = vz_t is not None, len(z_t), cfg.epochs
    if cfg.drop_last and n < cfg.batch_size:
        raise ValueError(f"drop_last with {n} pairs < batch_size {cfg.batch_size} leaves no batch")
    dev, betas = pick_device(device), (cfg.beta1, cfg.beta2)

    model = LGen(y_t.shape[1], z_t.shape[1], cfg.hidden, seed=seed).to(dev)
    # everything that changes the result except `epochs` (no schedule depends on it)
    config = {**model.config(), "batch_size": cfg.batch_size, "lr": cfg.lr, "betas": list(betas),
              "drop_last": cfg.drop_last, "keep_best": keep_best, "seed": seed,
              "data": tensor_fingerprint(z_t, y_t, vz_t, vy_t),
              # absent when off: checkpoints of the paper's settings resume as before
              **({"z_noise": cfg.z_noise} if cfg.z_noise else {}),
              **({"weight_decay": cfg.weight_decay} if cfg.weight_decay else {})}
    chash = config_hash(config)
    # fused Adam(W): one kernel for all parameters, ~30% more steps/s for this tiny MLP on CPU
    adam = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
    opt = adam(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay,
               fused=dev.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(seed)  # CPU: same shuffles on every device
    z_t, y_t = z_t.to(dev), y_t.to(dev)
    if has_val:
        vz_t, vy_t = vz_t.to(dev), vy_t.to(dev)
    ckpt = checkpoint_path(out_dir) if out_dir is not None else None
    p = resume_epochs(ckpt, chash, config=config, name="L-Gen", limit=epochs,
                      module=model, module_key="model", opt=opt, gen=gen, device=dev)
    loss_hist, val_hist, best, start = p.loss, p.val, p.best, p.start

    n_used = n - n % cfg.batch_size if cfg.drop_last else n
    bar = tqdm(range(start, epochs), initial=start, total=epochs, unit="epoch", desc="L-Gen",
               disable=not progress)
    model.train()
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(dev)  # one transfer per epoch
        noise = None  # drawn on the CPU from the seeded stream: equal on every device, resumable
        if cfg.z_noise:
            noise = (cfg.z_noise * torch.randn(n_used, z_t.shape[1], generator=gen)).to(dev)
        loss_hist.append(_epoch(model, opt, z_t, y_t, perm, n_used, cfg.batch_size, noise))
        val = None
        if has_val:
            model.eval()
            val = float(_mse(model, vz_t, vy_t))
            model.train()
            val_hist.append(val)
            if keep_best and val < best["val"]:
                best = {"val": val, "epoch": epoch + 1,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        bar.set_postfix(loss=f"{loss_hist[-1]:.3g}", **({"val": f"{val:.3g}"} if has_val else {}))
        for cb in callbacks:
            cb("epoch", {"epoch": epoch + 1, "loss": loss_hist[-1], "val_loss": val, "model": model})
        if ckpt is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == epochs):
            save_checkpoint(ckpt, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "epoch": epoch + 1, "config": config,
                "config_hash": chash, "loss": loss_hist, "val_loss": val_hist,
                "best_val": best["val"], "best_epoch": best["epoch"], "best_state": best["state"]})
    bar.close()

    if has_val and keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    if out_dir is not None:
        save_lgen(Path(out_dir) / WEIGHTS_NAME, model)
    result = LGenResult(model, np.asarray(loss_hist, np.float32),
                        np.asarray(val_hist, np.float32) if has_val else None,
                        best["epoch"] if has_val and keep_best else None)
    for cb in callbacks:
        cb("end", {"epoch": len(loss_hist), "loss": result.loss, "val_loss": result.val_loss,
                   "best_epoch": result.best_epoch, "model": model})
    return result

"""L-Gen (paper section V, Table I): an MLP from the latent z to facial landmarks.

``LGen`` is Table I: z_dim 64 -> 128 -> 128 -> 128 -> 2 * n_points, ReLU, sigmoid output
(landmarks in unit coordinates), 53,986 parameters for 49 points. ``train_lgen`` fits it
with the MSE of eq. 4 and Adam; the (z, landmarks) pairs live on the device as tensors and
are shuffled by index, with no DataLoader and no host round trip per step.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from facelm.checkpoint import config_hash, load_state, load_weights, save_state, save_weights
from facelm.tensors import pick_device

FORMAT = "facelm.models.lgen/1"
CKPT_NAME = "lgen_ckpt.pt"


class LGen(nn.Module):
    """Table I: ``z [N, z_dim] -> landmarks [N, n_points, 2]`` in (0, 1).

    Hidden layers of the widths in ``hidden`` (Table I: 128, 128, 128; an int ``h`` means
    ``[h, h, h]``) with ReLU, then a linear layer to ``2 * n_points`` and a sigmoid.
    Weights are Glorot-uniform with zero biases (Lasagne's defaults, as in the authors'
    code), drawn from a generator seeded with ``seed``.
    """

    def __init__(self, n_points: int = 49, z_dim: int = 64,
                 hidden: int | Sequence[int] = (128, 128, 128), seed: int = 0):
        super().__init__()
        one_width = isinstance(hidden, (int, np.integer))
        widths = [int(hidden)] * 3 if one_width else [int(h) for h in hidden]
        if n_points < 1 or z_dim < 1 or not widths or min(widths) < 1:
            raise ValueError(f"LGen needs n_points, z_dim >= 1 and positive hidden widths, got "
                             f"{n_points}, {z_dim}, {hidden}")
        self.n_points, self.z_dim, self.hidden = n_points, z_dim, widths
        layers: list[nn.Module] = []
        for a, b in zip([z_dim] + widths[:-1], widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers += [nn.Linear(widths[-1], 2 * n_points), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        g = torch.Generator().manual_seed(seed)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight, generator=g)
                nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, self.n_points, 2)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return {"n_points": self.n_points, "z_dim": self.z_dim, "hidden": list(self.hidden)}


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------- files
def save_lgen(path: str | Path, model: LGen) -> None:
    """Write the weights as safetensors (atomically), with the architecture in the metadata."""
    save_weights(path, model.state_dict(), model.config() | {"format": FORMAT})


def load_lgen(path: str | Path, device: str | torch.device | None = None) -> LGen:
    """Rebuild an `LGen` from a file written by `save_lgen` (eval mode, on ``device``)."""
    state, meta = load_weights(path)  # FileNotFoundError when missing
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an L-Gen file (metadata format={meta.get('format')!r})")
    model = LGen(meta["n_points"], meta["z_dim"], meta["hidden"])
    model.load_state_dict(state)
    return model.to(pick_device(device)).eval()


# ---------------------------------------------------------------------------- training
@dataclass
class LGenResult:
    """What `train_lgen` returns."""

    model: LGen                       # trained (best-validation if kept), eval mode
    loss: np.ndarray                  # float32 [epochs], mean training MSE per epoch
    val_loss: np.ndarray | None       # float32 [epochs], validation MSE per epoch
    best_epoch: int | None            # 1-based epoch of the kept best-validation model


def _as_pairs(z, landmarks, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(landmarks) if not torch.is_tensor(landmarks) else landmarks,
                        dtype=torch.float32)
    if z.ndim != 2 or y.ndim != 3 or y.shape[-1] != 2 or len(z) != len(y) or len(z) == 0:
        raise ValueError(f"{name}: expected z [N, z_dim] and landmarks [N, P, 2] with the same "
                         f"N > 0, got {tuple(z.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(z).all() and torch.isfinite(y).all()):
        raise ValueError(f"{name}: z and landmarks must be finite")
    return z, y


def _fingerprint(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(b"none" if t is None else t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def _mse(model: LGen, z: torch.Tensor, y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    total = torch.zeros((), device=z.device)
    for s in range(0, len(z), chunk):
        total += F.mse_loss(model(z[s:s + chunk]), y[s:s + chunk], reduction="sum")
    return total / y.numel()


def train_lgen(
    z: np.ndarray | torch.Tensor,          # float32 [N, z_dim] latents (from inversion)
    landmarks: np.ndarray | torch.Tensor,  # float32 [N, P, 2] unit coordinates
    *,
    epochs: int = 1000,                    # passes over all pairs (paper: 1000)
    batch_size: int = 16,                  # paper: 16; authors' code: 100
    lr: float = 3e-4,                      # Adam learning rate (paper)
    betas: tuple[float, float] = (0.9, 0.999),
    drop_last: bool = False,               # authors' code drops the last partial batch
    val_z: np.ndarray | torch.Tensor | None = None,          # optional validation pairs
    val_landmarks: np.ndarray | torch.Tensor | None = None,
    keep_best: bool = True,                # with validation: return the best-val model
    hidden: int | Sequence[int] = (128, 128, 128),  # Table I widths
    seed: int = 0,                         # weight init and shuffling
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,  # resume from / save to CKPT_NAME here
    checkpoint_every: int = 50,            # epochs between checkpoints (and at the end)
    callbacks: Iterable[Callable[[str, dict], None]] = (),
    progress: bool = True,
) -> LGenResult:
    """Fit an `LGen` to (z, landmarks) pairs with the MSE of eq. 4 and Adam.

    Each epoch shuffles all pairs with a seeded CPU ``torch.Generator`` (``randperm``)
    and steps through them in batches of ``batch_size`` (the last one partial unless
    ``drop_last``). The epoch's training loss is the mean over its samples, accumulated
    on the device and read once per epoch. With ``val_z``/``val_landmarks`` the
    validation MSE is measured after every epoch and, with ``keep_best``, the weights of
    the best epoch are returned (the authors' code: 80/20 split, best-validation model).

    With ``checkpoint_dir``, model, optimiser, shuffling-generator state, histories and
    epoch are saved atomically every ``checkpoint_every`` epochs and at the end; a later
    call with the same configuration and data (checked by hash; ``epochs`` may differ)
    resumes from there, giving the same weights as an uninterrupted run.

    Callbacks ``cb(event, state)``: "epoch" with {epoch, loss, val_loss, model}, and
    "end" with {epoch, loss, val_loss, best_epoch, model}.
    """
    z_t, y_t = _as_pairs(z, landmarks, "z/landmarks")
    has_val = val_z is not None or val_landmarks is not None
    vz_t = vy_t = None
    if has_val:
        if val_z is None or val_landmarks is None:
            raise ValueError("give both val_z and val_landmarks, or neither")
        vz_t, vy_t = _as_pairs(val_z, val_landmarks, "val_z/val_landmarks")
        if vz_t.shape[1] != z_t.shape[1] or vy_t.shape[1] != y_t.shape[1]:
            raise ValueError(f"validation shapes {tuple(vz_t.shape)}, {tuple(vy_t.shape)} do "
                             f"not match training {tuple(z_t.shape)}, {tuple(y_t.shape)}")
    if epochs < 1 or batch_size < 1 or checkpoint_every < 1 or lr <= 0:
        raise ValueError(f"need epochs, batch_size, checkpoint_every >= 1 and lr > 0, got "
                         f"{epochs}, {batch_size}, {checkpoint_every}, {lr}")
    n = len(z_t)
    if drop_last and n < batch_size:
        raise ValueError(f"drop_last with {n} pairs < batch_size {batch_size} leaves no batch")
    dev = pick_device(device)

    model = LGen(y_t.shape[1], z_t.shape[1], hidden, seed=seed).to(dev)
    # everything that changes the result except `epochs` (no schedule depends on it)
    config = {**model.config(),
              "batch_size": batch_size, "lr": lr, "betas": list(betas), "drop_last": drop_last,
              "keep_best": keep_best, "seed": seed, "data": _fingerprint(z_t, y_t, vz_t, vy_t)}
    chash = config_hash(config)
    # fused Adam: one kernel for all parameters, ~30% more steps/s for this tiny MLP on CPU
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas,
                           fused=dev.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(seed)  # CPU: same shuffles on every device
    z_t, y_t = z_t.to(dev), y_t.to(dev)
    if has_val:
        vz_t, vy_t = vz_t.to(dev), vy_t.to(dev)
    loss_hist: list[float] = []
    val_hist: list[float] = []
    best = {"val": float("inf"), "epoch": None, "state": None}
    start = 0

    ckpt_path = Path(checkpoint_dir) / CKPT_NAME if checkpoint_dir is not None else None
    ck = load_state(ckpt_path, map_location=dev) if ckpt_path is not None else None
    if ck is not None:
        if ck.get("config_hash") == chash and int(ck["epoch"]) <= epochs:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"].cpu())
            loss_hist, val_hist = list(ck["loss"]), list(ck["val_loss"])
            best = {"val": ck["best_val"], "epoch": ck["best_epoch"], "state": ck["best_state"]}
            start = int(ck["epoch"])
        else:
            warnings.warn(f"{ckpt_path} was made with another configuration or data, or "
                          f"for more than {epochs} epochs; starting afresh (it will be "
                          f"overwritten)")

    def save_checkpoint(epoch: int) -> None:
        save_state(ckpt_path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "generator": gen.get_state(), "epoch": epoch, "config": config,
            "config_hash": chash, "loss": loss_hist, "val_loss": val_hist,
            "best_val": best["val"], "best_epoch": best["epoch"], "best_state": best["state"]})

    n_used = n - n % batch_size if drop_last else n
    bar = tqdm(range(start, epochs), initial=start, total=epochs, unit="epoch", desc="L-Gen",
               disable=not progress)
    model.train()
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(dev)  # one transfer per epoch
        total = torch.zeros((), device=dev)
        for s in range(0, n_used, batch_size):
            idx = perm[s:s + batch_size]
            loss = F.mse_loss(model(z_t[idx]), y_t[idx])  # eq. 4
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        loss_hist.append(float(total) / n_used)  # the epoch's one sync
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
            cb("epoch", {"epoch": epoch + 1, "loss": loss_hist[-1], "val_loss": val,
                         "model": model})
        if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            save_checkpoint(epoch + 1)
    bar.close()

    if has_val and keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    result = LGenResult(model, np.asarray(loss_hist, np.float32),
                        np.asarray(val_hist, np.float32) if has_val else None,
                        best["epoch"] if has_val and keep_best else None)
    for cb in callbacks:
        cb("end", {"epoch": len(loss_hist), "loss": result.loss, "val_loss": result.val_loss,
                   "best_epoch": result.best_epoch, "model": model})
    return result

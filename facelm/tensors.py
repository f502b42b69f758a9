"""Conversions between uint8 image arrays and model tensors, and device selection."""
from __future__ import annotations

import numpy as np
import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, or CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_tensor(images: np.ndarray | torch.Tensor, device: str | torch.device | None = None
              ) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` (or one ``[H, W, 3]``) to float NCHW in [-1, 1] on ``device``.

    The one uint8 -> [-1, 1] conversion (x / 127.5 - 1). A numpy array goes to
    ``pick_device(device)``; a uint8 torch tensor stays on its device unless ``device`` is
    given (so a batch can be moved as bytes first, then converted where it lands).
    """
    if torch.is_tensor(images):
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        t = images if device is None else images.to(pick_device(device))
    else:
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {arr.dtype}")
        # a read-only memmap slice is copied: torch cannot wrap non-writable memory
        arr = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr)
        t = torch.from_numpy(arr).to(pick_device(device))
    t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t.permute(2, 0, 1)
    return t.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float NCHW (or CHW) in [-1, 1] to uint8 NHWC (or HWC) numpy, clipped and rounded."""
    x = x.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)
    return x.cpu().numpy()


def sample_z(n: int, z_dim: int, seed: int = 0, truncation: float = 1.0) -> torch.Tensor:
    """``n`` latent vectors uniform in ``[-truncation, truncation]^z_dim`` (CPU, float32).

    ``z_dim`` has no default: it is the generator's (``G.z_dim``), never an assumed 64.
    """
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, z_dim, generator=g) * 2.0 - 1.0) * truncation

"""Figures of the paper (and ours) as matplotlib figures; notebooks only call and show them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .landmarks import draw_landmarks


def tile(images: np.ndarray, ncols: int, pad: int = 1, value: int = 255) -> np.ndarray:
    """Arrange uint8 ``[N, H, W, 3]`` images in a grid with ``pad`` pixels between them."""
    n, h, w, c = images.shape
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), value, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = img
    return grid


def annotate(images: np.ndarray, landmarks: np.ndarray | None, scale: int = 4) -> np.ndarray:
    """Upscale faces and draw their landmarks (or only upscale when ``landmarks`` is None)."""
    if landmarks is None:
        return np.repeat(np.repeat(np.asarray(images), scale, axis=1), scale, axis=2)
    return np.stack([draw_landmarks(img, lm, scale=scale) for img, lm in zip(images, landmarks)])


def face_grid(images: np.ndarray, landmarks: np.ndarray | None = None, ncols: int = 8,
              scale: int | None = None, title: str | None = None, width_in: float = 10.0):
    """A figure of faces in a grid, optionally with their 49 landmarks drawn on."""
    images = np.asarray(images)
    scale = scale or max(1, 128 // images.shape[1])
    grid = tile(annotate(images, landmarks, scale), ncols, pad=2 * scale)
    fig, ax = plt.subplots(figsize=(width_in, width_in * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Save a figure as PNG next to the reports (for the README and the reports index)."""
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")

"""Figures of the paper (and ours) as matplotlib figures; notebooks only call and show them."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from facelm.landmarks import draw_landmarks


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


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def training_curves(history: dict[str, np.ndarray], steps: np.ndarray | None = None,
                    smooth: int = 1, title: str | None = None):
    """One panel per curve (e.g. L_D, L_G, k_t, M), moving-average smoothed over ``smooth`` steps."""
    names = list(history)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = np.asarray(history[name], dtype=np.float64)
        x = np.arange(len(values)) if steps is None else np.asarray(steps)
        y = _smooth(values, smooth)
        ax.plot(x[len(x) - len(y):], y, lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def best_median_worst(errors: np.ndarray, n_each: int) -> dict[str, np.ndarray]:
    """Indices of the ``n_each`` lowest, middle and highest errors."""
    order = np.argsort(errors, kind="stable")
    mid = len(order) // 2 - n_each // 2
    return {"best": order[:n_each], "median": order[mid:mid + n_each], "worst": order[-n_each:]}


def reconstruction_pairs(images: np.ndarray, recon: np.ndarray, errors: np.ndarray,
                         n_each: int = 4, title: str | None = None):
    """Fig. 4: faces beside their reconstructions G(z_r), for the best, median and worst errors."""
    groups = best_median_worst(errors, n_each)
    scale = max(1, 96 // images.shape[1])
    fig, axes = plt.subplots(3, 1, figsize=(2.2 * n_each, 6.6))
    for ax, (name, idx) in zip(axes, groups.items()):
        pairs = np.stack([x for i in idx for x in (images[i], recon[i])])
        ax.imshow(tile(annotate(pairs, None, scale), 2 * n_each, pad=scale), interpolation="nearest")
        ax.set_title(f"{name}: image | G(z_r)   (L1 " + ", ".join(f"{errors[i]:.3f}" for i in idx) + ")",
                     fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def histograms(samples: dict[str, np.ndarray], xlabel: str, bins: int = 40, title: str | None = None):
    """Overlaid histograms of several error samples (e.g. training vs held-out)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    hi = max(float(np.percentile(v, 99.5)) for v in samples.values())
    for name, values in samples.items():
        ax.hist(values, bins=np.linspace(0, hi, bins), alpha=0.55,
                label=f"{name} (mean {np.mean(values):.4f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("faces")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def ced_plot(errors: dict[str, np.ndarray], max_error: float = 0.15, title: str | None = None):
    """Cumulative error distributions (fraction of faces with NME <= x)."""
    from facelm.landmarks import auc, ced

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in errors.items():
        t, f = ced(values, np.linspace(0, max_error, 301))
        ax.plot(t, f, label=f"{name} (mean {np.mean(values):.3f}, AUC@0.08 {auc(values):.2f})")
    ax.set_xlabel("NME (inter-ocular)")
    ax.set_ylabel("fraction of faces")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(errors) <= 4:
        ax.legend(fontsize=7, loc="lower right")
    else:  # many curves: the legend goes below the axes, where it hides none of them
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=1)
        fig.set_size_inches(5, 3.5 + 0.16 * len(errors))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def interpolation_strip(images: np.ndarray, landmarks: np.ndarray, displacement: np.ndarray,
                        title: str | None = None):
    """Fig. 9: faces along a latent path with their landmarks, and the landmark step sizes."""
    scale = max(1, 96 // images.shape[1])
    strip = tile(annotate(images, landmarks, scale), len(images), pad=scale)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(1.1 * len(images), 4.2),
                                      gridspec_kw={"height_ratios": [1.2, 1]})
    top.imshow(strip, interpolation="nearest")
    top.set_axis_off()
    if title:
        top.set_title(title)
    bottom.plot(np.arange(1, len(displacement) + 1), displacement, "o-")
    bottom.axhline(np.mean(displacement), color="grey", ls="--", lw=1, label="mean")
    bottom.set_xlabel("step along the path")
    bottom.set_ylabel("mean landmark move")
    bottom.set_xlim(0.5, len(images) - 0.5)
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def agreement_grid(faces: np.ndarray, first: np.ndarray, second: np.ndarray, errors: np.ndarray,
                   n_each: int = 8, title: str | None = None):
    """The best, median and worst rows of ``errors``: each face with two sets of landmarks,
    ``first`` in green and ``second`` in red (e.g. L-Gen's and the judge's)."""
    idx = np.concatenate(list(best_median_worst(errors, n_each).values()))
    scale = max(1, 128 // faces.shape[1])
    both = np.stack([draw_landmarks(draw_landmarks(faces[i], first[i], scale=scale, colour=(0, 220, 0)),
                                    second[i], scale=1, colour=(255, 40, 40), radius=2) for i in idx])
    return face_grid(both, ncols=n_each, scale=1, title=title)


def augmentation_curve(table: list[dict], n_synth: int):
    """The augmentation study (:func:`facelm.evaluation.augmentation_summary.summarise`): the
    mean paired change of held-out NME against real only vs K, one panel per setting, with
    95 % t intervals over the seeds (none drawn where one seed leaves them undefined) and a
    zero line; below 0 the ``n_synth`` latent-augmented faces helped. Each entry's ``label``
    names its condition in the legend."""
    titles = {"all": "setting all: label generators of stage 04\n(trained on every training face)",
              "k": "setting k: label generators trained\non the K real faces only (fair)"}
    ks = sorted({e["k"] for e in table})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, setting in zip(axes, ("all", "k")):
        entries = [e for e in table if e["setting"] == setting and e["condition"] != "real"]
        for i, label in enumerate(dict.fromkeys(e["label"] for e in entries)):
            rows = sorted((e for e in entries if e["label"] == label), key=lambda e: e["k"])
            x = np.array([e["k"] for e in rows]) * 1.06 ** (i - 1)  # side by side on the log axis
            y = np.array([e["change"] for e in rows])
            err = np.array([[e["change"] - e["change_lo"], e["change_hi"] - e["change"]]
                            if e["change_lo"] is not None else [np.nan, np.nan] for e in rows]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.axhline(0.0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("real training faces K")
        ax.set_title(titles[setting], fontsize=9)
        ax.grid(alpha=0.3)
    seeds = max((e["seeds"] for e in table), default=0)
    axes[0].set_ylabel("NME change vs real only\n(condition − real, per seed)")
    axes[1].legend(fontsize=8, title=f"real + {n_synth} faces", title_fontsize=8)
    ci = "95 % t intervals" if seeds >= 2 else "1 seed: no confidence interval"
    fig.suptitle(f"latent-space augmentation, {seeds} paired seeds ({ci})", fontsize=10)
    fig.tight_layout()
    return fig

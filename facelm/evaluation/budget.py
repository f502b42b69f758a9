"""The error budget of stage 06: which link of data → G∘inversion → L-Gen → random z loses
the landmarks?

On the rendered world the annotation is exact, so every link can be measured against truth:

(a) the judge on data faces vs truth — the judge's own floor;
(b) the judge on G(z_r) vs the truth of x, held-out faces — the geometry G∘inversion keeps;
(c) L-Gen(z_r) vs truth, training pairs and held-out faces — fit and generalisation of L-Gen;
(d) L-Gen(z) vs the judge on G(z), random z — what a user of random faces gets.

dlib's versions of (a), (b) and (d) stand beside them where stage 06 ran dlib. The rows are
consecutive links, so the largest increase of NME from one row to the next names the link
that loses the most. The label generator on G's features (``lgen.kind: features``) has its
own (c) and (d) rows after (a) and (b) (:data:`FEATURE_ROWS`, ``error_budget(values,
"features")``): it reads G(z_r) itself, so its (c) rows sit beside the judge's (b) on the same
images, and its chain gets its own verdict. On CelebA "truth" is the face set's annotation (dlib's own points when
``celeba.landmarks: dlib``, so dlib's row (a) is 0 there by construction).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from facelm.landmarks import nme


@dataclass(frozen=True)
class Link:
    """One row of the budget: its NME with the own judge (or vs truth), dlib's where it exists."""

    name: str
    nme: float
    nme_dlib: float      # NaN where dlib has no version of the row
    found_dlib: float    # share of faces dlib found for that number (NaN: no dlib version)
    measures: str


# (name, metrics key, dlib's key, dlib's found-share key, what the link measures); the
# L-Gen rows use stage 04's key names for the same numbers, recomputed in stage 06.
ROWS = (
    ("(a) judge on data faces vs truth, held-out", "detector_nme_heldout", "dlib_nme_heldout",
     "dlib_found_data", "the judge's own error: the floor under every judged row"),
    ("(b) judge on G(z_r) vs truth of x, held-out", "budget_judge_on_inversion_nme",
     "budget_dlib_on_inversion_nme", "dlib_found_inverted",
     "how much of a face's geometry G∘inversion keeps (faces G never saw)"),
    ("(c) L-Gen(z_r) vs truth, training pairs", "lgen_nme_train", None, None,
     "how well L-Gen fits the pairs it was trained on"),
    ("(c) L-Gen(z_r) vs truth, held-out", "lgen_nme_heldout", None, None,
     "L-Gen on the inversions of faces it never saw (generalisation)"),
    ("(d) L-Gen(z) vs judge on G(z), random z", "consistency_nme", "consistency_nme_dlib",
     "dlib_found_generated", "agreement on random faces, off the inversions: what synthetic data gets"),
)
# the feature label generator's links after the shared (a) and (b); its (c) rows use stage
# 04's key names for the same numbers, recomputed in stage 06
FEATURE_ROWS = (
    ("(c) features on G(z_r) vs truth, training pairs", "lgen_nme_train_features", None, None,
     "how well the feature label generator fits the faces it was trained on"),
    ("(c) features on G(z_r) vs truth, held-out", "lgen_nme_heldout_features", None, None,
     "the feature label generator on G(z_r) of faces it never saw (generalisation)"),
    ("(d) features on G(z) vs judge on G(z), random z", "consistency_nme_features",
     "consistency_nme_dlib_features", "dlib_found_generated",
     "agreement on random faces: what synthetic data labelled from G's features gets"),
)
CHAINS = {"z": ROWS, "features": ROWS[:2] + FEATURE_ROWS}


@torch.no_grad()
def lgen_errors(lgen: torch.nn.Module, z: np.ndarray, landmarks: np.ndarray,
                batch_size: int = 256) -> np.ndarray:
    """Per-face NME of a label generator's points at z (either kind) vs ``landmarks``, as
    stage 04 measures it; in batches, since the features kind runs G on each."""
    device = next(lgen.parameters()).device
    z = torch.from_numpy(np.asarray(z, dtype=np.float32))
    pred = torch.cat([lgen(chunk.to(device)).cpu() for chunk in torch.split(z, batch_size)]).numpy()
    return nme(pred, np.asarray(landmarks))


def error_budget(values: Mapping[str, float], kind: str = "z") -> list[Link]:
    """The budget's rows of the label generator ``kind`` ("z": L-Gen, :data:`ROWS`;
    "features": :data:`CHAINS`) from metric values (a missing one is NaN)."""
    if kind not in CHAINS:
        raise ValueError(f"kind must be one of {sorted(CHAINS)}, got {kind!r}")

    def get(key: str | None) -> float:
        return float(values.get(key, math.nan)) if key else math.nan

    return [Link(name, get(key), get(dlib_key), get(found_key), measures)
            for name, key, dlib_key, found_key, measures in CHAINS[kind]]


def largest_step(links: list[Link]) -> tuple[int, float] | None:
    """(row index, NME increase) of the largest increase from one row to the next (rows with
    a NaN NME are left out of the chain); None when there are fewer than two rows."""
    chain = [(i, link.nme) for i, link in enumerate(links) if math.isfinite(link.nme)]
    steps = [(i, v - prev) for (_, prev), (i, v) in zip(chain, chain[1:])]
    return max(steps, key=lambda s: s[1]) if steps else None


def verdict(links: list[Link]) -> str:
    """One sentence: which link loses the landmarks (the largest step between rows)."""
    step = largest_step(links)
    if step is None:
        return "Too few rows were measured to compare links."
    i, gain = step
    before = next(j for j in range(i - 1, -1, -1) if math.isfinite(links[j].nme))
    if gain <= 0:
        return "No link adds error: every row is at or below the one before it."
    return (f"The largest step between consecutive rows is +{gain:.3f} NME, from “{links[before].name}” "
            f"to “{links[i].name}”: the link that loses the landmarks is {links[i].measures}.")


def _cell(value: float, found: float = math.nan) -> str:
    """An NME ("—" when not measured) and, for dlib, the share of faces it covers."""
    text = f"{value:.4f}" if math.isfinite(value) else "—"
    return text + (f" ({found:.0%} found)" if math.isfinite(found) else "")


def budget_markdown(links: list[Link], features: list[Link] | None = None) -> str:
    """The budget as a markdown table, with :func:`verdict` under it; with ``features`` (the
    feature label generator's chain) its own rows follow and its verdict is a second line."""
    shown = links + [link for link in features or [] if link not in links]
    rows = ["| link | NME | NME, dlib | what it measures |", "|---|---|---|---|"]
    rows += [f"| {link.name} | {_cell(link.nme)} | {_cell(link.nme_dlib, link.found_dlib)} | {link.measures} |"
             for link in shown]
    text = "\n".join(rows) + "\n\n" + verdict(links)
    if not features:
        return text
    sentence = verdict(features)
    return text + f"\n\nOn G's features: {sentence[0].lower()}{sentence[1:]}"

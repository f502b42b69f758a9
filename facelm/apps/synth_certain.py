"""``facelm synth --keep-frac F``: keep only the faces whose landmarks the label generator on
G's features is most certain of (its ensemble agrees best).

Deterministic and resumable with the ordinary shards:

1. *Calibration, once per output folder.* ``calibration`` random z (the stream
   ``default_rng([CALIBRATION_TAG, seed, b])``, blocks of :data:`Z_BLOCK` as for the plain z
   rule) are labelled, and the threshold is the ``F``-quantile of their uncertainty
   (:func:`facelm.evaluation.uncertainty.keep_threshold`; F = 1 keeps every face). The
   manifest records it, and a resumed run reuses the recorded threshold instead of
   recomputing it.
2. *Candidates per shard.* Shard ``k`` draws candidates from its own stream
   ``default_rng([CANDIDATE_TAG, seed, k, b])`` in order and keeps, in that order, the first
   ones whose uncertainty is at or under the threshold until it holds its faces. A shard
   therefore depends only on (models, seed, truncation, F, calibration size, shard size, k),
   never on another shard or on where a run was interrupted; the manifest records how many
   candidates each shard used, and the acceptance rate over the complete shards.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

Z_BLOCK = 1024               # every latent stream of synth is drawn in blocks of this many
CALIBRATION_TAG = 0xCA1B     # first entropy word of the calibration stream
CANDIDATE_TAG = 0xCA4D       # first entropy word of each shard's candidate stream
MAX_DRAWS = 20               # a shard gives up after MAX_DRAWS / F times its faces in candidates

Infer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def uniform_stream(start: int, stop: int, key: list[int], *, truncation: float, z_dim: int) -> np.ndarray:
    """Rows ``start .. stop-1`` of the latent stream ``key``: float32 ``[stop - start, z_dim]``.

    Row ``i`` is row ``i % Z_BLOCK`` of ``default_rng([*key, i // Z_BLOCK])``'s uniform draws,
    mapped to ``[-truncation, truncation)``. The plain z rule of synth is ``key = [seed]``.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    blocks = []
    for b in range(start // Z_BLOCK, -(-stop // Z_BLOCK)):
        u = np.random.default_rng([*key, b]).random((Z_BLOCK, z_dim), dtype=np.float32)
        lo, hi = max(start - b * Z_BLOCK, 0), min(stop - b * Z_BLOCK, Z_BLOCK)
        blocks.append(u[lo:hi])
    u = np.concatenate(blocks) if blocks else np.zeros((0, z_dim), np.float32)
    return ((u * 2 - 1) * np.float32(truncation)).astype(np.float32)


def calibrate(infer: Infer, *, keep_frac: float, size: int, seed: int, truncation: float,
              z_dim: int, batch_size: int) -> dict:
    """The ``keep`` record of the manifest: the threshold from ``size`` calibration faces."""
    from facelm.evaluation.uncertainty import keep_threshold  # torch-heavy: only when used

    u = [infer(uniform_stream(s, min(s + batch_size, size), [CALIBRATION_TAG, seed],
                              truncation=truncation, z_dim=z_dim))[2]
         for s in range(0, size, batch_size)]
    threshold = keep_threshold(np.concatenate(u), keep_frac)
    return {"keep_frac": keep_frac, "threshold": threshold if math.isfinite(threshold) else None,
            "calibration_size": size,
            "calibration_rule": f"z: rows 0..{size - 1} of default_rng([{CALIBRATION_TAG}, seed, b]) "
                                f"blocks of {Z_BLOCK}; threshold = the keep_frac-quantile of their "
                                f"uncertainty (null: keep every face)",
            "candidate_rule": f"shard k: candidates in order from default_rng([{CANDIDATE_TAG}, seed, k, b]) "
                              f"blocks of {Z_BLOCK}; a face is kept when its uncertainty <= threshold",
            "candidates": 0, "faces": 0, "acceptance_rate": None}


def certain_batches(infer: Infer, shard: dict, keep: dict, *, seed: int, truncation: float,
                    z_dim: int, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """``(z, images, landmarks, uncertainty)`` batches of ``shard``'s kept faces, in order.

    Exhausting the iterator records ``shard["candidates"]``: how many of its stream's
    candidates were drawn up to its last kept face. Raises ValueError when the stream yields
    far fewer faces under the threshold than the calibration promised.
    """
    need = shard["stop"] - shard["start"]
    threshold = math.inf if keep["threshold"] is None else keep["threshold"]
    limit = math.ceil(MAX_DRAWS * need / keep["keep_frac"]) + batch_size
    got = drawn = 0
    while got < need:
        if drawn >= limit:
            raise ValueError(f"shard {shard['index']}: only {got} of {drawn} candidates fell under "
                             f"the uncertainty threshold {threshold:.4g} (keep_frac "
                             f"{keep['keep_frac']}): the calibration sample does not represent them")
        z = uniform_stream(drawn, drawn + batch_size, [CANDIDATE_TAG, seed, shard["index"]],
                           truncation=truncation, z_dim=z_dim)
        images, landmarks, u = infer(z)
        take = np.flatnonzero(u <= threshold)[:need - got]
        got += len(take)
        used = drawn + (int(take[-1]) + 1 if got == need else len(z))
        drawn += len(z)
        if len(take):
            yield z[take], images[take], landmarks[take], u[take]
    shard["candidates"] = used


def record_acceptance(keep: dict, shards: list[dict]) -> None:
    """Update ``keep``'s candidate and face totals and acceptance rate over the complete shards."""
    done = [s for s in shards if s["state"] == "complete" and "candidates" in s]
    keep["candidates"] = sum(s["candidates"] for s in done)
    keep["faces"] = sum(s["stop"] - s["start"] for s in done)
    keep["acceptance_rate"] = round(keep["faces"] / keep["candidates"], 4) if keep["candidates"] else None

"""The augmentation study's summary: per (setting, K, condition) the mean NME and the mean
paired change against real only, with its 95 % Student-t interval over the seeds.

The change of a seed is that condition's NME minus the real-only NME of the same seed (the
same real faces and detector start): negative means the latent-augmented faces helped.
"""
from __future__ import annotations

import numpy as np

from facelm.config import AugmentationParams
from facelm.evaluation.augmentation import CONDITIONS, SETTINGS, SHARED
from facelm.evaluation.paired_stats import paired_differences, t_interval

HEADLINE_KS = (25, 100, 500)  # the K with fixed metrics keys aug_change_k<K>[_lo, _hi]
SETTING_NAMES = {
    "all": "setting all: label generators trained on every labelled training face (stage 04)",
    "k": "setting k: label generators trained on the K real faces only (fair)",
}
CONDITION_NAMES = {"real": "real only", "lgen": "+ paper L-Gen labels",
                   "features": "+ feature labels", "features_filtered": "+ feature labels, most certain"}


def _by_seed(rows: list[dict], setting: str, k: int, condition: str) -> dict[int, float]:
    wanted = SHARED if condition == "real" else setting
    return {r["seed"]: r["nme"] for r in rows
            if r["k"] == k and r["condition"] == condition and r["setting"] == wanted}


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (setting, K, condition): ``nme`` (mean over seeds), ``change`` (mean
    paired change vs real only), ``change_lo``/``change_hi`` (its 95 % t interval; None with
    one seed), ``seeds`` and ``label`` (the condition in words). Real only is listed in both settings (one shared detector),
    with ``change`` 0 and no interval."""
    table = []
    for setting in SETTINGS:
        for k in sorted({r["k"] for r in rows}):
            real = _by_seed(rows, setting, k, "real")
            for condition in CONDITIONS:
                values = _by_seed(rows, setting, k, condition)
                entry = {"setting": setting, "k": k, "condition": condition,
                         "label": CONDITION_NAMES[condition], "seeds": len(values),
                         "nme": float(np.mean(list(values.values()))), "change": 0.0,
                         "change_lo": None, "change_hi": None}
                if condition != "real":
                    ci = t_interval(paired_differences(values, real))
                    entry.update(change=ci.mean, change_lo=ci.lo, change_hi=ci.hi)
                table.append(entry)
    return table


def _find(table: list[dict], setting: str, k: int, condition: str) -> dict:
    for e in table:
        if (e["setting"], e["k"], e["condition"]) == (setting, k, condition):
            return e
    raise ValueError(f"the summary has no entry for setting {setting}, K={k}, {condition} "
                     f"(studied K: {sorted({e['k'] for e in table})})")


def _ci_text(e: dict) -> str:
    if e["condition"] == "real":
        return "(baseline)"
    if e["change_lo"] is None:
        return f"{e['change']:+.4f} (CI undefined: {e['seeds']} seed)"
    return f"{e['change']:+.4f} [{e['change_lo']:+.4f}, {e['change_hi']:+.4f}]"


def summary_text(table: list[dict]) -> str:
    """The table as aligned text, grouped by setting (each group headed by what it means)."""
    lines = []
    for setting in SETTINGS:
        lines += [SETTING_NAMES[setting],
                  f"  {'K':>5}  {'condition':32} {'NME':>7}   change vs real only, 95 % CI"]
        lines += [f"  {e['k']:5d}  {CONDITION_NAMES[e['condition']]:32} {e['nme']:7.4f}   {_ci_text(e)}"
                  for e in table if e["setting"] == setting]
    return "\n".join(lines)


def verdict(table: list[dict], k: int) -> str:
    """One sentence on the headline (setting k, feature labels filtered, at ``k``), naming
    its setting: helps / hurts when the CI excludes 0, else inconclusive."""
    e = _find(table, "k", k, "features_filtered")
    if e["change_lo"] is None:
        word = f"cannot be judged ({e['seeds']} seed: no confidence interval)"
    elif e["change_hi"] < 0:
        word = "helps (the 95 % CI is below 0)"
    elif e["change_lo"] > 0:
        word = "hurts (the 95 % CI is above 0)"
    else:
        word = "makes no clear difference (the 95 % CI contains 0)"
    return (f"Setting k (label generators trained on the K = {k} real faces only): adding the "
            f"most certain feature-labelled faces changes the detector's NME by {_ci_text(e)} "
            f"over {e['seeds']} paired seeds, i.e. it {word}.")


def headline_metrics(table: list[dict], cfg: AugmentationParams) -> dict:
    """The stage's metrics. ``aug_change_k<K>`` (+ ``_lo``/``_hi`` when the CI exists) for
    each K of :data:`HEADLINE_KS` in ``cfg.ks``: setting k, feature labels filtered. At
    ``cfg.k_default``: ``aug_nme_real_only`` / ``aug_nme_real_plus_synth`` (setting all,
    paper L-Gen, mean NME), ``aug_change_fair_lgen`` / ``aug_change_fair_features`` (setting
    k) and ``aug_change_all_filtered`` (setting all), with ``aug_k`` and ``aug_n_synth``."""
    k = cfg.k_default
    out = {"aug_nme_real_only": _find(table, "all", k, "real")["nme"],
           "aug_nme_real_plus_synth": _find(table, "all", k, "lgen")["nme"],
           "aug_k": k, "aug_n_synth": cfg.n_synth}
    for hk in HEADLINE_KS:
        if hk in cfg.ks:
            e = _find(table, "k", hk, "features_filtered")
            out[f"aug_change_k{hk}"] = e["change"]
            if e["change_lo"] is not None:
                out[f"aug_change_k{hk}_lo"], out[f"aug_change_k{hk}_hi"] = e["change_lo"], e["change_hi"]
    out["aug_change_fair_lgen"] = _find(table, "k", k, "lgen")["change"]
    out["aug_change_fair_features"] = _find(table, "k", k, "features")["change"]
    out["aug_change_all_filtered"] = _find(table, "all", k, "features_filtered")["change"]
    return out

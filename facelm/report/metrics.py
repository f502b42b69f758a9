"""The one metrics registry: every key a stage may write to ``metrics/NN_name.json``.

Each :class:`Metric` names its stage and says what it means. The reports index takes its
meanings from here, the README's metrics table is checked against it, the pipeline test
requires every produced key, and :func:`facelm.report.metrics_file.write_metrics` refuses a
key that is not here — so a new metric is added in exactly one place. This module holds
names and meanings only, so editing it changes no stage's output: it is not a DVC dep of the
stages (their notebooks import it through ``metrics_file``), only of the index. Metrics are reproducible numbers (the same
parameters give the same values); wall-clock times belong in a stage's report instead.

``contract`` marks SPEC's "Metrics contract" keys; ``produced`` is False for keys whose
producer has not landed yet (the pipeline test does not require those); ``needs`` names the
conditions (e.g. ``evaluation.dlib``, ``25 in augmentation.ks``) without which a key is not
written (:func:`expected_keys`).
To get the README's table: ``python -c "from facelm.report.metrics import markdown_table as t; print(t())"``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metrics key: the stage whose metrics file holds it and what it means."""

    key: str
    stage: str          # dvc.yaml stage name, e.g. "02_began" (its file is metrics/02_began.json)
    meaning: str
    contract: bool = False  # one of SPEC's "Metrics contract" keys
    produced: bool = True   # False until the stage's notebook writes it
    readme: bool = False    # listed in the README's table beside the contract keys
    # conditions on the parameters without which it is not written, joined by " and ": a
    # boolean parameter ("evaluation.dlib"), "25 in augmentation.ks", "augmentation.seeds >= 2"
    needs: str | None = None


def _m(key: str, stage: str, meaning: str, contract: bool = False, produced: bool = True,
       readme: bool = False, needs: str | None = None) -> Metric:
    return Metric(key, stage, meaning, contract, produced, readme, needs)


# In pipeline order; within a stage the contract keys come first (the index's headline order).
METRICS: tuple[Metric, ...] = (
    _m("detector_nme_val", "00_detector", "the detector's NME on its validation faces"),
    _m("detector_auc08_val", "00_detector",
       "area under its cumulative error curve up to NME 0.08, normalised to [0, 1]"),
    _m("detector_failure08_val", "00_detector", "share of validation faces with NME > 0.08"),
    _m("faces_train", "01_preprocess", "faces in the training split of the face set"),
    _m("faces_heldout", "01_preprocess", "faces in the held-out split"),
    _m("faces_skipped", "01_preprocess", "images skipped (unreadable, corrupt, no face found)"),
    _m("began_M_final", "02_began",
       "BEGAN convergence measure M averaged over the last 1 % of steps", contract=True),
    _m("began_steps", "02_began", "optimiser steps taken", contract=True),
    _m("began_best_step", "02_began", "step at the end of the lowest-M window (the kept generator)"),
    _m("gen_precision", "02_began", "k-NN precision (k = 3) of G(z) against held-out faces in the judge's "
       "features: share of G(z) inside the data manifold", readme=True),
    _m("gen_recall", "02_began", "k-NN recall: share of held-out faces inside the manifold of G(z)", readme=True),
    _m("gen_fd", "02_began", "Fréchet distance between G(z) and held-out faces in the judge's features", readme=True),
    _m("gen_floor_precision", "02_began", "the same precision for training faces vs held-out faces (a "
       "perfect generator's score at this sample size)"),
    _m("gen_floor_recall", "02_began", "the same recall for training vs held-out faces"),
    _m("gen_floor_fd", "02_began", "the same Fréchet distance for training vs held-out faces"),
    _m("gen_dlib_found", "02_began", "share of G(z) in which dlib's HOG detector finds a face "
       "(stage 06's protocol, evaluation.dlib_found_n G(z))", readme=True, needs="evaluation.dlib"),
    _m("gen_dlib_found_se", "02_began", "binomial standard error of gen_dlib_found",
       needs="evaluation.dlib"),
    _m("inversion_l1_train", "03_inversion",
       "mean per-pixel L1 (images in [0, 1]) of G(z_r) vs x, training faces", contract=True),
    _m("inversion_l1_heldout", "03_inversion",
       "the same on held-out faces the GAN never saw", contract=True),
    _m("inversion_l1_mirror", "03_inversion", "the same on the mirror images of Fig. 9's faces"),
    _m("inversion_faces_train", "03_inversion", "training faces inverted (L-Gen's training pairs)"),
    _m("lgen_params", "04_lgen", "trainable parameters of L-Gen (53,986 for 49 points)", contract=True),
    _m("lgen_nme_train", "04_lgen",
       "NME of L-Gen(z_r) vs the faces' landmarks, training pairs", contract=True),
    _m("lgen_nme_heldout", "04_lgen", "the same on held-out faces (z from inversion)", contract=True),
    _m("lgen_auc08_heldout", "04_lgen", "area under L-Gen's held-out error curve up to NME 0.08"),
    _m("lgen_failure08_heldout", "04_lgen", "share of held-out faces with L-Gen NME > 0.08"),
    _m("lgen_nme_train_features", "04_lgen", "NME of the label generator on G's features "
       "(lgen.kind features, members' mean) vs the faces' landmarks, training pairs", readme=True),
    _m("lgen_nme_heldout_features", "04_lgen", "the same on held-out faces (z from inversion)", readme=True),
    _m("lgen_params_features", "04_lgen", "trainable parameters of the feature label generator's heads "
       "(all members; G is frozen)"),
    _m("lgen_uncertainty_heldout_features", "04_lgen",
       "mean uncertainty (members' spread, NME units) of the feature label generator on held-out z"),
    _m("interp_smoothness", "05_results",
       "along Fig. 9's 16 points: max / mean landmark displacement between neighbours (1 = even)",
       contract=True),
    _m("interp_smoothness_mean_pairs", "05_results",
       "the same, averaged over every face and its mirror image"),
    _m("interp_smoothness_max_pairs", "05_results", "the same, worst face and mirror-image pair"),
    _m("detector_nme_heldout", "06_evaluation",
       "the judge's own NME on held-out annotated faces", contract=True),
    _m("consistency_nme", "06_evaluation",
       "NME between L-Gen(z) and the judge run on G(z), random z", contract=True),
    _m("dlib_nme_heldout", "06_evaluation",
       "dlib's 68-point predictor (→ 49) on held-out data faces vs their annotation, over the faces "
       "it finds: the outside judge's floor", contract=True, needs="evaluation.dlib"),
    _m("consistency_nme_dlib", "06_evaluation",
       "NME between L-Gen(z) and dlib's points on G(z), random z, over the G(z) where dlib finds a face",
       contract=True, needs="evaluation.dlib"),
    _m("dlib_found_data", "06_evaluation",
       "share of held-out data faces in which dlib's HOG detector finds a face with all 49 points "
       "in the image", contract=True, needs="evaluation.dlib"),
    _m("dlib_found_generated", "06_evaluation",
       "the same share for G(z), random z (same protocol)", contract=True, needs="evaluation.dlib"),
    _m("consistency_nme_features", "06_evaluation",
       "as consistency_nme, for the label generator that reads G's features",
       contract=True),
    _m("consistency_nme_dlib_features", "06_evaluation",
       "as consistency_nme_dlib, for the label generator that reads G's features", readme=True,
       needs="evaluation.dlib"),
    _m("uncertainty_spearman", "06_evaluation",
       "Spearman rank correlation between the feature label generator's per-face uncertainty "
       "(its ensemble's spread) and its NME vs the judge on G(z), random z", readme=True),
    _m("uncertainty_spearman_dlib", "06_evaluation",
       "the same against its NME vs dlib, over the G(z) where dlib finds a face", readme=True,
       needs="evaluation.dlib"),
    _m("consistency_nme_features_certain", "06_evaluation",
       "consistency_nme_features over the lgen.features.keep_frac share of random z with the "
       "lowest uncertainty (what synth --keep-frac keeps)", readme=True),
    _m("consistency_nme_dlib_features_certain", "06_evaluation",
       "consistency_nme_dlib_features over the found faces of that most certain share",
       readme=True, needs="evaluation.dlib"),
    _m("dlib_found_generated_certain", "06_evaluation",
       "dlib_found_generated within that most certain share", needs="evaluation.dlib"),
    _m("budget_judge_on_inversion_nme", "06_evaluation",
       "error budget: the judge on G(z_r) vs the annotation of x, held-out faces (the geometry "
       "G∘inversion keeps)", readme=True),
    _m("budget_dlib_on_inversion_nme", "06_evaluation",
       "the same with dlib as the judge, over the G(z_r) where dlib finds a face", readme=True,
       needs="evaluation.dlib"),
    _m("dlib_found_inverted", "06_evaluation",
       "share of G(z_r), held-out faces, in which dlib finds a face (same protocol)", needs="evaluation.dlib"),
    _m("consistency_auc08", "06_evaluation", "area under the consistency error curve up to NME 0.08"),
    _m("consistency_failure08", "06_evaluation", "share of random z with consistency NME > 0.08"),
    _m("consistency_nme_inverted_heldout", "06_evaluation",
       "as consistency_nme, on the inversions z_r of held-out faces (a reference)"),
    _m("aug_nme_real_only", "07_augmentation",
       "setting all, K = aug_k: detector trained on the K real faces alone, NME on real held-out "
       "faces (mean over seeds)", contract=True),
    _m("aug_nme_real_plus_synth", "07_augmentation",
       "the same detector trained on those plus aug_n_synth latent-augmented faces labelled by stage "
       "04's L-Gen (setting all: trained on every labelled training face)", contract=True),
    _m("aug_k", "07_augmentation", "K of aug_nme_* and of aug_change_fair_* / aug_change_all_filtered "
       "(augmentation.k_default)"),
    _m("aug_n_synth", "07_augmentation", "latent-augmented faces each augmented condition adds"),
    *(m for k in (25, 100, 500) for m in (
        _m(f"aug_change_k{k}", "07_augmentation",
           ("setting k (label generators trained on the K = 25 real faces only): mean paired change "
            "of held-out NME, real + the most certain feature-labelled faces minus real only, per seed "
            "(negative: augmentation helps); 95 % t interval aug_change_k25_lo / _hi") if k == 25 else
           f"as aug_change_k25 at K = {k} (label generators trained on those {k} faces only); "
           f"interval aug_change_k{k}_lo / _hi", readme=True, needs=f"{k} in augmentation.ks"),
        _m(f"aug_change_k{k}_lo", "07_augmentation",
           f"lower end of aug_change_k{k}'s 95 % Student-t interval over the seeds (not written with "
           "one seed: undefined)", needs=f"{k} in augmentation.ks and augmentation.seeds >= 2"),
        _m(f"aug_change_k{k}_hi", "07_augmentation", f"upper end of that interval of aug_change_k{k}",
           needs=f"{k} in augmentation.ks and augmentation.seeds >= 2"))),
    _m("aug_change_fair_lgen", "07_augmentation",
       "setting k, K = aug_k: mean paired change of held-out NME when the added faces are labelled "
       "by the K-run paper L-Gen", readme=True),
    _m("aug_change_fair_features", "07_augmentation",
       "the same, labelled by the K-run feature label generator, unfiltered", readme=True),
    _m("aug_change_all_filtered", "07_augmentation",
       "setting all, K = aug_k: the same change for the most certain faces labelled by stage 04's "
       "feature label generator", readme=True),
)

REGISTRY: dict[str, Metric] = {m.key: m for m in METRICS}
if len(REGISTRY) != len(METRICS):  # a key written twice would make one meaning win silently
    raise ImportError("facelm.report.metrics: a metrics key is registered twice")


class UnknownMetricError(ValueError):
    """A key that is not in the registry, or that belongs to another stage's file."""


def stages() -> list[str]:
    """Stage names that have metrics, in pipeline order."""
    return list(dict.fromkeys(m.stage for m in METRICS))


def meaning(key: str) -> str:
    """What ``key`` means ("" for a key the registry does not know)."""
    metric = REGISTRY.get(key)
    return metric.meaning if metric else ""


def check_keys(keys, stage: str | None = None) -> None:
    """Raise :class:`UnknownMetricError` for a key not registered (or not of ``stage``)."""
    unknown = [k for k in keys if k not in REGISTRY]
    if unknown:
        raise UnknownMetricError(
            f"metrics key {unknown[0]!r} is not in the registry: add it to METRICS in "
            "facelm/report/metrics.py (with its stage and meaning) and to the README's table")
    if stage is not None:
        foreign = [k for k in keys if REGISTRY[k].stage != stage]
        if foreign:
            key = foreign[0]
            raise UnknownMetricError(f"metrics key {key!r} belongs to stage {REGISTRY[key].stage}, "
                                     f"not {stage}")


def _holds(condition: str, params) -> bool:
    """One ``needs`` condition on ``params``: ``path`` (a boolean parameter), ``N in path`` (a
    list parameter holds N) or ``path >= N``."""
    def value(path: str):
        v = params
        for part in path.split("."):
            v = getattr(v, part)
        return v

    if m := re.fullmatch(r"(\d+) in ([\w.]+)", condition):
        return int(m[1]) in value(m[2])
    if m := re.fullmatch(r"([\w.]+) >= (\d+)", condition):
        return value(m[1]) >= int(m[2])
    if re.fullmatch(r"[\w.]+", condition):
        return bool(value(condition))
    raise ValueError(f"metrics registry: cannot read the condition {condition!r}")


def expected_keys(stage_names, params) -> set[str]:
    """The keys a run with ``params`` (a :class:`facelm.config.Params`) must write for the
    stages ``stage_names``: the produced ones whose ``needs`` conditions (joined by " and ")
    all hold."""
    def switched_on(m: Metric) -> bool:
        return m.needs is None or all(_holds(c, params) for c in m.needs.split(" and "))

    return {m.key for m in METRICS if m.produced and m.stage in stage_names and switched_on(m)}


def markdown_table(metrics=None) -> str:
    """The README's metrics table (``| key | stage | meaning |``) for ``metrics`` (default:
    the produced contract keys and those marked ``readme``), stage given by its number."""
    if metrics is None:
        metrics = [m for m in METRICS if (m.contract or m.readme) and m.produced]
    rows = ["| key | stage | meaning |", "|---|---|---|"]
    rows += [f"| `{m.key}` | {m.stage[:2]} | {m.meaning} |" for m in metrics]
    return "\n".join(rows)

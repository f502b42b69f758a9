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
switch (e.g. ``evaluation.dlib``) without which a key is not written (:func:`expected_keys`).
To get the README's table: ``python -c "from facelm.report.metrics import markdown_table as t; print(t())"``.
"""
from __future__ import annotations

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
    needs: str | None = None  # a boolean parameter ("evaluation.dlib") without which it is not written


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
       "(stage 06's protocol, stage 02's sample)", readme=True, needs="evaluation.dlib"),
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
       contract=True, produced=False),
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
       "detector trained on K real faces, NME on real held-out faces", contract=True),
    _m("aug_nme_real_plus_synth", "07_augmentation",
       "the same detector trained on those plus latent-augmented faces", contract=True),
    _m("aug_k", "07_augmentation", "K, the number of real faces of the two numbers above"),
    _m("aug_n_synth", "07_augmentation", "latent-augmented faces added to them"),
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


def expected_keys(stage_names, params) -> set[str]:
    """The keys a run with ``params`` (a :class:`facelm.config.Params`) must write for the
    stages ``stage_names``: the produced ones whose ``needs`` parameter, if any, is on."""
    def switched_on(m: Metric) -> bool:
        if m.needs is None:
            return True
        value = params
        for part in m.needs.split("."):
            value = getattr(value, part)
        return bool(value)

    return {m.key for m in METRICS if m.produced and m.stage in stage_names and switched_on(m)}


def markdown_table(metrics=None) -> str:
    """The README's metrics table (``| key | stage | meaning |``) for ``metrics`` (default:
    the produced contract keys and those marked ``readme``), stage given by its number."""
    if metrics is None:
        metrics = [m for m in METRICS if (m.contract or m.readme) and m.produced]
    rows = ["| key | stage | meaning |", "|---|---|---|"]
    rows += [f"| `{m.key}` | {m.stage[:2]} | {m.meaning} |" for m in metrics]
    return "\n".join(rows)

"""Typed, validated parameters: ``params.yaml`` -> :class:`Params`.

``params.yaml`` is the one place for settings (seeds included), and every default below is
the value the shipped ``params.yaml`` holds, so a key left out means what that file says.
Each section is a frozen pydantic model whose fields declare their default and range once.
Loading refuses an unknown or non-string key, a key given twice, a wrong type, a number that
is not finite or out of range, an empty file and bytes that are not UTF-8 -- before any work
starts, in one line that names the key (or the file) and what is allowed. (papermill and DVC
only warn on unknown names, so the checking lives here.) What a person clearly means is
accepted: YAML 1.1 booleans in any case (on/off, yes/no), ``1e-4`` for a number (PyYAML
reads it as a string) and ``1.0e4`` for an integer.

(Over 350 lines because every section of ``params.yaml`` lives here, one class each, so that a
default exists in exactly one place.)
"""
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# ParamsError and read_params_file are part of this module's API (re-exported)
from facelm.params_file import ParamsError, _validate, read_params_file  # noqa: F401

INT_MAX = 2**31 - 1      # larger integers overflow the int32 counters and seeds downstream
MAX_BEGAN_STEPS = 10**7  # the BEGAN trainer keeps a history row of 7 float32 per step
# began.compile "auto" compiles on CPU from this many steps: inductor's first compile of G
# and D takes ~15-40 s on 2 cores and pays back after ~1,200 steps at 32 px (benchmarks/run.py)
COMPILE_MIN_STEPS = 2000
# the inversion's start where stage 02 trains no encoder (began.recon_weight 0): a fresh one,
# 600 steps (the default before 2026-12-04; measured: params.yaml, docs/experiments.md)
FRESH_ENCODER = {"encoder_start": "fresh", "encoder_steps": 600}
# how the authors keep G: the window of lowest mean M, any window (configs/paper-celeba.yaml);
# also where dlib is absent (the GPU machine) or not the point (benchmarks, the trainer tests)
AUTHORS_KEEPING = {"best_by": "M", "best_after": 0.0}
ALL = "use null for all"


def _number(v: Any) -> Any:
    """``"1e-4"`` -> 1e-4 (PyYAML reads an exponent without a dot as a string)."""
    try:
        return float(v) if isinstance(v, str) else v
    except ValueError:
        return v  # refused by the type check, with the value as written


def _integer(v: Any) -> Any:
    """``1.0e4`` or ``"1e4"`` -> 10000 (a fraction is refused by the type check)."""
    v = _number(v)
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _int32(v: int) -> int:
    """Runs after the field's own range, so its own bound (and reason) is reported first."""
    if v > INT_MAX:
        raise ValueError(f"<= {INT_MAX} (larger overflows int32 counters)")
    return v


_FLAGS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False, "auto": "auto"}


def _flag(v: Any) -> Any:
    """YAML 1.1 booleans in any case (PyYAML reads only some spellings unquoted), and "auto"."""
    return _FLAGS.get(v.strip().lower(), v) if isinstance(v, str) else v


Int = Annotated[int, BeforeValidator(_integer), AfterValidator(_int32)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_flag)]
Auto = Annotated[Union[Literal["auto"], bool], BeforeValidator(_flag)]  # auto: on for CUDA
PositiveInt = Annotated[Int, Field(gt=0)]


def _field(default: Any, why: str, **rules: Any) -> Any:
    """A field whose refusal message also says ``why`` (what null means, where a bound comes from)."""
    return Field(default, json_schema_extra={"why": why}, **rules)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def _rules(self) -> list[tuple[bool, str]]:
        """(holds, refusal) for the rules that involve more than one field."""
        return []

    @model_validator(mode="after")
    def _check_rules(self) -> "_Section":
        for ok, message in self._rules():
            if not ok:
                raise ParamsError(message)
        return self


class WorldParams(_Section):
    """The rendered face world (embedded default data set)."""

    n_train: Int = Field(6000, gt=0)
    n_heldout: Int = Field(500, gt=0)
    yaw_max: Float = Field(40.0, ge=0, le=60)
    pitch_max: Float = Field(20.0, ge=0, le=40)
    roll_max: Float = Field(25.0, ge=0, le=45)


class CelebAParams(_Section):
    """CelebA on disk: face crops and their landmarks."""

    root: str = Field("data/celeba", min_length=1)
    layout: Literal["aligned", "wild"] = "aligned"
    # celeba5: CelebA's 5 points | detector: our 49-point CNN | dlib: dlib's 300-W 68 -> 49
    landmarks: Literal["celeba5", "detector", "dlib"] = "celeba5"
    face_detector: Literal["haar", "dlib"] = "haar"  # haar: OpenCV's cascade, as the paper
    scale_factor: Float = Field(1.05, gt=1)
    min_neighbors: Int = Field(5, ge=0)
    min_size: Int = Field(30, ge=0)
    margin: Float = Field(0.0, ge=0, le=1)
    heldout: Literal["test", "valid"] = "test"
    limit: Optional[Int] = _field(None, ALL, gt=0)
    n_workers: Int = Field(0, ge=0)
    shard_size: Int = Field(1000, gt=0)


class BEGANParams(_Section):
    """BEGAN architecture and training (paper section II)."""

    width: Int = Field(16, gt=0)
    z_dim: Int = Field(64, gt=0)
    # D's width when it differs from G's (null: the same, as the authors); a wider D can
    # reconstruct what G should draw (docs/experiments.md)
    d_width: Optional[Int] = Field(None, gt=0)
    # D's bottleneck N_h when it differs from N_z (null: z_dim, as the paper and authors);
    # a wider bottleneck lets D's auto-encoder keep the eyes (docs/experiments.md)
    h_dim: Optional[Int] = Field(None, gt=0)
    batch_size: Int = Field(16, gt=0)
    steps: Int = _field(7000, "the trainer keeps 28 bytes of history per step, in memory and in "
                              "every checkpoint", gt=0, le=MAX_BEGAN_STEPS)
    # constant 5e-4 (authors: 1e-4): of 2e-4 to 1e-3, the lowest FD on training faces (docs/experiments.md)
    lr: Float = Field(5e-4, gt=0)
    beta1: Float = Field(0.5, ge=0, lt=1)
    beta2: Float = Field(0.999, ge=0, lt=1)
    gamma: Float = Field(0.7, gt=0, le=1)
    # k_t's gain (authors: 0.001); 0.01 lets k_t reach equilibrium within a CPU run's steps,
    # which is what removes the eye band (docs/experiments.md)
    lambda_k: Float = Field(0.01, ge=0)
    k0: Float = Field(0.0, ge=0, le=1)
    eta: Int = Field(1, ge=1, le=2)
    update: Literal["joint", "alternate"] = "joint"
    lr_decay: Float = Field(1.0, gt=0, le=1)  # constant lr, as the authors (docs/experiments.md)
    lr_decay_every: Int = Field(0, ge=0)
    best_window: Int = Field(500, gt=0)
    # which window's G is kept: M, the lowest mean M (the authors' convergence measure); dlib,
    # the highest share of best_dlib_n G(z) in which dlib's HOG detector finds a face (z of
    # their own, not the metrics' sample). Only windows ending at step >= best_after * steps
    # count (at least the last window): a fraction, so a shorter or longer run keeps its late
    # windows. dlib from 0.9 (at 7,000 steps: the windows ending at 6,500 and 7,000) won +3.7
    # points of dlib rate on three seeds for 0.0016 of validation L1 (docs/experiments.md,
    # session 13); the authors and the paper setting: M from step 0
    best_by: Literal["M", "dlib"] = "dlib"
    best_after: Float = Field(0.9, ge=0, lt=1)
    best_dlib_n: Int = Field(2000, gt=0)
    checkpoint_every: Int = Field(500, gt=0)
    sample_every: Int = Field(1000, gt=0)
    channels_last: Auto = "auto"  # auto: on (measured faster on CPU and the default on CUDA)
    bf16: Auto = "auto"           # auto: on for CUDA only (it changes the numbers on CPU)
    compile: Auto = "auto"        # auto: on for CPU runs of >= COMPILE_MIN_STEPS steps with a C++ compiler
    skip: Bool = True  # BEGAN paper 3.5 skip connections (authors and the paper setting: off)
    # decay of an exponential moving average of G's weights (Yazici et al. 2019), which is
    # then the G that is kept and sampled; null: the trained G itself (the authors)
    ema: Optional[Float] = Field(None, gt=0, lt=1)
    # weight of mean |x - G(E(x))| in G's loss, E an encoder trained with G (Che et al. 2017's
    # mode regulariser): every training face must be reachable in z; 0: off, as the authors
    recon_weight: Float = Field(0.1, ge=0)
    # compare x and G(E(x)) after p x p average pooling (1: pixel by pixel): the layout and
    # colours that coverage needs, leaving the fine detail to the adversarial term
    recon_pool: Literal[1, 2, 4] = 1
    # faces of each batch (its first n) that E encodes and G must redraw; null: the whole batch.
    # Fewer make the term's extra E and G passes cheaper
    recon_batch: Optional[Int] = Field(None, gt=0)

    @property
    def best_from(self) -> int:
        """The first step at which a window may end and be kept: ``ceil(best_after * steps)``,
        or the last window's end where no window ends that late (so a run always keeps one)."""
        last_window_end = self.steps // self.best_window * self.best_window
        # round first: 0.9 * 7000 must give 6300, whatever the float's last bit says
        return min(math.ceil(round(self.best_after * self.steps, 6)), last_window_end)

    def _rules(self) -> list[tuple[bool, str]]:
        return [(self.best_window <= self.steps,
                 f"began.best_window must be <= began.steps ({self.steps}) (got {self.best_window})"),
                (self.recon_batch is None or self.recon_batch <= self.batch_size,
                 f"began.recon_batch must be <= began.batch_size ({self.batch_size}) "
                 f"(got {self.recon_batch})")]


class InversionParams(_Section):
    """Inverse of the generator (paper section III)."""

    n_train: Optional[Int] = _field(None, ALL, gt=0)
    n_mirror: Int = Field(8, gt=0)
    steps: Int = Field(30, gt=0)
    lr: Float = Field(0.1, gt=0)
    # constant (paper) | cosine: lr * (1 + cos(pi * step / steps)) / 2, so the last steps settle
    lr_schedule: Literal["constant", "cosine"] = "constant"
    beta1: Float = Field(0.9, ge=0, lt=1)
    beta2: Float = Field(0.999, ge=0, lt=1)
    loss: Literal["l1", "mse"] = "l1"
    constraint: Literal["clamp", "tanh"] = "clamp"
    restart_threshold: Optional[Float] = _field(None, "use null for no restarts", gt=0)
    restart_after: Int = Field(20, gt=0)
    max_restarts: Int = Field(3, ge=0)
    tol: Float = Field(1e-4, ge=0)
    patience: Int = Field(20, gt=0)
    batch_size: Int = Field(256, gt=0)
    # start point: random (the authors') | encoder (a CNN trained on (z, G(z)) pairs)
    init: Literal["random", "encoder"] = "encoder"
    # E's weights before its steps: fresh (Glorot) | began (stage 02's mode-regulariser
    # encoder, trained beside G; needs began.recon_weight > 0)
    encoder_start: Literal["fresh", "began"] = "began"
    encoder_steps: Int = Field(0, ge=0)          # Adam steps, each on fresh z and data faces
    encoder_batch_size: Int = Field(32, gt=0)    # pairs (z, G(z)) and data faces per step
    encoder_lr: Float = Field(1e-3, gt=0)        # decayed linearly to 0
    encoder_width: Int = Field(16, gt=0)
    encoder_data_weight: Float = Field(1.0, ge=0)  # of |x - G(E(x))| on data faces (0: pairs only)
    # weight of mean |J(G(z)) - J(x)| (the judge's landmarks, unit coordinates) in the loss
    landmark_weight: Float = Field(3.0, ge=0)

    def _rules(self) -> list[tuple[bool, str]]:
        return [(self.n_train is None or self.n_mirror <= self.n_train,
                 f"inversion.n_mirror must be <= inversion.n_train ({self.n_train}): the mirrored "
                 f"faces are among the inverted ones (got {self.n_mirror})"),
                (self.encoder_steps > 0 or self.encoder_start == "began",
                 "inversion.encoder_steps must be > 0 when inversion.encoder_start is 'fresh' "
                 "(0 steps would leave E at its random init)")]


class FeatureLabelParams(_Section):
    """The label generator that reads G's features (``lgen.kind: features``): an ensemble of
    small heads on G's multi-scale feature maps, one heatmap per landmark, soft-argmax."""

    members: Int = _field(5, "the ensemble's disagreement is the per-face uncertainty", ge=1, le=32)
    grid: Int = _field(8, "heatmaps are grid x grid cells over the image", ge=4, le=128)
    hidden: PositiveInt = 32      # channels of each member's per-cell MLP (3x3 context -> hidden -> P)
    epochs: Int = Field(30, gt=0)
    batch_size: Int = Field(64, gt=0)
    lr: Float = Field(1e-2, gt=0)  # AdamW (chosen on a validation split: docs/experiments.md)
    weight_decay: Float = Field(0.0, ge=0)
    # share of faces kept when filtering by uncertainty (stage 06's most-certain consistency,
    # stage 07's filtered condition)
    keep_frac: Float = Field(0.5, gt=0, le=1)
    checkpoint_every: Int = Field(10, gt=0)


class LGenParams(_Section):
    """L-Gen, the latent-to-landmark MLP (paper section V, Table I), and the label generator
    on G's features beside it."""

    # which label generator synth, the explorer and stage 05 use: z (the paper's Table I)
    # | features (heads on G's feature maps); stages 04, 06 and 07 train and report both
    kind: Literal["z", "features"] = "z"
    hidden: list[PositiveInt] = Field([128, 128, 128], min_length=1)
    epochs: Int = Field(100, gt=0)
    batch_size: Int = Field(16, gt=0)
    lr: Float = Field(3e-4, gt=0)
    beta1: Float = Field(0.9, ge=0, lt=1)
    beta2: Float = Field(0.999, ge=0, lt=1)
    # regularisers (not in the paper; chosen on training pairs: docs/experiments.md): Gaussian
    # noise of this std added to z in training, and AdamW's decoupled weight decay (0: Adam)
    z_noise: Float = Field(0.15, ge=0)
    weight_decay: Float = Field(0.3, ge=0)
    drop_last: Bool = False
    checkpoint_every: Int = Field(50, gt=0)
    features: FeatureLabelParams = Field(default_factory=FeatureLabelParams)


class ResultsParams(_Section):
    """The paper's figures 8 and 9."""

    n_random: Int = Field(16, gt=0)
    n_interp: Int = Field(14, gt=0)
    interp_face: Int = Field(0, ge=0)  # which mirrored face (0: the most turned of inversion.n_mirror)


class DetectorParams(_Section):
    """The 49-point CNN landmark detector: annotator of real crops and independent judge."""

    data: Literal["world", "pts"] = "world"
    pts_root: str = Field("data/300w", min_length=1)
    n_train: Int = Field(6000, gt=0)
    n_val: Int = Field(500, gt=0)
    width: Int = Field(16, gt=0)
    depth: Int = Field(1, ge=0)
    steps: Int = Field(3000, gt=0)
    batch_size: Int = Field(32, gt=0)  # drawn with replacement: may exceed the faces
    lr: Float = Field(8e-3, gt=0)
    weight_decay: Float = Field(1e-4, ge=0)
    augment: Bool = True


class EvaluationParams(_Section):
    """Agreement of L-Gen with the judges (our detector, dlib) on generated faces."""

    n_random: Int = Field(1000, gt=0)
    truncation: Float = Field(1.0, gt=0, le=1)
    dlib: Bool = True  # also run dlib's 68-point predictor (-> 49) as an outside judge
    dlib_size: Int = _field(128, "faces are upscaled to this size for dlib, whose HOG detector "
                                 "needs faces of about 80 px", ge=64, le=512)
    # stage 02's generator-quality sample: this many G(z), held-out and training faces (fewer
    # only if the face set holds fewer: the same counts for every run on one data set)
    quality_n: Int = Field(500, gt=0)
    # stage 02's gen_dlib_found: dlib judges this many G(z) (the quality sample's z stream
    # extended): its standard error is about 0.007 at 4000 against 0.019 at 500
    dlib_found_n: Int = Field(4000, gt=0)


class AugmentationParams(_Section):
    """Does training a detector on K real faces plus latent-augmented ones beat the K real
    faces alone? Asked in two settings (stage 07): "all", the label generators of stage 04
    (trained on every training face), and "k", label generators trained on the K faces only.

    Setting k trains each of its label generators for a fixed number of optimiser steps,
    whatever K: ``epochs = ceil(steps / ceil(K / batch_size))`` with the generator's own
    batch size (``lgen.batch_size``, ``lgen.features.batch_size``), so a small K gets many
    epochs over its few pairs and a large K no more work than it needs.
    """

    ks: list[PositiveInt] = Field([25, 100, 500], min_length=1)
    k_default: Int = Field(100, gt=0)   # the K of aug_nme_* and of the per-condition aug_change_* keys
    n_synth: Int = Field(2000, gt=0)    # latent-augmented faces each augmented condition adds
    seeds: Int = _field(2, "paired repeats per K; a confidence interval needs 2 or more", gt=0)
    truncation: Float = Field(1.0, gt=0, le=1)
    steps: Int = Field(400, gt=0)       # detector steps per training (the same in every condition)
    # setting k: optimiser steps of each K-run label generator (L-Gen's MLP fits its pairs in
    # ~500 steps; the feature heads cost ~20x more per step and improve up to ~400)
    lgen_steps: Int = Field(1000, gt=0)
    features_steps: Int = Field(200, gt=0)
    # share of an augmented detector's training draws that are real faces: the K faces are
    # repeated until they make up about this much of the set (null: each once, so 2,000 synthetic
    # faces beside K = 25 leave 1.2 % of the draws real; 0.75 chosen on validation faces)
    real_fraction: Optional[Float] = _field(0.75, "null: each real face once", gt=0, lt=1)

    def _rules(self) -> list[tuple[bool, str]]:
        return [(self.k_default in self.ks,
                 f"augmentation.k_default must be one of augmentation.ks {self.ks} (got {self.k_default})"),
                (len(set(self.ks)) == len(self.ks),
                 f"augmentation.ks must be distinct Ks, none repeated (got {self.ks})")]


class Params(_Section):
    """Everything in ``params.yaml``."""

    seed: Int = Field(0, ge=0)
    threads: Int = Field(0, ge=0)
    dataset: Literal["world", "celeba"] = "world"
    image_size: Literal[32, 64, 128] = 32
    world: WorldParams = Field(default_factory=WorldParams)
    celeba: CelebAParams = Field(default_factory=CelebAParams)
    began: BEGANParams = Field(default_factory=BEGANParams)
    inversion: InversionParams = Field(default_factory=InversionParams)
    lgen: LGenParams = Field(default_factory=LGenParams)
    results: ResultsParams = Field(default_factory=ResultsParams)
    detector: DetectorParams = Field(default_factory=DetectorParams)
    evaluation: EvaluationParams = Field(default_factory=EvaluationParams)
    augmentation: AugmentationParams = Field(default_factory=AugmentationParams)

    @field_validator("world", "celeba", "began", "inversion", "lgen", "results", "detector",
                     "evaluation", "augmentation", mode="before")
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `began:` with every key commented out: defaults

    def _rules(self) -> list[tuple[bool, str]]:
        """Rules across sections; the data's size is known up front only for the world."""
        inv, a, n = self.inversion, self.augmentation, self.world.n_train
        # encoder_start only matters with an encoder start (init random ignores it, as it
        # ignores every encoder_* key)
        rules = [(inv.init != "encoder" or inv.encoder_start != "began" or self.began.recon_weight > 0,
                  "inversion.encoder_start 'began' needs began.recon_weight > 0 (stage 02 trains "
                  f"that encoder only then; got recon_weight {self.began.recon_weight}): set "
                  + " and ".join(f"inversion.{k}: {v}" for k, v in FRESH_ENCODER.items())
                  + " to train one from scratch"),
                 (self.results.interp_face < inv.n_mirror,
                  f"results.interp_face must be < inversion.n_mirror ({inv.n_mirror}), the faces "
                  f"whose mirror image is inverted (got {self.results.interp_face})")]
        if self.dataset == "world":
            pairs = min(inv.n_train or n, n)
            rules += [
                (max(a.ks) <= pairs, f"augmentation.ks must be <= the {pairs} inverted training faces "
                                     f"(world.n_train, inversion.n_train): setting k trains on K of "
                                     f"their (z_r, landmarks) pairs (got {a.ks})"),
                (self.began.batch_size <= n, f"began.batch_size must be <= world.n_train ({n}), the "
                                             f"faces it draws batches from (got {self.began.batch_size})"),
                (inv.n_mirror <= n, f"inversion.n_mirror must be <= world.n_train ({n}) (got {inv.n_mirror})"),
                (not self.lgen.drop_last or self.lgen.batch_size <= pairs,
                 f"lgen.batch_size must be <= the {pairs} training pairs when lgen.drop_last is true, "
                 f"or no batch is left (got {self.lgen.batch_size})"),
            ]
        return rules

    def to_dict(self) -> dict:
        """Plain values (nested dicts and lists), as ``params.yaml`` writes them."""
        return self.model_dump()


def parse_params(data: Any) -> Params:
    """Validate a parsed params mapping into :class:`Params` (raises :class:`ParamsError`)."""
    return _validate(Params, data)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; a relative path is taken from the project root."""
    from facelm.paths import project_root

    path = Path(path)
    if not path.is_absolute():
        path = project_root() / path
    data = read_params_file(path)
    try:
        return parse_params(data)
    except ParamsError as err:
        raise ParamsError(f"{path.name}: {err}") from None


def deep_merge(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` recursively (a profile overrides only what it names)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def replace(section: BaseModel, **changes: Any) -> Any:
    """A validated copy of a config section with some fields changed (e.g. the augmentation
    study's detector: ``replace(params.detector, steps=params.augmentation.steps)``)."""
    prefix = next((name for name, f in Params.model_fields.items() if f.annotation is type(section)), "")
    return _validate(type(section), {**section.model_dump(), **changes}, prefix)

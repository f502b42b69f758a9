"""Typed, validated parameters: ``params.yaml`` -> :class:`Params`.

``params.yaml`` is the one place for settings (seeds included). Every section is a frozen
dataclass; loading rejects an unknown key, a wrong type or an impossible value *before*
any work starts, with a one-line message that names the key and what is allowed
(papermill and DVC only warn on unknown names, so the checking lives here).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

SIZES = (32, 64, 128)


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of range."""


def _check(rule: str, ok: typing.Callable[[Any], bool]) -> dict:
    return {"rule": rule, "ok": ok}


def positive(default):
    return field(default=default, metadata=_check("> 0", lambda v: v > 0))


def non_negative(default):
    return field(default=default, metadata=_check(">= 0", lambda v: v >= 0))


def unit_interval(default, low_open: bool = False):
    if low_open:
        return field(default=default, metadata=_check("in (0, 1]", lambda v: 0 < v <= 1))
    return field(default=default, metadata=_check("in [0, 1]", lambda v: 0 <= v <= 1))


def beta(default):
    return field(default=default, metadata=_check("in [0, 1)", lambda v: 0 <= v < 1))


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class WorldParams:
    """The rendered face world (embedded default data set)."""

    n_train: int = positive(6000)
    n_heldout: int = positive(500)
    yaw_max: float = field(default=40.0, metadata=_check("in [0, 60]", lambda v: 0 <= v <= 60))
    pitch_max: float = field(default=20.0, metadata=_check("in [0, 40]", lambda v: 0 <= v <= 40))
    roll_max: float = field(default=25.0, metadata=_check("in [0, 45]", lambda v: 0 <= v <= 45))


@dataclass(frozen=True)
class CelebAParams:
    """CelebA on disk: Haar-cascade crops and their landmarks."""

    root: str = "data/celeba"
    layout: Literal["aligned", "wild"] = "aligned"
    landmarks: Literal["celeba5", "detector"] = "celeba5"
    scale_factor: float = field(default=1.05, metadata=_check("> 1", lambda v: v > 1))
    min_neighbors: int = non_negative(5)
    min_size: int = non_negative(30)
    margin: float = field(default=0.0, metadata=_check("in [0, 1]", lambda v: 0 <= v <= 1))
    heldout: Literal["test", "valid"] = "test"
    limit: Optional[int] = None
    n_workers: int = non_negative(0)
    shard_size: int = positive(1000)


@dataclass(frozen=True)
class BEGANParams:
    """BEGAN architecture and training (paper section II)."""

    width: int = positive(16)
    z_dim: int = positive(64)
    batch_size: int = positive(16)
    steps: int = positive(7000)
    lr: float = positive(1e-4)
    beta1: float = beta(0.5)
    beta2: float = beta(0.999)
    gamma: float = unit_interval(0.5, low_open=True)
    lambda_k: float = non_negative(0.001)
    k0: float = unit_interval(0.0)
    eta: Literal[1, 2] = 1
    update: Literal["joint", "alternate"] = "joint"
    lr_decay: float = unit_interval(1.0, low_open=True)
    lr_decay_every: int = non_negative(0)
    best_window: int = positive(500)
    checkpoint_every: int = positive(500)
    sample_every: int = positive(1000)
    channels_last: Literal["auto", "on", "off"] = "auto"
    bf16: Literal["auto", "on", "off"] = "auto"
    compile: bool = False


@dataclass(frozen=True)
class InversionParams:
    """Inverse of the generator (paper section III)."""

    n_train: Optional[int] = None
    n_mirror: int = positive(8)
    steps: int = positive(500)
    lr: float = positive(0.1)
    beta1: float = beta(0.9)
    beta2: float = beta(0.999)
    loss: Literal["l1", "mse"] = "l1"
    constraint: Literal["clamp", "tanh"] = "clamp"
    restart_threshold: Optional[float] = None
    restart_after: int = positive(20)
    max_restarts: int = non_negative(3)
    tol: float = non_negative(1e-4)
    patience: int = positive(20)
    batch_size: int = positive(256)


@dataclass(frozen=True)
class LGenParams:
    """L-Gen, the latent-to-landmark MLP (paper section V, Table I)."""

    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    epochs: int = positive(1000)
    batch_size: int = positive(16)
    lr: float = positive(3e-4)
    beta1: float = beta(0.9)
    beta2: float = beta(0.999)
    drop_last: bool = False
    checkpoint_every: int = positive(50)


@dataclass(frozen=True)
class ResultsParams:
    """The paper's figures 8 and 9."""

    n_random: int = positive(16)
    n_interp: int = positive(14)
    interp_face: int = non_negative(0)  # a training face among the first inversion.n_mirror


@dataclass(frozen=True)
class DetectorParams:
    """The 49-point CNN landmark detector: annotator of real crops and independent judge."""

    data: Literal["world", "pts"] = "world"
    pts_root: str = "data/300w"
    n_train: int = positive(6000)
    n_val: int = positive(500)
    width: int = positive(16)
    depth: int = non_negative(1)
    steps: int = positive(3000)
    batch_size: int = positive(32)
    lr: float = positive(8e-3)
    weight_decay: float = non_negative(1e-4)
    augment: bool = True


@dataclass(frozen=True)
class EvaluationParams:
    """Agreement of L-Gen with the judge on generated faces."""

    n_random: int = positive(1000)
    truncation: float = unit_interval(1.0, low_open=True)


@dataclass(frozen=True)
class AugmentationParams:
    """Does training a detector on real + latent-augmented faces beat real faces alone?"""

    ks: list[int] = field(default_factory=lambda: [25, 100, 500])
    k_default: int = positive(100)
    n_synth: int = positive(2000)
    seeds: int = positive(3)
    truncation: float = unit_interval(1.0, low_open=True)
    steps: int = positive(1500)


@dataclass(frozen=True)
class Params:
    """Everything in ``params.yaml``."""

    seed: int = non_negative(0)
    threads: int = non_negative(0)
    dataset: Literal["world", "celeba"] = "world"
    image_size: int = field(default=32, metadata=_check(f"one of {list(SIZES)}", lambda v: v in SIZES))
    world: WorldParams = field(default_factory=WorldParams)
    celeba: CelebAParams = field(default_factory=CelebAParams)
    began: BEGANParams = field(default_factory=BEGANParams)
    inversion: InversionParams = field(default_factory=InversionParams)
    lgen: LGenParams = field(default_factory=LGenParams)
    results: ResultsParams = field(default_factory=ResultsParams)
    detector: DetectorParams = field(default_factory=DetectorParams)
    evaluation: EvaluationParams = field(default_factory=EvaluationParams)
    augmentation: AugmentationParams = field(default_factory=AugmentationParams)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ loading
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ParamsError naming ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) is type(allowed[allowed.index(value)]):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ParamsError:
                pass
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParamsError(f"{key} must be {_type_name(tp)} (got {value!r})")


def _build(cls, data: Any, prefix: str = ""):
    where = prefix or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{where} must be a mapping of keys (got {data!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ParamsError(f"{key} is not a known parameter; allowed in {where}: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(data[name], hints[name], key)
        check = f.metadata.get("ok")
        if check is not None and value is not None and not check(value):
            raise ParamsError(f"{key} must be {f.metadata['rule']} (got {data[name]!r})")
        values[name] = value
    return cls(**values)


def _cross_checks(p: Params) -> None:
    """Rules that involve more than one key."""
    if p.began.best_window > p.began.steps:
        raise ParamsError(f"began.best_window must be <= began.steps ({p.began.steps}) (got {p.began.best_window})")
    if p.results.interp_face >= p.inversion.n_mirror:
        raise ParamsError(f"results.interp_face must be < inversion.n_mirror ({p.inversion.n_mirror}), "
                          f"the faces whose mirror image is inverted (got {p.results.interp_face})")
    a = p.augmentation
    if a.k_default not in a.ks:
        raise ParamsError(f"augmentation.k_default must be one of augmentation.ks {a.ks} (got {a.k_default})")
    if any(k <= 0 for k in a.ks):
        raise ParamsError(f"augmentation.ks must hold positive counts (got {a.ks})")
    if p.dataset == "world" and max(a.ks) > p.world.n_train:
        raise ParamsError(f"augmentation.ks must be <= world.n_train ({p.world.n_train}) (got {a.ks})")
    if any(h <= 0 for h in p.lgen.hidden):
        raise ParamsError(f"lgen.hidden must hold positive layer widths (got {p.lgen.hidden})")


def parse_params(data: Any) -> Params:
    """Validate a parsed params mapping into :class:`Params` (raises :class:`ParamsError`)."""
    params = _build(Params, data)
    _cross_checks(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; a relative path is taken from the project root."""
    from facelm.paths import project_root

    path = Path(path)
    if not path.is_absolute():
        path = project_root() / path
    if not path.is_file():
        raise FileNotFoundError(f"no parameters file at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path.name} is not valid YAML: {err}".replace("\n", " ")) from None
    try:
        return parse_params(data)
    except ParamsError as err:
        raise ParamsError(f"{path.name}: {err}") from None


def deep_merge(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` recursively (a profile overrides only what it names)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def replace(section, **changes):
    """A copy of a config section with some fields changed (e.g. the augmentation study's
    detector: ``replace(params.detector, steps=params.augmentation.steps)``), validated."""
    return dataclasses.replace(section, **changes)

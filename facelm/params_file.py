"""Reading a parameters file, and wording each refusal in one line.

:mod:`facelm.config` declares the sections (every default and range); this module holds
what turns a bad file or a pydantic error into one line that names the key (or the file)
and what is allowed: a YAML loader that refuses a key given twice, the UTF-8 / empty-file
checks, and the messages built from a field's type and constraints.
"""
from collections.abc import Hashable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of range (the message is one line)."""


# ----------------------------------------------------------------- one-line refusals
_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false (or on/off, yes/no)"}
_RANGE = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _show(v: Any, key: bool = False) -> str:
    """A value (or a key: a plain name unquoted) in one short line, null and booleans as in YAML."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    text = v if key and isinstance(v, str) and v.isidentifier() else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _unwrap(tp: Any) -> tuple[Any, list]:
    """A list item's type and constraints: ``Annotated[int, ..., Field(gt=0)]`` -> (int, [Gt(0)])."""
    if get_origin(tp) is not Annotated:
        return tp, []
    base, *extra = get_args(tp)
    return base, [c for m in extra for c in (m.metadata if isinstance(m, FieldInfo) else [m])]


def _rule(meta: list) -> str:
    """A field's range: '> 0', 'in (0, 1]', '' if it has none."""
    b = {k: getattr(m, k) for m in meta for k in _OPS if getattr(m, k, None) is not None}
    lo, hi = [k for k in b if k[0] == "g"], [k for k in b if k[0] == "l"]
    if lo and hi:
        return f"in {'(' if lo[0] == 'gt' else '['}{b[lo[0]]}, {b[hi[0]]}{')' if hi[0] == 'lt' else ']'}"
    return " ".join(f"{_OPS[k]} {v}" for k, v in b.items())


def _what(tp: Any) -> str:
    """A type in words: 'an integer', "one of 'l1', 'mse'", 'a non-empty list, each an integer > 0'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        if len(args) == 1:
            return repr(args[0])
        return "one of " + (str(list(args)) if isinstance(args[0], int) else ", ".join(map(repr, args)))
    if origin in (Union, UnionType):
        return " or ".join(map(_what, args))
    if origin is list:
        item, meta = _unwrap(args[0])
        return f"a non-empty list, each {_what(item)} {_rule(meta)}".strip()
    return _what(args[0]) if origin is Annotated else _NAMES.get(tp, str(tp))


def _locate(model: type, loc: tuple, key: str) -> tuple[str, Any, list, str, Any]:
    """Follow an error's loc through the sections: (dotted key, type, constraints, why, section)."""
    tp, meta, why, section = model, [], "", model
    for part in loc:
        if section is not None and part in section.model_fields:
            f = section.model_fields[part]
            key, tp, meta = f"{key}.{part}" if key else part, f.annotation, f.metadata
            why = (f.json_schema_extra or {}).get("why", "")
            section = tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
        elif isinstance(part, int) and get_origin(tp) is list:
            key, section, (tp, meta) = f"{key}[{part}]", None, _unwrap(get_args(tp)[0])
        else:
            break  # an unknown key, or pydantic's name for a member of a union
    return key, tp, meta, why, section


def _message(err: ValidationError, model: type, prefix: str = "") -> str:
    """The first error in one line: '<key> must be <what is allowed> (got <value>)'."""
    e = err.errors(include_url=False)[0]
    loc, kind, cause = e["loc"], e["type"], e.get("ctx", {}).get("error")
    if isinstance(cause, ParamsError):
        return str(cause)  # a rule across fields, worded with its keys already
    key, tp, meta, why, section = _locate(model, loc, prefix)
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: a key that is not a string
        name = _show(e["input"] if kind == "invalid_key" else loc[-1], key=True)
        return (f"{f'{key}.' if key else ''}{name} is not a known parameter; allowed in "
                f"{key or 'params'}: {', '.join(section.model_fields)}")
    if kind in ("model_type", "model_attributes_type"):
        return f"{key or 'params'} must be a mapping of keys (got {_show(e['input'])})"
    null = " or null" if type(None) in get_args(tp) else ""
    tp, rule = get_args(tp)[0] if null else tp, _rule(meta)
    text = {"value_error": str(cause), "string_too_short": "a non-empty string",
            "finite_number": f"a finite number {rule}"}.get(kind, rule if kind in _RANGE else f"{_what(tp)} {rule}")
    return f"{key} must be {text.strip()}{null} (got {_show(e['input'])}){f'; {why}' if why else ''}"


def _validate(model: type, data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_message(err, model, prefix)) from None


# ------------------------------------------------------------------------------ loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is refused (PyYAML
    silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then overriding one of its keys is what merge keys are for
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if isinstance(key, Hashable):  # an unhashable key gets PyYAML's own error below
                if key in lines:
                    raise ParamsError(f"{_show(key, key=True)} is given twice (lines {lines[key]} and {line}); keep one")
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params_file(path: str | Path) -> dict:
    """The mapping in a YAML parameters file; a :class:`ParamsError` naming the file when it is
    not UTF-8, not YAML, gives a key twice, is empty (or only comments) or is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no parameters file at {path}")
    raw = path.read_bytes()
    try:
        data = yaml.load(raw.decode("utf-8-sig"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path.name} is not UTF-8 text (byte {err.start} is {raw[err.start:err.start + 1]!r}); "
                          "save it as UTF-8") from None
    except ParamsError as err:
        raise ParamsError(f"{path.name}: {err}") from None
    except Exception as err:  # noqa: BLE001 -- PyYAML also raises ValueError etc. on odd tags
        raise ParamsError(f"{path.name} is not valid YAML: {' '.join(str(err).split())}"[:300]) from None
    if data is None:
        raise ParamsError(f"{path.name} holds no parameters (it is empty or only comments)")
    if not isinstance(data, dict):
        raise ParamsError(f"{path.name} must be a mapping of parameters (got {_show(data)})")
    return data

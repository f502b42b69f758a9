"""The ``facelm`` command: run stages, check parameters, apply profiles."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from facelm.config import ParamsError, deep_merge, load_params, parse_params


def _stage(args) -> int:
    from facelm.report.stage import run_stage

    run_stage(args.name, params_file=args.params)
    return 0


def _check(args) -> int:
    params = load_params(args.params)
    print(f"{args.params}: ok (dataset {params.dataset}, {params.image_size} px, seed {params.seed})")
    return 0


def _profile(args) -> int:
    """Merge a profile (a partial params file) into params.yaml, validating the result first."""
    from facelm.paths import project_root

    target = project_root() / args.params
    base = yaml.safe_load(target.read_text()) or {}
    overlay = yaml.safe_load(Path(args.profile).read_text()) or {}
    merged = deep_merge(base, overlay)
    parse_params(merged)  # refuse to write an invalid params.yaml
    header = f"# params.yaml with profile {args.profile} applied (facelm profile)\n"
    target.write_text(header + yaml.safe_dump(merged, sort_keys=False))
    print(f"{args.params}: applied {args.profile}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    p.add_argument("name", help="stage notebook name, e.g. 01_preprocess")
    p.add_argument("--params", default="params.yaml", help="parameters file (relative to the project root)")
    p.set_defaults(func=_stage)

    p = sub.add_parser("check", help="validate a parameters file and exit")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_check)

    p = sub.add_parser("profile", help="merge a profile (e.g. configs/ci.yaml) into params.yaml")
    p.add_argument("profile", help="a YAML file holding the keys to override")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_profile)

    from facelm.apps import synth
    from facelm.report import index as report, plots as vega_template

    synth.add_parser(sub)
    report.add_parser(sub)
    vega_template.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamsError, FileNotFoundError) as err:
        print(f"facelm: error: {err}", file=sys.stderr)
        return 2

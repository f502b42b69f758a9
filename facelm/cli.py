"""The ``facelm`` command: run stages, check parameters, apply profiles, and the subcommands
that modules add (synth, index, plots, train-began). Every error is one line on stderr and
exit status 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import yaml

from facelm.config import ParamsError, deep_merge, load_params, parse_params, read_params_file
from facelm.paths import project_root

# subcommands that their own modules add with ``add_parser(subparsers)``; a module is imported
# only when its command runs (or for --help), so `facelm check` does not wait for torch
PLUGINS = {
    "synth": "facelm.apps.synth",
    "index": "facelm.report.index",
    "plots": "facelm.report.plots",
    "plots-template": "facelm.report.plots",
    "train-began": "facelm.training.began_cli",
}
BUILTIN = ("stage", "check", "profile")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _stage(args) -> int:
    from facelm.report.stage import run_stage  # a user-facing failure is a one-line StageError

    run_stage(args.name, params_file=args.params)
    return 0


def _check(args) -> int:
    params = load_params(args.params)
    print(f"{args.params}: ok (dataset {params.dataset}, {params.image_size} px, seed {params.seed})")
    return 0


def _profile(args) -> int:
    """Merge a profile (a partial params file) into params.yaml; an invalid result is refused
    and nothing is written. The file is written with the validated values (its comments go)."""
    target = project_root() / args.params
    merged = deep_merge(read_params_file(target), read_params_file(args.profile))
    try:
        params = parse_params(merged)
    except ParamsError as err:
        raise ParamsError(f"{args.params} with {args.profile} applied: {err}") from None
    text = (f"# params.yaml with profile {args.profile} applied (facelm profile)\n"
            + yaml.safe_dump(params.to_dict(), sort_keys=False))
    mode = target.stat().st_mode & 0o777
    from facelm.checkpoint import atomic_write  # imports torch: only once there is something to write

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)  # keep the file's permissions (the temporary file is 0600)

    atomic_write(target, write)
    print(f"{args.params}: applied {args.profile}")
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``argv``, only the module of the command it names is imported."""
    parser = OneLineParser(prog="facelm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    p.add_argument("name", help="stage notebook name, e.g. 01_preprocess")
    p.add_argument("--params", default="params.yaml", help="parameters file (relative to the project root)")
    p.set_defaults(func=_stage)

    p = sub.add_parser("check", help="validate a parameters file and exit")
    p.add_argument("--params", default="params.yaml", help="parameters file (relative to the project root)")
    p.set_defaults(func=_check)

    p = sub.add_parser("profile", help="merge a profile (e.g. configs/ci.yaml) into params.yaml")
    p.add_argument("profile", help="a YAML file holding the keys to override")
    p.add_argument("--params", default="params.yaml", help="parameters file (relative to the project root)")
    p.set_defaults(func=_profile)

    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command in BUILTIN:
        modules = []
    elif command in PLUGINS:
        modules = [PLUGINS[command]]
    else:  # help, no command or an unknown one: list every command
        modules = list(dict.fromkeys(PLUGINS.values()))
    for name in modules:
        add_parser = getattr(importlib.import_module(name), "add_parser", None)
        if add_parser is not None:
            add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``facelm ...``: the exit status (0 ok, 2 refused; a message on stderr in one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    prog = f"facelm {args.command}"
    try:
        status = args.func(args)
    except (ParamsError, OSError, ValueError, RuntimeError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0

"""Resume a kept stage-02 experiment's BEGAN run to more steps (session 16's 14,000-step runs).

A ``dvc exp run -s 02_began`` experiment keeps its ``data/began`` folder, checkpoint included, in
the DVC cache. This copies that folder out of the cache of the project it runs in (the exp's ref
names it: ``git for-each-ref refs/exps``), then trains on from the checkpoint with the exp's
settings and more ``began.steps``. The trainer resumes bit-exactly, so the result is the run a
longer experiment would have made from scratch; a checkpoint whose settings differ is refused
(moved aside) by the trainer, which then starts afresh. It trains on the project's seed-0
training faces, as a stage-02-alone exp with ``-S seed=S`` did.

    python tools/extend_began.py EXP OUT_DIR --steps 14000 [-S seed=1 -S began.recon_weight=1 ...]
    python tools/validation_probe.py -S seed=0 OUT_DIR/generator.safetensors

``-S`` takes the exp's own overrides (``seed`` and ``began.*`` keys): the checkpoint holds the
settings it was made with, and only those resume.
"""
import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import yaml

from facelm.config import parse_params
from facelm.evaluation.quality import dlib_scorer
from facelm.params_file import read_params_file
from facelm.paths import project_root
from facelm.training.began import train_began

from validation_probe import with_overrides


def copy_exp_began(root: Path, exp: str, out_dir: Path) -> str:
    """Copy exp ``exp``'s ``data/began`` from the DVC cache of ``root`` into ``out_dir``;
    return the folder's md5."""
    git = ["git", "-C", str(root)]
    refs = subprocess.run(git + ["for-each-ref", "refs/exps", "--format=%(refname)"],
                          capture_output=True, text=True, check=True).stdout.split()
    ref = next((r for r in refs if r.endswith("/" + exp)), None)
    if ref is None:
        raise SystemExit(f"no experiment named {exp!r} among {len(refs)} refs/exps of {root}")
    lock = yaml.safe_load(subprocess.run(git + ["show", f"{ref}:dvc.lock"], capture_output=True,
                                         text=True, check=True).stdout)
    md5 = next(o["md5"] for o in lock["stages"]["02_began"]["outs"] if o["path"] == "data/began")
    cache = root / ".dvc" / "cache" / "files" / "md5"
    listing = cache / md5[:2] / md5[2:]
    if not listing.is_file():
        raise SystemExit(f"{exp}: data/began ({md5}) is not in {cache}; run the exp here first")
    for entry in json.loads(listing.read_text()):
        dest = out_dir / entry["relpath"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache / entry["md5"][:2] / entry["md5"][2:], dest)
    return md5


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp", help="the experiment's name (dvc exp list)")
    ap.add_argument("out_dir", type=Path, help="folder for the extended run (weights, checkpoint/)")
    ap.add_argument("--steps", type=int, required=True, help="began.steps of the extended run")
    ap.add_argument("-S", "--set", action="append", default=[], dest="sets",
                    help="the exp's overrides, as dvc exp run -S: seed=1, began.recon_weight=1")
    args = ap.parse_args()
    root = project_root()
    params = parse_params(with_overrides(read_params_file(root / "params.yaml"),
                                         args.sets + [f"began.steps={args.steps}"]))
    if not (args.out_dir / "checkpoint" / "state.pt").is_file():  # a second call resumes in place
        print(f"{args.exp}: data/began {copy_exp_began(root, args.exp, args.out_dir)} -> {args.out_dir}")
    images = np.load(root / "data" / "faces" / "train_images.npy", mmap_mode="r")
    res = train_began(images, params.began, args.out_dir, seed=params.seed, progress=False,
                      scorer=dlib_scorer(params.evaluation, params.began, params.seed))
    print(json.dumps({"steps": res.steps, "best_step": res.best_step,
                      "resumed_from": res.resumed_from, "images_per_s": res.images_per_s}))

"""``facelm synth``: turn a trained generator and L-Gen into an annotated synthetic face set.

One latent z per face feeds both G (the face) and L-Gen (its landmarks), as in the paper's
Fig. 7. Faces are written in shards so that a long run can be interrupted and resumed.
The label generator is either kind (``--lgen``; the default file follows params.yaml's
``lgen.kind``): L-Gen on z, or the heads on G's features, which also give each face's
uncertainty and, with ``--keep-frac F``, keep only the most certain share F of the faces
(:mod:`facelm.apps.synth_certain`).

    facelm synth --out synth/ -n 100000 --seed 0            # inside the project: data/ models
    facelm synth --generator G.safetensors --lgen L.safetensors --out synth/ -n 5000
    facelm synth --out synth/ -n 1000000 --format npz --device cuda --batch-size 1024 --bf16
    facelm synth --lgen data/lgen/features.safetensors --keep-frac 0.5 --out certain/ -n 5000
    python -m facelm synth ...                               # the same, without the console script
    synth("G.safetensors", "L.safetensors", "synth/", 5000)  # Python; returns the manifest

Latents. z for face ``i`` depends only on ``(seed, i)``: faces are grouped in fixed blocks
of :data:`Z_BLOCK` (1024) and block ``b`` draws ``u = default_rng([seed, b]).random((1024,
z_dim), float32)``; face ``i`` takes row ``i % 1024`` of block ``i // 1024`` and
``z = (2u - 1) * truncation``. So the same seed gives the same faces whatever the shard
size, the batch size or where a run was interrupted, and a smaller truncation only shrinks
the same z towards 0 (less varied, more typical faces). With ``--keep-frac`` the faces are
the candidates of per-shard streams that pass an uncertainty threshold fixed up front
(:mod:`facelm.apps.synth_certain`); the manifest records F, the threshold, the calibration
size and the acceptance rate.

Output folder (``--out``)::

    manifest.json              what was made, from what, and which shards are complete
    --format pts (default)     one folder per shard of --shard-size faces:
      shard_00000/00000000.png   the face, RGB PNG (lossless)
      shard_00000/00000000.pts   its landmarks, 300-W .pts in pixels (read with landmarks.read_pts)
      shard_00000/z.npy          float32 [faces in shard, z_dim], the latents, in face order
      shard_00000/landmarks.npy  float32 [faces in shard, P, 2], unit coordinates (exact)
      shard_00000/uncertainty.npy  float32 [faces in shard] (features kind only), NME units
    --format npz               one set of arrays for all N faces, as memory-mappable .npy
      images.npy                 uint8 [N, S, S, 3] RGB
      landmarks.npy              float32 [N, P, 2] unit coordinates (x / W, y / H)
      z.npy                      float32 [N, z_dim]
      uncertainty.npy            float32 [N] (features kind only)
                               (read with ``np.load(path, mmap_mode="r")``; plain .npy rather
                               than a .npz zip, because a zip can be neither memory-mapped nor
                               filled in place, and N may exceed memory)

Crash safety. A pts shard is written into a temporary folder of this run,
``.shard_00000.<pid>-<uuid>.tmp/``, and renamed to ``shard_00000/`` once all its files are written; npz arrays are filled in place as
``images.partial.npy`` etc. and renamed to their final names only when every shard is done.
The manifest (replaced atomically after every shard) lists each shard's state and has
``"complete": true`` only at the very end. Re-running the same command resumes after the
shards recorded complete whose files verify (every PNG and .pts there and non-empty, the .npy
arrays whole, the byte total the manifest recorded); a damaged shard, and anything else in
the folder, is regenerated, and "already complete" means every shard verified.

One run per folder. A run holds an exclusive lock on ``<out>/.synth.lock`` (``flock``)
until it ends; a second run into the same folder is refused in one line while the first
one runs. The kernel releases the lock however the first run ends, so a crashed run never
blocks its own resume. An existing output
folder made with another seed, N, truncation, format, shard size, precision or other models
is refused unless ``overwrite`` (which removes only what synth writes).

Speed. Batched inference under ``torch.inference_mode``, G in channels-last memory format
(G optionally under bf16 autocast;
L-Gen always in float32, since bf16 would cost ~0.5 px of landmark precision at 128 px);
PNG encoding and file writes run in a thread pool (OpenCV releases the GIL) while the
device computes the next batch.
"""
from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from pathlib import Path

from facelm.apps.synth_run import FORMATS, Z_BLOCK, latents, synth

__all__ = ["Z_BLOCK", "FORMATS", "synth", "latents", "add_parser", "run_cli"]

# the options' defaults are synth()'s own: one place for each
_DEFAULT = {k: p.default for k, p in inspect.signature(synth).parameters.items()}


def _default_model(rel: str) -> str | None:
    from facelm.paths import project_root

    try:
        return str(project_root() / rel)
    except FileNotFoundError:
        return None


def _default_lgen() -> str | None:
    """The project's label generator of the kind params.yaml names (``lgen.kind``)."""
    from facelm.config import load_params
    from facelm.evaluation.results import label_generator_path
    from facelm.paths import project_root

    try:
        root = project_root()
    except FileNotFoundError:
        return None
    return str(label_generator_path(root, load_params(root / "params.yaml").lgen.kind))


def _command_line() -> str:
    """This process's command line as a user would retype it (no absolute script paths)."""
    argv0 = Path(sys.argv[0] if sys.argv else "facelm")
    if argv0.name == "__main__.py":
        head = ["python", "-m", argv0.parent.name]
    else:
        head = [argv0.name]
    return shlex.join([*head, *sys.argv[1:]])


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse's own errors one line on stderr (no usage dump), exit status 2."""
    def error(message: str):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", metavar="PATH",
                   help="trained generator weights (.safetensors from facelm.models.began.save_model);"
                        " default: data/began/generator.safetensors under the project root "
                        "when run inside a facelm project, else required")
    p.add_argument("--lgen", metavar="PATH",
                   help="trained label generator, either kind: an L-Gen on z (.safetensors from "
                        "facelm.models.lgen.save_lgen) or one on G's features (save_feature_lgen, "
                        "trained on this --generator); default inside a facelm project: "
                        "data/lgen/lgen.safetensors, or data/lgen/features.safetensors when "
                        "params.yaml says lgen.kind: features; else required")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="output folder (created if missing); holds manifest.json and the faces; "
                        "one run at a time (a second run into it is refused)")
    p.add_argument("-n", "--num", type=int, default=1000, metavar="N",
                   help="number of faces to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULT["seed"],
                   help="non-negative integer; face i's z depends only on (seed, i), so the "
                        "same seed gives the same faces (default: %(default)s)")
    p.add_argument("--truncation", type=float, default=_DEFAULT["truncation"], metavar="T",
                   help="z is uniform in [-T, T]^z_dim (the generator's), 0 < T <= 1; smaller T "
                        "gives more typical, less varied faces (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=_DEFAULT["batch_size"], metavar="B",
                   help="faces per forward pass; raise it on a GPU (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N; auto = CUDA when available, else CPU "
                        "(default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=_DEFAULT["shard_size"], metavar="K",
                   help="faces per shard, the unit written atomically and resumed "
                        "(default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default=_DEFAULT["fmt"],
                   help="pts: per face a PNG + 300-W .pts (pixels) in shard_NNNNN/ folders; "
                        "npz: arrays images.npy uint8 [N,S,S,3], landmarks.npy float32 "
                        "[N,P,2] (unit coords), z.npy float32 [N,64], memory-mappable with "
                        "np.load(mmap_mode='r') (default: %(default)s)")
    p.add_argument("--bf16", action="store_true",
                   help="run the generator under bf16 autocast (faster on recent GPUs; "
                        "landmarks stay float32); off by default")
    p.add_argument("--workers", type=int, default=_DEFAULT["workers"], metavar="W",
                   help="threads encoding and writing PNG files (default: min(8, CPU count))")
    p.add_argument("--keep-frac", type=float, default=_DEFAULT["keep_frac"], metavar="F",
                   help="keep only the most certain share F (0 < F <= 1) of the faces: those "
                        "whose uncertainty is under the F-quantile of a seeded calibration "
                        "sample; needs a label generator on G's features (default: keep all)")
    p.add_argument("--calibration", type=int, default=_DEFAULT["calibration"], metavar="C",
                   help="random z that fix --keep-frac's threshold once per output folder "
                        "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output made with other settings or models "
                        "(removes only files synth writes); without it such a folder is "
                        "refused, and the same command resumes an interrupted run")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (faces/s) on stderr")
    p.set_defaults(func=run_cli)
    _one_line_errors(p)


_DESCRIPTION = ("Write N synthetic faces with their 49 L-Gen landmarks: one uniform z per "
                "face feeds the generator and the L-Gen. Sharded and resumable: re-run the "
                "same command after an interruption to continue.")


def add_parser(subparsers) -> None:
    """Add the ``synth`` subcommand (all options, ``func=run_cli``) to an argparse subparsers."""
    p = subparsers.add_parser("synth", help="write an annotated synthetic face data set",
                              description=_DESCRIPTION)
    _configure(p)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``facelm synth`` from parsed arguments; one ``error:`` line and status 2 on bad input."""
    prog = "facelm synth"
    ended: dict = {}
    try:
        # the same checks synth() makes, but worded with the command's option names
        for flag, value, ok, want in (
                ("-n/--num", args.num, args.num >= 1, "a positive integer"),
                ("--seed", args.seed, args.seed >= 0, "a non-negative integer"),
                ("--truncation", args.truncation, 0 < args.truncation <= 1, "in (0, 1]"),
                ("--batch-size", args.batch_size, args.batch_size >= 1, "a positive integer"),
                ("--shard-size", args.shard_size, args.shard_size >= 1, "a positive integer"),
                ("--workers", args.workers, args.workers is None or args.workers >= 1,
                 "a positive integer"),
                ("--keep-frac", args.keep_frac, args.keep_frac is None or 0 < args.keep_frac <= 1,
                 "in (0, 1]"),
                ("--calibration", args.calibration, args.calibration >= 1, "a positive integer")):
            if not ok:
                raise ValueError(f"{flag} must be {want}, got {value}")
        generator = args.generator or _default_model("data/began/generator.safetensors")
        lgen = args.lgen or _default_lgen()
        if generator is None or lgen is None:
            missing = " and ".join(f"--{k}" for k, v in (("generator", generator),
                                                           ("lgen", lgen)) if v is None)
            raise ValueError(f"{missing} required outside a facelm project")
        for flag, given, path in (("--generator", args.generator, generator),
                                  ("--lgen", args.lgen, lgen)):
            if given is None and not Path(path).is_file():
                raise FileNotFoundError(f"no {flag} given and the project's {path} does not "
                                        f"exist yet (train it with `dvc repro`)")
        manifest = synth(generator, lgen, args.out, args.num, seed=args.seed,
                         truncation=args.truncation, batch_size=args.batch_size,
                         device=args.device, shard_size=args.shard_size, fmt=args.format,
                         overwrite=args.overwrite, progress=not args.no_progress,
                         bf16=args.bf16, workers=args.workers, command=_command_line(),
                         keep_frac=args.keep_frac, calibration=args.calibration,
                         callbacks=[lambda event, state: ended.update(state)
                                    if event == "end" else None])
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    run = manifest["runs"][-1]
    if ended.get("faces") == 0:
        print(f"{args.out}: already complete ({manifest['n']} faces); nothing to do")
    else:
        rate = run.get("faces_per_second")
        resumed = f", resumed at face {run['first_face']}" if run["first_face"] else ""
        print(f"{args.out}: {run['faces']} faces ({manifest['image_size']} px, "
              f"{manifest['n_points']} points, {manifest['format']}) in {run['seconds']:.1f} s"
              f" = {rate} faces/s on {run['device']}{resumed}")
    keep = manifest.get("keep")
    if keep:
        threshold = "none" if keep["threshold"] is None else f"{keep['threshold']:.4g}"
        print(f"kept the most certain {keep['keep_frac']:g}: uncertainty <= {threshold} "
              f"(from {keep['calibration_size']} calibration faces), acceptance rate "
              f"{keep['acceptance_rate']}")
    return 0

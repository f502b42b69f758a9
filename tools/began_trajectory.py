"""Stage 02's BEGAN, trained with its quality measured at every checkpoint on VALIDATION faces.

Why: two training seeds of the same settings end 15 points apart in dlib's face-found rate
(docs/experiments.md, session 12). This says whether a seed's end point is one draw from a
trajectory that swings from checkpoint to checkpoint (then which step is kept matters) or
whether a run settles early into a better or worse generator (then the seed sets it).

It trains exactly as stage 02 does (params.yaml with ``-S key=value`` overrides, stage 01's
training faces; the measurement draws nothing from training's random streams, so the final G
is the one ``dvc exp run -s 02_began`` with the same settings writes) into ``--out``, and at
every ``began.checkpoint_every`` steps loads the checkpoint's G and prints, on the validation
faces of ``tools/validation_probe.py`` (world indices 2,000,000 on) and in the stage-00
judge's features: k-NN precision / recall and FD of 500 G(z), and dlib's found rate of
``--dlib-n`` G(z) with its standard error (z from seed 123, as the probe). Rows go to
``OUT/trajectory.json`` as they come.

    python tools/began_trajectory.py --out /tmp/traj_s1 -S seed=1

Run it in a project where stages 00 and 01 have run, with nothing else on the cores.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from facelm.checkpoint import load_state
from facelm.config import parse_params
from facelm.data.faceset import load_split
from facelm.data.world import render_faces
from facelm.evaluation.quality import dlib_found, dlib_scorer, draw_faces, generator_quality
from facelm.models.began import Generator
from facelm.models.detector import load_detector
from facelm.params_file import read_params_file
from facelm.paths import project_root
from facelm.training.began import train_began

from validation_probe import N, VALIDATION_START, with_overrides


class Trajectory:
    """A ``train_began`` callback: G's validation quality at each "checkpoint" event."""

    def __init__(self, params, judge, val, out: Path, dlib_n: int, n: int = N):
        """``val``: 2 ``n`` validation faces (the first ``n`` against G, the rest the floor)."""
        self.params, self.judge, self.val, self.out, self.dlib_n = params, judge, val, out, dlib_n
        self.n = n
        self.rows: list[dict] = []

    def __call__(self, event: str, state: dict) -> None:
        if event != "checkpoint":
            return
        t0 = time.perf_counter()
        p = self.params.began
        G = Generator(self.params.image_size, p.width, p.z_dim, skip=p.skip)
        G.load_state_dict(load_state(state["path"])["G"])
        G.eval()
        with torch.random.fork_rng():  # training's streams are its own; keep the global one too
            drawn = draw_faces(G, max(self.n, self.dlib_n), seed=123)
        n = self.n
        row = {"step": int(state["step"]),
               **generator_quality(self.judge, self.val[:n], self.val[n:2 * n], drawn[:n])}
        row["dlib_found"], row["dlib_found_se"] = dlib_found(drawn[:self.dlib_n], self.params.evaluation)
        row["eval_s"] = time.perf_counter() - t0
        self.rows.append(row)
        self.out.write_text(json.dumps(self.rows, indent=1) + "\n")
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                          if not k.startswith("floor_")}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for G, checkpoint and trajectory.json")
    ap.add_argument("-S", "--set", action="append", default=[], dest="sets")
    ap.add_argument("--dlib-n", type=int, default=2000)
    args = ap.parse_args()
    root = project_root()
    params = parse_params(with_overrides(read_params_file(root / "params.yaml"), args.sets))
    judge = load_detector(root / "data" / "detector" / "detector.safetensors", device="cpu")
    # the validation faces of the seed-0 world, whatever the training seed (as the probe)
    val, _ = render_faces(2 * N, params.image_size, 0, VALIDATION_START, world=params.world)
    faces = load_split(root / "data" / "faces", "train")
    args.out.mkdir(parents=True, exist_ok=True)
    traj = Trajectory(params, judge, val, args.out / "trajectory.json", args.dlib_n)
    t0 = time.perf_counter()
    result = train_began(faces.images, params.began, args.out, seed=params.seed, callbacks=[traj],
                         scorer=dlib_scorer(params.evaluation, params.began, params.seed))
    print(f"trained {result.steps} steps in {time.perf_counter() - t0:.0f} s "
          f"(loop {result.seconds:.0f} s); best step {result.best_step}", flush=True)


if __name__ == "__main__":
    main()

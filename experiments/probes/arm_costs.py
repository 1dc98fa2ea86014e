"""Seconds per training step of each arm of a sweep, and the sweep's projected wall time.

`tsr compare --status` estimates what is left from the arms that have run; an
arm that has not run has no estimate. This probe times every arm: it builds
each arm's first-seed run (from the sweep's trained start, OUT/start, which
must exist) and times `--steps` training steps and one held-out evaluation
(greedy and, when the sweep asks, sampled). Nothing is written to the sweep's
run directories.

A cell's projection is its steps x seconds per step plus its evaluations
(every `trainer.eval_every` steps, and the initial one) x seconds per
evaluation; the sweep's is the sum over its cells, in core-hours (one cell a
core). The first steps from the start are timed, and later steps can be
cheaper or dearer (episodes get shorter as the policy learns), and the
timings are this machine's at the time, with whatever else runs beside: an
estimate, not a measurement of the sweep.

    python experiments/probes/arm_costs.py experiments/sweeps/sokoban_ppo_sft.yaml [--steps 2]
        [--arm A ...] [--out results/sokoban_ppo_sft] [--csv FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tsr_cli import compare  # noqa: E402
from tsr_cli.train.checkpoint import latest_checkpoint  # noqa: E402
from tsr_cli.train.trainer import Trainer  # noqa: E402


def time_arm(sweep: compare.Sweep, arm: compare.Arm, start: Path | None, steps: int) -> dict:
    seed = sweep.arm_seeds(arm)[0]
    with tempfile.TemporaryDirectory() as scratch:
        cfg = sweep.config(arm, seed, Path(scratch) / "run", start)
        trainer = Trainer(cfg)
        begin = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        per_step = (time.perf_counter() - begin) / steps
        begin = time.perf_counter()
        trainer.evaluate()
        per_eval = time.perf_counter() - begin
    t = cfg.trainer
    evaluations = 1 + (t.steps // t.eval_every if t.eval_every else 1)
    cells = len(sweep.arm_seeds(arm))
    cell_seconds = t.steps * per_step + evaluations * per_eval
    return {"arm": arm.name, "seeds": cells, "steps": t.steps, "seconds_per_step": round(per_step, 2),
            "seconds_per_eval": round(per_eval, 2), "cell_hours": round(cell_seconds / 3600, 2),
            "arm_core_hours": round(cells * cell_seconds / 3600, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--steps", type=int, default=2, help="training steps timed per arm")
    parser.add_argument("--arm", action="append", default=[], help="only this arm (repeatable)")
    parser.add_argument("--out", type=Path, help="the sweep's output directory (default results/<name>)")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    sweep = compare.load_sweep(args.sweep)
    out = args.out or compare.default_out(sweep)
    start = None
    if sweep.start is not None:
        start = latest_checkpoint(out / "start")
        if start is None:
            print(f"no trained start in {out / 'start'}: run the sweep (its none arm) first", file=sys.stderr)
            return 2
    arms = [arm for arm in sweep.arms if not args.arm or arm.name in args.arm]
    rows = []
    for arm in arms:
        rows.append(time_arm(sweep, arm, start, args.steps))
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    print(f"projected: {frame['arm_core_hours'].sum():.1f} core-hours for these arms "
          f"({math.ceil(frame['seeds'].sum())} cells)")
    if args.csv:
        frame.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

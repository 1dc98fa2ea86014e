"""Data parallelism on the CPU: one `tsr train` at world size 1 and at 2 (torchrun, gloo).

    python benchmarks/data_parallel.py [--config FILE] [--steps 5] [--nproc 2] [--one-thread]

Trains the same config (same global batch and seeds) in one process, then
across `--nproc` processes under torchrun, and reads each run's
metrics.jsonl: seconds per training step (rollout + filter + logprobs +
advantages + update, the mean over steps) and its split by phase, with the
evaluations apart. torchrun gives each process OMP_NUM_THREADS=1, and the
tiny policy pins torch to one thread in any process, so with it each
process uses one core; for other policies a plain process keeps torch's
default (a thread per core), and `--one-thread` adds a single-process run
with one thread to separate the two effects.
The machine's load average is printed before and after, as other jobs
share it. Last stdout line: one JSON object, `speedup` = seconds per step
at world size 1 / at world size N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("rollout", "filter", "logprobs", "advantages", "update")


def train(config: str, steps: int, run_dir: Path, nproc: int, env: dict) -> float:
    """Run `tsr train` (under torchrun when nproc > 1); returns its wall seconds, start-up included."""
    args = ["-m", "tsr_cli.cli", "train", "--config", config, "--steps", str(steps), "--run-dir", str(run_dir)]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, env={**os.environ, **env},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def phases(run_dir: Path) -> dict:
    """Mean seconds per training step, by phase, and the evaluations' total."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["step"] > 0]
    split = {phase: round(fmean(r[f"time_{phase}"] for r in steps), 4) for phase in PHASES}
    return {"seconds_per_step": round(sum(split.values()), 4), **split,
            "eval_seconds": round(sum(r.get("time_eval", 0.0) for r in steps), 3),
            "val_success_rate": steps[-1].get("val_success_rate")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/tiny/frozenlake_grpo_none.yaml")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--one-thread", action="store_true", help="also a single process with one thread")
    args = parser.parse_args()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    arms = [("world_size_1", 1, {})]
    if args.one_thread:
        arms.append(("world_size_1_one_thread", 1, {"OMP_NUM_THREADS": "1"}))
    arms.append((f"world_size_{args.nproc}", args.nproc, {}))
    load_before = os.getloadavg()
    out: dict = {"config": args.config, "steps": args.steps, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, nproc, extra in arms:
            wall = train(args.config, args.steps, Path(tmp) / name, nproc, {**env, **extra})
            out[name] = {**phases(Path(tmp) / name), "process_wall_seconds": round(wall, 2)}
            print(name, json.dumps(out[name]), flush=True)
    out["load_average_before"] = [round(x, 2) for x in load_before]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    last = out[f"world_size_{args.nproc}"]
    out["speedup"] = round(out["world_size_1"]["seconds_per_step"] / last["seconds_per_step"], 3)
    out["speedup_by_phase"] = {p: round(out["world_size_1"][p] / last[p], 3) for p in ("rollout", "update") if last[p]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Wall time of `tsr compare` on the local executor against Ray, on this machine's cores (issue 14).

Two cell sets, each run three ways in one go, every run from an empty --out:

    toy              experiments/sweeps/toy.yaml with seeds [0, 1]: 2 arms x 2 seeds,
                     two training steps each (mostly start-up cost)
    frozenlake_grpo  experiments/sweeps/pre_fix/frozenlake_grpo.yaml (the from-scratch sweep:
                     no start to train first), arms none and beam, seed 0,
                     trainer.steps = --steps (the sweep's real batch: 8 x 8 rollouts, 64
                     held-out episodes)

    local            cells one after another in one process
    ray              a local Ray started by the command; one CPU per cell, so two cells at once
    ray_2cpu         `resources: {num_cpus: 2}`: one cell at a time with two CPUs; the tiny
                     policy pins torch to one thread, so the second CPU sits idle

Each command's wall time includes its start-up (Python, torch, and for Ray the cluster
and its workers), as a user would see it. Outputs of the three are checked to be the
same but for wall time. On a shared machine other people's jobs swing wall time by
several times, so the three run in turn `--repeats` times and each one's fastest run
counts (the samples are printed too). The last line is one JSON object; `ratio` is
local / ray wall time on the frozenlake_grpo cells.

    .venv/bin/python benchmarks/executors.py [--steps 4] [--repeats 2]
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

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "experiments/sweeps"
EXECUTORS = {"local": ([], None), "ray": (["--executor", "ray"], None),
             "ray_2cpu": (["--executor", "ray"], {"num_cpus": 2, "num_gpus": 0})}


def cell_set(name: str, steps: int) -> dict:
    """The sweep file for one cell set, with `base` made absolute so it can live elsewhere."""
    path = SWEEPS / ("toy.yaml" if name == "toy" else "pre_fix/frozenlake_grpo.yaml")
    sweep = yaml.safe_load(path.read_text())
    if name == "toy":
        sweep["seeds"] = [0, 1]
    else:
        sweep["seeds"] = [0]
        sweep["arms"] = [arm for arm in sweep["arms"] if arm["name"] in ("none", "beam")]
        sweep["overrides"]["trainer.steps"] = steps
    sweep["base"] = str((path.parent / sweep["base"]).resolve())
    return sweep


def timed_compare(sweep: dict, resources: dict | None, flags: list[str], work: Path, label: str) -> dict:
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump({**sweep, **({"resources": resources} if resources else {})}))
    out = work / f"{label}-out"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tsr_cli.cli", "compare", str(path), "--out", str(out), *flags],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{label} failed:\n{done.stderr[-3000:]}")
    results = pd.read_csv(out / "results.csv")
    return {"wall_s": round(wall, 1), "cell_train_s": round(float(results["wall_seconds"].sum()), 1),
            "numbers": results.drop(columns=["wall_seconds", "run_dir"]).to_csv(index=False)}


def summarise(samples: dict, cells: int) -> dict:
    """Per executor the fastest wall time (and all of them); speed-ups of Ray over local from those."""
    best = {label: min(run["wall_s"] for run in runs) for label, runs in samples.items()}
    numbers = {run.pop("numbers") for runs in samples.values() for run in runs}
    return {"cells": cells, "same_numbers": len(numbers) == 1,
            **{label: {"wall_s": best[label], "wall_s_all": [run["wall_s"] for run in runs],
                       "cell_train_s_all": [run["cell_train_s"] for run in runs]}
               for label, runs in samples.items()},
            "speedup_ray": round(best["local"] / best["ray"], 2),
            "speedup_ray_2cpu": round(best["local"] / best["ray_2cpu"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4, help="training steps of the frozenlake_grpo cells")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each executor; the fastest counts")
    args = parser.parse_args()
    report = {"cores": os.cpu_count(), "load_avg_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("toy", "frozenlake_grpo"):
            sweep, samples = cell_set(name, args.steps), {label: [] for label in EXECUTORS}
            for repeat in range(args.repeats):
                for label, (flags, resources) in EXECUTORS.items():
                    run = timed_compare(sweep, resources, flags, Path(tmp), f"{name}-{label}-{repeat}")
                    samples[label].append(run)
                    print(f"{name:16s} {label:9s} wall {run['wall_s']:7.1f} s   (cells' own training "
                          f"{run['cell_train_s']:.1f} s; load {os.getloadavg()[0]:.1f})", flush=True)
            report[name] = summarise(samples, len(sweep["arms"]) * len(sweep["seeds"]))
    report["load_avg_after"] = round(os.getloadavg()[0], 2)
    report["ratio"] = report["frozenlake_grpo"]["speedup_ray"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()

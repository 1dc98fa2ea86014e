"""Wall time of `tsr compare` on the local executor against Ray, on this machine's cores (issue 14).

Two cell sets, each run three ways in one go, every run from an empty --out:

    toy              experiments/sweeps/toy.yaml with seeds [0, 1]: 2 arms x 2 seeds,
                     two training steps each (mostly start-up cost)
    frozenlake_grpo  experiments/sweeps/frozenlake_grpo.yaml, arms none and beam, seed 0,
                     trainer.steps = --steps (the sweep's real batch: 8 x 8 rollouts, 64
                     held-out episodes)

    local            cells one after another in one process
    ray              a local Ray started by the command; one CPU per cell, so two cells at once
    ray_2cpu         `resources: {num_cpus: 2}`: one cell at a time with two CPUs; the tiny
                     policy pins torch to one thread, so the second CPU sits idle

Each command's wall time includes its start-up (Python, torch, and for Ray the cluster
and its workers), as a user would see it. Outputs of the three are checked to be the
same but for wall time. The last line is one JSON object; `ratio` is local / ray wall
time on the frozenlake_grpo cells.

    .venv/bin/python benchmarks/executors.py [--steps 4]
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
    if name == "toy":
        sweep = yaml.safe_load((SWEEPS / "toy.yaml").read_text())
        sweep["seeds"] = [0, 1]
    else:
        sweep = yaml.safe_load((SWEEPS / "frozenlake_grpo.yaml").read_text())
        sweep["seeds"] = [0]
        sweep["arms"] = [arm for arm in sweep["arms"] if arm["name"] in ("none", "beam")]
        sweep["overrides"]["trainer.steps"] = steps
    sweep["base"] = str((SWEEPS / sweep["base"]).resolve())
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4, help="training steps of the frozenlake_grpo cells")
    args = parser.parse_args()
    report = {"cores": os.cpu_count(), "load_avg_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("toy", "frozenlake_grpo"):
            sweep, runs = cell_set(name, args.steps), {}
            for label, (flags, resources) in EXECUTORS.items():
                runs[label] = timed_compare(sweep, resources, flags, Path(tmp), f"{name}-{label}")
                print(f"{name:16s} {label:9s} wall {runs[label]['wall_s']:7.1f} s   "
                      f"(cells' own training {runs[label]['cell_train_s']:.1f} s)", flush=True)
            same = len({run.pop("numbers") for run in runs.values()}) == 1
            report[name] = {**runs, "cells": len(sweep["arms"]) * len(sweep["seeds"]), "same_numbers": same,
                            "speedup_ray": round(runs["local"]["wall_s"] / runs["ray"]["wall_s"], 2),
                            "speedup_ray_2cpu": round(runs["local"]["wall_s"] / runs["ray_2cpu"]["wall_s"], 2)}
    report["load_avg_after"] = round(os.getloadavg()[0], 2)
    report["ratio"] = report["frozenlake_grpo"]["speedup_ray"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()

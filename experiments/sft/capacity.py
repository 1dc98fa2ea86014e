"""The capacity study: which `tiny` size, after SFT on how many demonstrations, reaches
greedy held-out success >= 0.8x the expert's (issue 11).

Reads a grid (experiments/sft/capacity.yaml), runs each cell's `tsr sft` command
one after another into runs/sft-capacity/ (a cell whose summary.json exists is
skipped, and one stopped part-way resumes from its last checkpoint), then writes results/sft/capacity.csv
and results/sft/capacity.png from the summaries. Rows already in the committed CSV whose run
dirs are gone (another machine, a cleaned runs/) are kept; their cells are not run again.

    python experiments/sft/capacity.py [GRID.yaml] [--only ENV] [--size LxH] [--demos N] [--table-only]

--size and --demos pick cells out of the grid (to run the decisive ones first); the CSV
and the plot always hold every cell that has finished.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNS = Path("runs/sft-capacity")
OUT = Path("results/sft")
COLUMNS = ["env", "size", "demos", "epochs", "greedy_success", "expert_success", "command"]
#: the issue's bar: greedy held-out success at least this fraction of the expert's
BAR = 0.8
#: a cell checkpoints every this many optimiser steps, so an interrupted study loses little
SAVE_EVERY = 100


def cells(grid: dict):
    """(env, size, demos, epochs, command) for every cell of the grid, in order."""
    for env, spec in grid["envs"].items():
        for size in spec.get("sizes", grid["sizes"]):
            layers, hidden = (int(x) for x in size.split("x"))
            for demos in spec.get("demos", grid.get("demos")):
                command = (f"tsr sft --config {spec['config']} --demos {demos} --epochs {spec['epochs']} "
                           f"--set policy.tiny_layers={layers} --set policy.tiny_hidden={hidden}")
                yield env, size, demos, spec["epochs"], command


def run_dir(env: str, size: str, demos: int, epochs: int) -> Path:
    return RUNS / f"{env}-{size}-d{demos}-e{epochs}"


def run_cell(env, size, demos, epochs, command) -> None:
    """Run a cell's command into its run dir; a cell stopped part-way resumes from its last
    checkpoint (every SAVE_EVERY steps: checkpointing does not change the result)."""
    target = run_dir(env, size, demos, epochs)
    if (target / "summary.json").is_file():
        return
    if (target / "sft.yaml").is_file():
        argv = [sys.executable, "-m", "tsr_cli.cli", "sft", "--resume", str(target)]
    else:
        argv = [sys.executable, "-m", "tsr_cli.cli", *shlex.split(command)[1:], "--run-dir", str(target),
                "--set", f"sft.save_every={SAVE_EVERY}", "--overwrite"]
    print(f"[capacity] {command}", flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)


def committed_rows(path: Path | None) -> dict:
    """(env, size, demos, epochs) -> row, for each row of a committed capacity CSV ({} if none)."""
    import pandas as pd

    if path is None or not path.is_file():
        return {}
    return {tuple(row[COLUMNS[:4]]): list(row[COLUMNS]) for _, row in pd.read_csv(path).iterrows()}


def table(grid: dict, committed: Path | None = None):
    """One row per finished cell of the grid. A cell's run dir, where it exists, gives its row;
    otherwise the row already in `committed` (the CSV in results/) stands, so a study continued on
    another machine, or after runs/ was cleaned, keeps the cells it finished before."""
    import pandas as pd

    known = committed_rows(committed)
    rows = []
    for env, size, demos, epochs, command in cells(grid):
        path = ROOT / run_dir(env, size, demos, epochs) / "summary.json"
        if path.is_file():
            s = json.loads(path.read_text())
            rows.append([env, size, demos, epochs, s["final_val_success_rate"], s["expert_val_success_rate"],
                         command])
        elif (env, size, demos, epochs) in known:
            rows.append(known[(env, size, demos, epochs)])
    return pd.DataFrame(rows, columns=COLUMNS)


def plot(frame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(frame["env"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        part = frame[frame["env"] == env]
        for size, rows in part.groupby("size", sort=False):
            ax.plot(rows["demos"], rows["greedy_success"], marker="o", label=f"tiny {size}")
        expert = part["expert_success"].mean()
        ax.axhline(expert, color="black", lw=1, label=f"expert {expert:.2f}")
        ax.axhline(BAR * expert, color="black", lw=1, ls="--", label=f"{BAR:g} x expert")
        ax.set(xscale="log", xlabel="demonstrations (training seeds)", ylabel="greedy held-out success",
               title=env, ylim=(0, 1.02))
        demos = sorted(set(part["demos"]))
        ax.set_xticks(demos, [f"{d:,}" for d in demos])  # the grid's values, not log-scale minor ticks
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", nargs="?", default=str(ROOT / "experiments/sft/capacity.yaml"))
    parser.add_argument("--only", help="run only this environment's cells")
    parser.add_argument("--size", help="run only this size's cells (LAYERSxHIDDEN)")
    parser.add_argument("--demos", type=int, help="run only the cells with this many demonstrations")
    parser.add_argument("--table-only", action="store_true", help="write the CSV and plot; run nothing")
    args = parser.parse_args()
    grid = yaml.safe_load(Path(args.grid).read_text())
    committed = ROOT / OUT / "capacity.csv"
    if not args.table_only:
        done = committed_rows(committed)
        # cheapest cells first: the small-data results come early
        for env, size, demos, epochs, command in sorted(cells(grid), key=lambda cell: cell[2]):
            if (env, size, demos, epochs) in done and not (ROOT / run_dir(env, size, demos, epochs)).is_dir():
                continue  # committed from a run dir this machine does not have
            if args.only in (None, env) and args.size in (None, size) and args.demos in (None, demos):
                run_cell(env, size, demos, epochs, command)
    frame = table(grid, committed)
    (ROOT / OUT).mkdir(parents=True, exist_ok=True)
    frame.to_csv(committed, index=False)
    plot(frame, ROOT / OUT / "capacity.png")
    print(frame.drop(columns="command").to_string(index=False))


if __name__ == "__main__":
    main()

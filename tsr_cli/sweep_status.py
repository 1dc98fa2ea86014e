"""Where a sweep stands, without training anything: `tsr compare SWEEP --status`.

A sweep on this machine runs for days and across sessions, so before starting
or resuming one a user wants to know what is done and what is left. Per cell
(arm x seed): its state (`done`; `running`, being trained by a `tsr compare` now;
`resume`, started and stopped; `recorded`, a row in OUT/results.csv without its
run dir, made on another machine; `new`), the steps it has logged of
its total, its last held-out success, and the seconds it has taken so far:
the last `wall_seconds` of its `metrics.jsonl`, which sums every step's
timings (training and the periodic held-out evaluations) across resumes; the
initial evaluation is not timed. A sweep's `start:` is a row of its own.

What is left is an estimate, and says so: each unfinished cell's remaining
steps at the mean seconds per step of its arm's cells that have logged steps
(the cell's own included). An arm with no logged step has no estimate, and
neither has the total. Seconds are those of one cell on one core as measured
here, whatever else shared the machine then; `--executor ray` runs two cells
at once on two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from tsr_cli.compare import is_training, read_results, recorded_rows, run_dir
from tsr_cli.sweep_file import Sweep
from tsr_cli.train.run import read_metrics

COLUMNS = ["arm", "seed", "state", "step", "steps", "success", "seconds", "seconds_left"]


def cell_status(sweep: Sweep, out: Path) -> pd.DataFrame:
    """One row per cell (the start first, when the sweep has one), in sweep order."""
    rows = [_start_row(Path(out) / "start")] if sweep.start is not None else []
    recorded = recorded_rows(out)
    for arm in sweep.arms:
        for seed in sweep.arm_seeds(arm):
            steps = sweep.config(arm, seed).trainer.steps
            progress = _run_progress(run_dir(out, arm.name, seed))
            if progress["state"] == "new" and (arm.name, seed) in recorded:
                progress = _recorded_progress(recorded[arm.name, seed])
            rows.append({"arm": arm.name, "seed": seed, "steps": steps, **progress})
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["seconds_left"] = _estimates(frame)
    return frame


def _run_progress(directory: Path) -> dict:
    """state, steps logged, last held-out success and seconds taken of one RL run dir."""
    if not (directory / "config.yaml").is_file():
        return {"state": "new", "step": 0, "success": math.nan, "seconds": 0.0}
    records = read_metrics(directory)
    trained = [r for r in records if r["step"] > 0]
    evaluated = [r for r in records if "val_success_rate" in r]
    seconds = trained[-1].get("wall_seconds", 0.0) if trained else 0.0  # periodic evaluations included
    done = (directory / "summary.json").is_file()
    return {"state": "done" if done else "running" if is_training(directory) else "resume",
            "step": trained[-1]["step"] if trained else 0,
            "success": evaluated[-1]["val_success_rate"] if evaluated else math.nan,
            "seconds": float(seconds)}


def _recorded_progress(row: dict) -> dict:
    """A cell finished elsewhere: its results.csv row, without its run dir (`--keep-recorded`)."""
    return {"state": "recorded", "step": int(row["steps"]), "success": float(row["final_val_success_rate"]),
            "seconds": float(row["wall_seconds"])}


def _start_row(directory: Path) -> dict:
    """The start as a row: a `tsr sft` start's optimiser steps, or a `tsr train` start's steps."""
    row = {"arm": "(start)", "seed": math.nan}
    if (directory / "sft.yaml").is_file():
        from tsr_cli.sft import load_sft_config

        cfg = load_sft_config(directory / "sft.yaml")
        total = cfg.sft.epochs * cfg.sft.steps_per_epoch(cfg.sft.demos)  # successes_only may leave fewer
        if (directory / "summary.json").is_file():
            summary = json.loads((directory / "summary.json").read_text())
            return {**row, "state": "done", "step": summary["steps"], "steps": summary["steps"],
                    "success": summary["final_val_success_rate"],
                    "seconds": summary["train_seconds"] + summary["demo_seconds"]}
        records = read_metrics(directory)
        return {**row, "state": "resume", "step": records[-1]["step"] if records else 0, "steps": total,
                "success": math.nan, "seconds": records[-1]["wall_seconds"] if records else 0.0}
    if (directory / "config.yaml").is_file():
        from tsr_cli.train.config import load_config

        return {**row, "steps": load_config(directory / "config.yaml").trainer.steps, **_run_progress(directory)}
    return {**row, "state": "new", "step": 0, "steps": math.nan, "success": math.nan, "seconds": 0.0}


def _estimates(frame: pd.DataFrame) -> pd.Series:
    """Seconds left per cell: remaining steps x its arm's measured seconds per step (NaN if unmeasured)."""
    logged = frame[frame["step"] > 0].groupby("arm")[["seconds", "step"]].sum()
    rate = logged["seconds"] / logged["step"]
    left = (frame["steps"] - frame["step"]).clip(lower=0)
    per_step = frame["arm"].map(rate)
    return left.where(left == 0, left * per_step)


def totals(frame: pd.DataFrame) -> dict:
    """cells, done, seconds spent, and seconds left (NaN when some unfinished arm is unmeasured)."""
    cells = frame[frame["arm"] != "(start)"]
    return {"cells": len(cells), "done": int(cells["state"].isin(["done", "recorded"]).sum()),
            "seconds": float(frame["seconds"].sum()),
            "seconds_left": float(frame["seconds_left"].sum(min_count=len(frame)))}


def committed_cost(sweep: Sweep, out: Path) -> dict:
    """What running the whole sweep costs, from its committed files alone (no run dirs needed).

    Measured: each finished cell's `wall_seconds` in OUT/results.csv. Estimated: each cell not in
    results.csv at its arm's mean measured seconds a cell. An arm with no finished cell has no
    estimate: it is named in `unmeasured`, and `seconds_left` is then a lower bound. A finished
    start (OUT/start/summary.json, committed) is reused and costs nothing; one not trained yet is
    named `(start)` in `unmeasured`.
    """
    path = Path(out) / "results.csv"
    rows = read_results(path) if path.is_file() else pd.DataFrame(columns=["arm", "seed", "wall_seconds"])
    cells, done, seconds, left, unmeasured = 0, 0, 0.0, 0.0, []
    if sweep.start is not None and not (Path(out) / "start" / "summary.json").is_file():
        unmeasured.append("(start)")
    for arm in sweep.arms:
        seeds = sweep.arm_seeds(arm)
        ran = rows[(rows["arm"] == arm.name) & rows["seed"].isin(seeds)]["wall_seconds"].astype(float)
        cells, done, seconds = cells + len(seeds), done + len(ran), seconds + float(ran.sum())
        if len(ran) < len(seeds):
            if len(ran):
                left += (len(seeds) - len(ran)) * float(ran.mean())
            else:
                unmeasured.append(arm.name)
    return {"cells": cells, "done": done, "seconds": seconds, "seconds_left": left, "unmeasured": unmeasured}


def table(frame: pd.DataFrame, title: str) -> Table:
    """The cells as a rich table: hours spent and, estimated, left."""
    view = Table(title=title, title_justify="left")
    for name in ("arm", "seed", "state", "steps", "success", "hours", "left (est.)"):
        view.add_column(name, justify="left" if name in ("arm", "state") else "right", no_wrap=True)
    for row in frame.itertuples():
        view.add_row(row.arm, "" if pd.isna(row.seed) else str(int(row.seed)), row.state,
                     f"{row.step}/{'?' if pd.isna(row.steps) else int(row.steps)}",
                     "" if pd.isna(row.success) else f"{row.success:.3f}", f"{row.seconds / 3600:.2f}",
                     "?" if pd.isna(row.seconds_left) else f"{row.seconds_left / 3600:.2f}")
    return view


def totals_line(total: dict) -> str:
    left = "unknown (an unfinished arm has no measured step yet)" if math.isnan(total["seconds_left"]) else \
        f"about {total['seconds_left'] / 3600:.1f}"
    return (f"{total['done']} of {total['cells']} cells done; {total['seconds'] / 3600:.1f} core-hours spent, "
            f"{left} left at the measured seconds per step (one core a cell; --executor ray runs two at "
            "once on two cores)")

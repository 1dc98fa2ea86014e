"""`tsr compare --status`: each cell's progress, the time spent, and an estimate of what is left."""

import json
import math
from pathlib import Path

import pytest

from tsr_cli import compare, sweep_status
from tsr_cli.cli import main
from tsr_cli.train.config import dump_config

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments/sweeps/toy.yaml"  # arms none and beam, seed 0, 2 steps


def fake_run(out: Path, arm: str, records: list[dict], done: bool) -> None:
    spec = compare.load_sweep(SWEEP)
    directory = compare.run_dir(out, arm, 0)
    directory.mkdir(parents=True)
    dump_config(spec.config(next(a for a in spec.arms if a.name == arm), 0, directory), directory / "config.yaml")
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (directory / "summary.json").write_text("{}")


def test_progress_seconds_and_the_estimate_of_what_is_left(tmp_path):
    # wall_seconds already holds each step's time_eval (the trainer sums every time_* key)
    fake_run(tmp_path, "none", [{"step": 0, "val_success_rate": 0.25},
                                {"step": 1, "wall_seconds": 12.0, "time_eval": 2.0, "val_success_rate": 0.5},
                                {"step": 2, "wall_seconds": 24.0, "time_eval": 2.0, "val_success_rate": 0.75}],
             done=True)
    frame = sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path)
    assert list(frame["arm"]) == ["none", "beam"] and list(frame["state"]) == ["done", "new"]
    none, beam = frame.iloc[0], frame.iloc[1]
    assert (none["step"], none["steps"], none["success"], none["seconds"]) == (2, 2, 0.75, 24.0)
    assert none["seconds_left"] == 0 and math.isnan(beam["seconds_left"])  # beam: no step measured yet
    assert math.isnan(sweep_status.totals(frame)["seconds_left"])

    fake_run(tmp_path, "beam", [{"step": 0, "val_success_rate": 0.25}, {"step": 1, "wall_seconds": 30.0}],
             done=False)
    frame = sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path)
    beam = frame.iloc[1]
    assert (beam["state"], beam["step"], beam["success"]) == ("resume", 1, 0.25)
    assert beam["seconds_left"] == pytest.approx(30.0)  # one step left at beam's 30 s a step
    assert sweep_status.totals(frame) == {"cells": 2, "done": 1, "seconds": 54.0, "seconds_left": 30.0}


def test_status_from_the_cli_trains_nothing(tmp_path, capsys):
    fake_run(tmp_path, "none", [{"step": 1, "wall_seconds": 3600.0}], done=False)
    assert main(["compare", str(SWEEP), "--out", str(tmp_path), "--status"]) == 0
    text = capsys.readouterr().out
    assert "resume" in text and "1/2" in text and "0 of 2 cells done; 1.0 core-hours spent, unknown" in text
    assert not (tmp_path / "runs/beam-s0").exists() and not (tmp_path / "results.csv").exists()


def test_a_cell_recorded_without_its_run_dir_counts_as_done(tmp_path):
    """A committed results.csv row, its run dir left on the machine that trained it."""
    (tmp_path / "results.csv").write_text("arm,seed,steps,final_val_success_rate,wall_seconds\nnone,0,2,0.5,40\n")
    frame = sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path)
    assert list(frame["state"]) == ["recorded", "new"]
    none = frame.iloc[0]
    assert (none["step"], none["success"], none["seconds"], none["seconds_left"]) == (2, 0.5, 40.0, 0)
    assert sweep_status.totals(frame)["done"] == 1


def test_an_sft_start_is_a_row_of_its_own(tmp_path):
    import dataclasses

    import yaml

    from tsr_cli.sft import load_sft_config

    config = ROOT / "experiments/sft/sokoban_tiny.yaml"
    spec = dataclasses.replace(compare.load_sweep(SWEEP), start=config)
    start = tmp_path / "start"
    start.mkdir()
    cfg = load_sft_config(config, {"sft.demos": 10, "sft.batch_size": 4, "sft.epochs": 2})
    (start / "sft.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (start / "metrics.jsonl").write_text(json.dumps({"step": 2, "wall_seconds": 8.0}) + "\n")
    row = sweep_status.cell_status(spec, tmp_path).iloc[0]
    assert (row["arm"], row["state"], row["step"], row["steps"], row["seconds"]) == ("(start)", "resume", 2, 6, 8.0)
    assert row["seconds_left"] == pytest.approx(16.0)  # 4 steps at 4 s
    (start / "summary.json").write_text(json.dumps({"steps": 6, "final_val_success_rate": 0.5,
                                                    "train_seconds": 20.0, "demo_seconds": 1.0}))
    row = sweep_status.cell_status(spec, tmp_path).iloc[0]
    assert (row["state"], row["success"], row["seconds"], row["seconds_left"]) == ("done", 0.5, 21.0, 0.0)


def test_the_cost_of_a_whole_sweep_from_its_committed_files(tmp_path):
    import dataclasses

    spec = dataclasses.replace(compare.load_sweep(SWEEP), start=ROOT / "experiments/sft/sokoban_tiny.yaml")
    (tmp_path / "results.csv").write_text("arm,seed,wall_seconds\nnone,0,7200\nnone,9,50\n")
    cost = sweep_status.committed_cost(spec, tmp_path)  # no run dirs: only the committed files count
    assert cost == {"cells": 2, "done": 1, "seconds": 7200.0, "seconds_left": 0.0,
                    "unmeasured": ["(start)", "beam"]}  # seed 9 is not the sweep's; the start is not made
    (tmp_path / "start").mkdir()
    (tmp_path / "start/summary.json").write_text("{}")  # a committed start is reused: no cost, no estimate
    assert sweep_status.committed_cost(spec, tmp_path)["unmeasured"] == ["beam"]


def test_a_cell_another_process_is_training_shows_as_running(tmp_path):
    import fcntl

    fake_run(tmp_path, "none", [{"step": 1, "wall_seconds": 5.0}], done=False)
    assert sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path).iloc[0]["state"] == "resume"
    with open(compare.cell_lock(compare.run_dir(tmp_path, "none", 0)), "a") as held:  # as train_run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path).iloc[0]["state"] == "running"
    assert sweep_status.cell_status(compare.load_sweep(SWEEP), tmp_path).iloc[0]["state"] == "resume"

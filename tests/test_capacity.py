"""The capacity study's table: committed rows survive a machine without their run dirs."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

GRID = {"sizes": ["2x32", "2x64"],
        "envs": {"sokoban": {"config": "experiments/sft/sokoban_tiny.yaml", "demos": [256, 512], "epochs": 10}}}


def load_capacity():
    spec = importlib.util.spec_from_file_location("capacity", ROOT / "experiments/sft/capacity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finish(capacity, root, size, demos, greedy):
    run = root / capacity.run_dir("sokoban", size, demos, 10)
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"final_val_success_rate": greedy,
                                                  "expert_val_success_rate": 1.0}))


def test_committed_rows_stay_and_a_run_dir_overrides_its_row(tmp_path, monkeypatch):
    capacity = load_capacity()
    monkeypatch.setattr(capacity, "ROOT", tmp_path)
    committed = tmp_path / "capacity.csv"
    command = "tsr sft --config experiments/sft/sokoban_tiny.yaml --demos 256 --epochs 10"
    pd.DataFrame([["sokoban", "2x64", 256, 10, 0.125, 1.0, command],
                  ["sokoban", "2x64", 512, 10, 0.435, 1.0, command],
                  ["frozenlake", "2x64", 256, 16, 0.36, 0.805, command]],  # no longer in the grid
                 columns=capacity.COLUMNS).to_csv(committed, index=False)
    finish(capacity, tmp_path, "2x32", 256, 0.2)   # a new cell
    finish(capacity, tmp_path, "2x64", 512, 0.5)   # re-run here: its run dir wins

    frame = capacity.table(GRID, committed)
    got = {(r.size, r.demos): r.greedy_success for r in frame.itertuples()}
    assert got == {("2x32", 256): 0.2, ("2x64", 256): 0.125, ("2x64", 512): 0.5}
    assert list(frame.columns) == capacity.COLUMNS
    # without the committed CSV only the run dirs count (the old behaviour)
    assert len(capacity.table(GRID, None)) == 2

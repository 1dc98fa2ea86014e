"""End to end through the real CLI: a tiny run trains, logs, checkpoints, evaluates, resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsr_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--set", "trainer.groups=2", "--set", "trainer.group_size=4", "--set", "trainer.eval_episodes=4"]


def tsr(*args, env=None):
    """Run the `tsr` console entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "tsr_cli.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "fl"
    code = main(["train", "--config", str(ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"),
                 "--steps", "2", "--save-every", "1", "--eval-every", "1", "--run-dir", str(run_dir), *SMALL])
    assert code == 0
    return run_dir


def test_run_directory_contract(tiny_run):
    for name in ("config.yaml", "metrics.jsonl", "curves.csv", "summary.json", "curves.png"):
        assert (tiny_run / name).is_file(), name
    summary = json.loads((tiny_run / "summary.json").read_text())
    for key in ("steps", "initial_val_success_rate", "final_val_success_rate", "final_val_mean_return",
                "wall_seconds", "tokens_generated", "env_steps", "sim_env_steps"):
        assert key in summary
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        for key in ("loss", "policy_loss", "entropy", "kept_fraction", "train_success", "train_return",
                    "tokens_generated", "env_steps", "sim_env_steps", "time_rollout", "time_update"):
            assert key in record, key
        assert record["tokens_generated"] > 0
    import pandas as pd

    curves = pd.read_csv(tiny_run / "curves.csv")
    assert list(curves["step"]) == [0, 1, 2] and curves["val_success_rate"].notna().all()


def test_parameters_changed(tiny_run):
    from tsr_cli.policies import load_policy

    initial = load_policy("tiny", seed=0, env_names=["frozenlake"]).model.state_dict()
    trained = load_file(str(tiny_run / "checkpoints/step_2/weights.safetensors"))
    changed = [k for k, v in trained.items() if not torch.equal(v, initial[k.removeprefix("policy.")])]
    assert len(changed) > len(trained) // 2


def test_checkpoint_loads_for_eval(tiny_run, capsys):
    code = main(["eval", "--policy", str(tiny_run / "checkpoints/step_2"), "--episodes", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["env"] == "frozenlake" and result["episodes"] == 3


def test_plot_and_missing_dirs(tiny_run, tmp_path, capsys):
    assert main(["plot", str(tiny_run), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("tsr: error:") for line in err) and len(err) == 2


@pytest.mark.parametrize("content", ["env: [unclosed\n", "algo: {lrr: 1}\n", "trainer: {steps: ten}\n"])
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsr: error:")


def weights(run_dir, step):
    return load_file(str(run_dir / f"checkpoints/step_{step}/weights.safetensors"))


def comparable(run_dir):
    """metrics.jsonl without the measurements of the machine (seconds, memory)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    measured = ("wall_seconds", "peak_rss_mb")
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in measured} for r in rows]


def test_sigkill_then_resume_is_exact(tmp_path):
    args = ["train", "--config", "experiments/tiny/sokoban_grpo_beam.yaml", "--steps", "4", "--save-every", "1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert tsr(*args, "--run-dir", str(whole)).returncode == 0
    proc = tsr(*args, "--run-dir", str(killed), env={"TSR_KILL_AFTER_SAVE": "2"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (killed / "checkpoints/step_2").is_dir() and not (killed / "checkpoints/step_3").exists()
    resumed = tsr("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(whole, 4), weights(killed, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(whole) == comparable(killed)
    summary = lambda d: {k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k != "wall_seconds"}
    assert summary(whole) == summary(killed)

"""WebShop through the real entry point: `tsr eval` with and without search, and `tsr train`."""

from __future__ import annotations

import json
from pathlib import Path

from tsr_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]


def eval_json(capsys, *args) -> dict:
    code = main(["eval", "--json", "--env", "webshop", "--policy", "random", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def test_eval_random_runs(capsys):
    result = eval_json(capsys, "--episodes", "5")
    assert result["env"] == "webshop" and result["episodes"] == 5
    assert result["invalid_action_rate"] == 0.0  # the random policy only picks listed actions
    assert 0 < result["mean_turns"] <= 9 and result["env_steps"] > 0


def test_beam_with_the_heuristic_beats_plain_sampling(capsys):
    common = ("--scorer", "heuristic", "--episodes", "40")
    none = eval_json(capsys, "--search", "none", *common)
    beam = eval_json(capsys, "--search", "beam", *common)
    assert beam["mean_return"] > none["mean_return"] + 0.2
    assert beam["sim_env_steps"] > 0 == none["sim_env_steps"]


def test_train_runs_a_few_steps_on_cpu(tmp_path):
    run_dir = tmp_path / "ws"
    code = main(["train", "--config", str(ROOT / "experiments/tiny/webshop_grpo_none.yaml"), "--steps", "2",
                 "--run-dir", str(run_dir), "--set", "trainer.eval_episodes=4", "--set", "trainer.groups=2"])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["tokens_generated"] > 0
    config = (run_dir / "config.yaml").read_text()
    assert "name: webshop" in config and "max_turns: 9" in config
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]

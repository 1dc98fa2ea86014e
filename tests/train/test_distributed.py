"""Data parallelism (issue 14 section 2): `torchrun --nproc-per-node 2 tsr train` on CPU with gloo.

The exactness test: with the same global batch and seeds, three steps at
world size 2 end on the weights of a single-process run (to 1e-4), because
every group samples from its own stream, minibatches are drawn from the
global batch, and token means use global counts (train/distributed.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tsr_cli.cli import main
from tsr_cli.train import distributed

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "experiments/tiny/frozenlake_grpo_none.yaml")
SMALL = ["--set", "trainer.groups=4", "--set", "trainer.group_size=4", "--set", "trainer.eval_episodes=4"]
ARGS = ["train", "--config", CONFIG, "--steps", "3", "--save-every", "3", *SMALL]


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """Launch `args` under torchrun on this machine (a free port: --standalone)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def max_weight_difference(a: Path, b: Path) -> float:
    left, right = (load_file(str(d / "checkpoints/step_3/weights.safetensors")) for d in (a, b))
    assert left.keys() == right.keys()
    return max(float((left[k] - right[k]).abs().max()) for k in left)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run in one process and across two (gloo)."""
    root = tmp_path_factory.mktemp("dp")
    assert main([*ARGS, "--run-dir", str(root / "one")]) == 0
    done = torchrun("-m", "tsr_cli.cli", *ARGS, "--run-dir", str(root / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "one", root / "two"


def test_two_processes_end_on_the_single_process_weights(runs):
    one, two = runs
    assert max_weight_difference(one, two) < 1e-4


def assert_same_metrics(one: Path, two: Path, approx: tuple[str, ...]) -> None:
    """Counts and evaluations equal; rates, losses and norms equal up to float noise."""
    single, parallel = records(one), records(two)
    assert [r["step"] for r in parallel] == [r["step"] for r in single]  # rank 0 alone writes
    for a, b in zip(single, parallel):
        assert a.keys() - {"wall_seconds"} <= b.keys()
        for key in ("tokens_generated", "env_steps", "sim_env_steps", "truncated_episodes", "sibling_rows",
                    "val_success_rate", "val_mean_return", "val_invalid_action_rate"):
            assert a.get(key) == b.get(key), key  # sums over ranks, and evaluation gathered
        for key in ("train_return", "train_success", "grad_norm", "logprob_diff_max", "loss", "policy_loss",
                    "entropy", "approx_kl", "clip_fraction", *approx):
            assert a.get(key) == pytest.approx(b.get(key), abs=1e-4), key


def test_metrics_are_reduced_over_ranks_and_logged_once(runs):
    one, two = runs
    assert_same_metrics(one, two, ())
    assert [r["step"] for r in records(two)] == [0, 1, 2, 3]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_3"]


def test_config_and_summary_record_the_world_size(runs):
    one, two = runs
    import yaml

    for run_dir, size in ((one, 1), (two, 2)):
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["world_size"] == size
        assert json.loads((run_dir / "summary.json").read_text())["world_size"] == size


def test_resume_with_another_world_size_is_one_line(runs, capsys):
    _, two = runs
    assert main(["train", "--resume", str(two)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tsr: error: this run was started with world size 2") and "\n" not in err
    assert "--nproc-per-node 2" in err


def test_groups_must_divide_among_the_ranks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(distributed, "_join", lambda device: distributed.World(rank=0, world_size=3))
    assert main([*ARGS, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tsr: error: trainer.groups (4) must be divisible by the world size (3): each process "
                   "rolls out an equal share of the step's instance groups")
    assert not (tmp_path / "r").exists()


def test_collectives_at_world_size_two():
    done = torchrun(str(ROOT / "tests/train/dp_checks.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: ok" in done.stdout and "rank 1: ok" in done.stdout


@pytest.mark.slow
def test_ppo_with_whitening_siblings_and_uneven_minibatches_matches_one_process(tmp_path):
    """PPO (global whitening, value head), beam search with fresh-RNG scoring and
    sibling rows (a second section of the global batch), 3 x 3 = 9 rows in
    minibatches of 4: ranks hold unequal parts of each minibatch."""
    args = ["train", "--config", str(ROOT / "experiments/tiny/frozenlake_ppo_none.yaml"), "--steps", "3",
            "--save-every", "3", "--search", "beam", "--set", "search.fresh_rng=true",
            "--set", "search.learn_from=siblings", "--set", "trainer.groups=3", "--set", "trainer.group_size=3",
            "--set", "trainer.eval_episodes=3", "--set", "algo.minibatch_size=4", "--set", "env.max_turns=4"]
    assert main([*args, "--run-dir", str(tmp_path / "one")]) == 0
    done = torchrun("-m", "tsr_cli.cli", *args, "--run-dir", str(tmp_path / "two"), nproc=3)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_weight_difference(tmp_path / "one", tmp_path / "two") < 1e-4
    assert_same_metrics(tmp_path / "one", tmp_path / "two", ("value_loss", "critic_grad_norm"))

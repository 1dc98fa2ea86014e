"""The command line: the eval JSON contract and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from tsr_cli.cli import main

EVAL_KEYS = {"env", "policy", "search", "episodes", "success_rate", "mean_return", "mean_turns",
             "invalid_action_rate", "tokens_generated", "env_steps", "sim_env_steps", "wall_seconds"}


def eval_json(capsys, *args):
    code = main(["eval", "--json", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def test_envs_lists_registered(capsys):
    assert main(["envs"]) == 0
    text = capsys.readouterr().out
    assert "sokoban" in text and "frozenlake" in text


@pytest.mark.parametrize("env", ["sokoban", "frozenlake"])
def test_eval_json_contract(capsys, env):
    result = eval_json(capsys, "--env", env, "--policy", "random", "--search", "beam", "--episodes", "5")
    assert EVAL_KEYS <= result.keys()
    assert result["episodes"] == 5 and result["search"] == "beam" and result["env"] == env
    assert result["sim_env_steps"] > 0 and result["tokens_generated"] > 0


def test_eval_is_reproducible(capsys):
    args = ("--policy", "random", "--search", "lookahead", "--episodes", "4", "--seed", "3")
    a, b = eval_json(capsys, *args), eval_json(capsys, *args)
    for key in ("success_rate", "mean_return", "tokens_generated", "env_steps", "sim_env_steps"):
        assert a[key] == b[key]


def test_env_args_reach_the_env(capsys):
    result = eval_json(capsys, "--env", "sokoban", "--env-arg", "dim_room=[8,8]", "--env-arg", "num_boxes=2",
                       "--policy", "random", "--episodes", "2")
    assert result["episodes"] == 2


@pytest.mark.parametrize("args", [
    ["eval", "--env", "chess"],
    ["eval", "--search", "greedy"],
    ["eval", "--policy", "no-such-policy"],
    ["eval", "--policy", "./missing/checkpoint/dir/"],
    ["eval", "--episodes", "many"],
    ["eval", "--episodes", "0"],
    ["eval", "--scorer", "nope"],
    ["eval", "--env-arg", "oops"],
    ["eval", "--env", "sokoban", "--env-arg", "bogus=1"],
    ["eval", "--no-such-flag"],
    ["play", "chess"],
])
def test_user_mistakes_are_one_line_exit_2(capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsr: error:"), err
    assert "Traceback" not in err


def test_console_script_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "tsr_cli.cli", "eval", "--env", "chess"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_help_explains(capsys):
    assert main(["eval", "--help"]) == 0
    assert "--candidates" in capsys.readouterr().out


def test_play_reads_actions(monkeypatch, capsys):
    import builtins

    moves = iter(["right", "q"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(moves))
    assert main(["play", "frozenlake", "--seed", "1"]) == 0
    assert "reward" in capsys.readouterr().out

"""Fault injection (issue 15): every crash leaves a resumable run, every bad input one line.

Recovery cases damage a copy of one finished tiny run (4 steps, a checkpoint
after each) the way a crash would, resume it through the CLI, and check that
the finished run equals the undamaged one: final weights, every logged
metric except timings, and the summary. Bad-input cases check exit code 2
and that stderr is exactly one line.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tsr_cli import compare
from tsr_cli.cli import main
from tsr_cli.train import checkpoint
from tsr_cli.train.checkpoint import verify_checkpoint
from tsr_cli.train.run import Run, read_metrics
from tsr_cli.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"
STEPS = 4
SMALL = ["--set", "trainer.groups=2", "--set", "trainer.group_size=4", "--set", "trainer.eval_episodes=4"]
TRAIN = ["train", "--config", str(CONFIG), "--steps", str(STEPS), "--eval-every", "1", *SMALL]


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted reference run."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    assert main([*TRAIN, "--save-every", "1", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def copy(whole, tmp_path):
    """A copy of the finished reference run, to damage."""
    return Path(shutil.copytree(whole, tmp_path / "run"))


def stderr_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


def tsr_lines(lines: list[str], kind: str) -> list[str]:
    """Our own lines of one kind (`warning`, `error`, ...); progress bars are not ours."""
    return [line for line in lines if line.startswith(f"tsr: {kind}")]


def one_error(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI, expect `code` and exactly one stderr line, a tsr error; return it."""
    assert main(argv) == code
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("tsr: error: "), lines
    return lines[0]


def resume(capsys, run_dir: Path) -> list[str]:
    """`tsr train --resume`: must succeed; returns its warning lines."""
    assert main(["train", "--resume", str(run_dir)]) == 0
    return tsr_lines(stderr_lines(capsys), "warning")


def comparable(run_dir: Path) -> list[dict]:
    """metrics.jsonl without what the machine measures (seconds, memory)."""
    measured = ("wall_seconds", "peak_rss_mb")
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in measured}
            for r in read_metrics(run_dir)]


def assert_same_finish(whole: Path, run_dir: Path) -> None:
    """The recovered run ends exactly as the uninterrupted one did."""
    a = load_file(str(whole / f"checkpoints/step_{STEPS}/weights.safetensors"))
    b = load_file(str(run_dir / f"checkpoints/step_{STEPS}/weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(whole) == comparable(run_dir)
    summary = lambda d: {k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                         if k != "wall_seconds"}
    assert summary(whole) == summary(run_dir)
    assert (run_dir / "curves.csv").read_text().count("\n") == STEPS + 2  # header, steps 0..STEPS


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


# ------------------------------------------------------------------ resume survives a crash
def test_torn_metrics_line_is_dropped_with_a_warning(copy, whole, capsys):
    """Killed while writing step 4's record: the line is cut, step 4 never saved."""
    shutil.rmtree(copy / "checkpoints/step_4")
    (copy / "summary.json").unlink()
    text = (copy / "metrics.jsonl").read_text()
    (copy / "metrics.jsonl").write_text(text[: text.rindex('{"step": 4') + 40])
    warnings = resume(capsys, copy)
    assert len(warnings) == 1 and "torn last line" in warnings[0] and "metrics.jsonl" in warnings[0]
    assert_same_finish(whole, copy)


def test_resume_cuts_metrics_and_curves_back_to_the_checkpoint(copy, capsys):
    shutil.rmtree(copy / "checkpoints/step_4")
    shutil.rmtree(copy / "checkpoints/step_3")
    run = Run.resume(copy)
    assert run.trainer.step == 2
    assert [r["step"] for r in read_metrics(copy)] == [0, 1, 2]
    assert (copy / "curves.csv").read_text().count("\n") == 4  # header, steps 0..2
    assert not (copy / "summary.json").exists()  # it described steps no longer on disk
    assert stderr_lines(capsys) == []


def test_truncated_last_checkpoint_falls_back_to_the_one_before(copy, whole, capsys):
    truncate(copy / "checkpoints/step_4/weights.safetensors")
    warnings = resume(capsys, copy)
    assert len(warnings) == 1 and "step_4/weights.safetensors" in warnings[0] and "skipping" in warnings[0]
    assert_same_finish(whole, copy)  # step 4 was trained again and re-saved over the bad one


@pytest.mark.parametrize("name", ["optimizer.safetensors", "trainer_state.json"])
def test_truncated_resume_files_are_skipped_too(copy, whole, capsys, name):
    truncate(copy / f"checkpoints/step_4/{name}")
    warnings = resume(capsys, copy)
    assert len(warnings) == 1 and f"step_4/{name}" in warnings[0]
    assert_same_finish(whole, copy)


def test_checkpoint_without_marker_is_skipped(copy, whole, capsys):
    (copy / "checkpoints/step_4/tsr_checkpoint.json").unlink()
    warnings = resume(capsys, copy)
    assert len(warnings) == 1 and "step_4" in warnings[0] and "tsr_checkpoint.json" in warnings[0]
    assert_same_finish(whole, copy)


class Killed(BaseException):
    """Stands in for SIGKILL at one exact instruction."""


def test_resave_keeps_the_step_when_killed_between_the_renames(copy, monkeypatch):
    """Issue 10 point 13: re-saving step 4 must never leave the run without a step 4."""
    run = Run.resume(copy)
    before = load_file(str(copy / "checkpoints/step_4/weights.safetensors"))
    real = os.replace

    def kill_before_the_new_copy_lands(src, dst):
        if Path(src).name.startswith(".tmp_"):
            raise Killed
        real(src, dst)

    monkeypatch.setattr(os, "replace", kill_before_the_new_copy_lands)
    with pytest.raises(Killed):
        checkpoint.save_checkpoint(run.trainer, copy)
    monkeypatch.undo()
    assert any(p.name.startswith(".tmp_") for p in (copy / "checkpoints").iterdir())
    resumed = Run.resume(copy)  # start-up puts the old copy back and clears the killed save
    assert resumed.trainer.step == 4
    after = load_file(str(copy / "checkpoints/step_4/weights.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == [f"step_{i}" for i in range(1, 5)]


# ------------------------------------------------------------------ Ctrl-C
def ctrl_c_during_step(monkeypatch, step: int, times: int = 1) -> None:
    """Send SIGINT to this process `times` times while step `step` is being trained."""
    real = Trainer.train_step

    def train_step(self):
        record = real(self)
        if self.step == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # let the handler run before the next signal
        return record

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(whole, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    ctrl_c_during_step(monkeypatch, 2)
    # save_every 0: only the interruption writes a checkpoint before the end
    assert main([*TRAIN, "--save-every", "0", "--run-dir", str(run_dir)]) == 130
    lines = stderr_lines(capsys)
    assert lines[-1] == (f"tsr: interrupted after step 2 of {STEPS}; saved checkpoint step_2; "
                         f"resume with: tsr train --resume {run_dir}")
    assert len(tsr_lines(lines, "interrupted")) == 1
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_2"]
    monkeypatch.undo()
    assert resume(capsys, run_dir) == []
    assert_same_finish(whole, run_dir)


def test_second_ctrl_c_stops_at_once(whole, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    ctrl_c_during_step(monkeypatch, 3, times=2)
    assert main([*TRAIN, "--save-every", "1", "--run-dir", str(run_dir)]) == 130
    lines = stderr_lines(capsys)
    assert lines[-1] == ("tsr: interrupted during step 3 and stopped at once; the last checkpoint is step_2; "
                         f"resume with: tsr train --resume {run_dir}")
    assert not (run_dir / "checkpoints/step_3").exists()  # step 3 was abandoned, not saved
    monkeypatch.undo()
    assert resume(capsys, run_dir) == []
    assert_same_finish(whole, run_dir)


def test_ctrl_c_in_a_real_process(tmp_path):
    """A real SIGINT from outside, as a terminal sends it: exit 130 and the resume line."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "tsr_cli.cli", "train", "--config", str(CONFIG), "--steps", "20", *SMALL,
            "--run-dir", str(run_dir)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and len(read_metrics(run_dir)) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("tsr: interrupted after step ") and last.endswith(f"tsr train --resume {run_dir}")
    step = int(last.split("step ")[1].split()[0])
    verify_checkpoint(run_dir / f"checkpoints/step_{step}", resume=True)
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(step + 1))


def test_ctrl_c_during_compare_says_how_to_resume_the_sweep(whole, tmp_path, monkeypatch, capsys):
    """Arm `a` is the reference run's config; Ctrl-C in its step 2 stops the sweep before arm `b`."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {CONFIG}\nseeds: [0]\n"
                     f"overrides: {{trainer.steps: {STEPS}, trainer.eval_every: 1, trainer.groups: 2, "
                     "trainer.group_size: 4, trainer.eval_episodes: 4}\n"
                     "arms:\n  - {name: a, set: {}}\n  - {name: b, set: {trainer.steps: 1}}\n")
    out = tmp_path / "out"
    ctrl_c_during_step(monkeypatch, 2)
    assert main(["compare", str(sweep), "--out", str(out)]) == 130
    last = stderr_lines(capsys)[-1]
    assert last == (f"tsr: interrupted after step 2 of {STEPS}; saved checkpoint step_2; "
                    f"resume with: tsr compare {sweep} --out {out}")
    assert [run.state for run in compare.plan(compare.load_sweep(sweep), out)] == ["resume", "new"]
    monkeypatch.undo()
    assert main(["compare", str(sweep), "--out", str(out)]) == 0
    assert comparable(out / "runs/a-s0") == comparable(whole)
    assert [run.state for run in compare.plan(compare.load_sweep(sweep), out)] == ["done", "done"]


# ------------------------------------------------------------------ a full disk
FULL_DISK = [
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    OSError(errno.ENOSPC, "No space left on device"),
]


@pytest.mark.parametrize("error", FULL_DISK, ids=["safetensors", "oserror"])
def test_full_disk_during_save_keeps_the_previous_checkpoint(whole, tmp_path, monkeypatch, capsys, error):
    run_dir = tmp_path / "run"
    real = checkpoint.save_file

    def fill_up_at_step_3(tensors, filename, *args, **kw):
        if ".tmp_step_3" in filename:
            raise error
        return real(tensors, filename, *args, **kw)

    monkeypatch.setattr(checkpoint, "save_file", fill_up_at_step_3)
    assert main([*TRAIN, "--save-every", "1", "--run-dir", str(run_dir)]) == 1
    errors = tsr_lines(stderr_lines(capsys), "error")
    assert len(errors) == 1
    assert errors[0].startswith(f"tsr: error: no space left on the device holding {run_dir / 'checkpoints'} ")
    assert errors[0].endswith(f"while writing checkpoint step_3; earlier checkpoints are intact; "
                              f"free space, then resume with: tsr train --resume {run_dir}")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_1", "step_2"]
    verify_checkpoint(run_dir / "checkpoints/step_2", resume=True)
    monkeypatch.undo()
    assert resume(capsys, run_dir) == []
    assert_same_finish(whole, run_dir)


# ------------------------------------------------------------------ bad input: one line, exit 2
def test_eval_names_the_truncated_weights_file(copy, whole, capsys):
    truncate(copy / "checkpoints/step_4/weights.safetensors")
    line = one_error(capsys, ["eval", "--policy", str(copy / "checkpoints/step_4"), "--episodes", "2"])
    assert f"{copy}/checkpoints/step_4/weights.safetensors is truncated or corrupt" in line
    assert len(resume(capsys, copy)) == 1  # the run goes on from step 3
    verify_checkpoint(copy / "checkpoints/step_4", resume=True)


def test_eval_of_a_checkpoint_without_marker(copy, capsys):
    (copy / "checkpoints/step_4/tsr_checkpoint.json").unlink()
    line = one_error(capsys, ["eval", "--policy", str(copy / "checkpoints/step_4"), "--episodes", "2"])
    assert "incomplete tsr checkpoint: tsr_checkpoint.json is missing" in line
    line = one_error(capsys, ["eval", "--policy", str(copy), "--episodes", "2"])
    assert "is a tsr run directory; give one of its checkpoints" in line


def test_policy_name_names_the_bad_checkpoint_file(copy, tmp_path, capsys):
    (copy / "checkpoints/step_2/config.yaml").write_text("env: [unclosed\n")
    line = one_error(capsys, [*TRAIN, "--run-dir", str(tmp_path / "warm"),
                              "--set", f"policy.name={copy / 'checkpoints/step_2'}"])
    assert f"{copy}/checkpoints/step_2/config.yaml: malformed YAML" in line
    assert not (tmp_path / "warm").exists()  # no half-made run directory left behind


def test_resume_names_weights_that_do_not_fit(copy, capsys):
    """The run's config was edited after training: its model no longer fits the weights."""
    for path in (copy / "config.yaml", *copy.glob("checkpoints/step_*/config.yaml")):
        path.write_text(path.read_text().replace("tiny_hidden: 64", "tiny_hidden: 32"))
    line = one_error(capsys, ["train", "--resume", str(copy)])
    assert f"{copy}/checkpoints/step_4/weights.safetensors does not fit the model: " in line
    assert "has shape (" in line and ", 64), the model's is (" in line
    line = one_error(capsys, ["eval", "--policy", str(copy / "checkpoints/step_4"), "--episodes", "2"])
    assert "step_4/weights.safetensors does not fit the model" in line


def test_resume_names_metrics_damaged_before_the_last_line(copy, capsys):
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    line = one_error(capsys, ["train", "--resume", str(copy)])
    assert f"{copy}/metrics.jsonl line 2 is not a JSON record and is not the last line" in line
    (copy / "metrics.jsonl").write_text("\n".join(lines[:1]) + "\n")  # the user deletes the damage
    assert resume(capsys, copy) == []


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A Hugging Face model directory (the tiny model saved by transformers)."""
    from tsr_cli.policies import load_policy

    path = tmp_path_factory.mktemp("hf") / "model"
    policy = load_policy("tiny", seed=0, env_names=["frozenlake"])
    policy.model.save_pretrained(path)
    policy.codec.tokenizer.save_pretrained(path)
    return path


def test_model_directory_without_tokenizer(hf_dir, tmp_path, capsys):
    bad = Path(shutil.copytree(hf_dir, tmp_path / "model"))
    for path in bad.glob("tokenizer*"):
        path.unlink()
    line = one_error(capsys, ["eval", "--env", "frozenlake", "--policy", str(bad), "--episodes", "1"])
    assert f"{bad} has no tokenizer" in line
    line = one_error(capsys, [*TRAIN, "--run-dir", str(tmp_path / "r"), "--set", f"policy.name={bad}"])
    assert f"{bad} has no tokenizer" in line


def test_model_directory_whose_weights_do_not_fit(hf_dir, tmp_path, capsys):
    bad = Path(shutil.copytree(hf_dir, tmp_path / "model"))
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] // 2}))
    line = one_error(capsys, ["eval", "--env", "frozenlake", "--policy", str(bad), "--episodes", "1"])
    assert f"{bad}: the weights do not fit the model its config.json describes" in line
    truncate(bad / "model.safetensors")
    line = one_error(capsys, ["eval", "--env", "frozenlake", "--policy", str(bad), "--episodes", "1"])
    assert f"{bad}/model.safetensors is truncated or corrupt" in line


@pytest.mark.parametrize("env, args, expected", [
    ("sokoban", ["dim_room=[3,3]"], "too few for 1 boxes"),
    ("sokoban", ["dim_room=[4,4]"], "could not generate a (4, 4) room"),
    ("sokoban", ["dim_room=[6,6]", "num_boxes=0"], "num_boxes must be at least 1"),
    ("sokoban", ["dim_room=6"], "dim_room must be two integers"),
    ("frozenlake", ['desc=["SFF","FHF","FFF"]'], "at least one goal G"),
    ("frozenlake", ['desc=["SH","HG"]'], "no path from S to a goal"),
    ("frozenlake", ["p=0.02"], "no 4x4 map with a path"),
    ("frozenlake", ["size=1"], "size must be at least 2"),
    ("webshop", ["num_products=0"], "num_products must be a whole number >= 1"),
    ("webshop", ["num_products=5", "split=train"], "the 'train' split"),
])
def test_env_arguments_that_cannot_make_an_instance(capsys, env, args, expected):
    argv = ["eval", "--env", env, "--policy", "random", "--episodes", "1"]
    line = one_error(capsys, argv + [item for arg in args for item in ("--env-arg", arg)])
    assert expected in line


def test_training_env_without_training_instances(tmp_path, capsys):
    """Held-out instances exist (eval works) but the train split of 5 products is empty."""
    run_dir = tmp_path / "run"
    line = one_error(capsys, ["train", "--config", str(ROOT / "experiments/tiny/webshop_grpo_none.yaml"),
                              "--run-dir", str(run_dir), "--set", "env.args={num_products: 5}"])
    assert "cannot make a training instance: the 'train' split" in line and line.endswith("or more products")
    assert not run_dir.exists()


@pytest.mark.parametrize("override, expected", [
    ("env.max_turns=0", "max_turns must be >= 1, got 0"),
    ("env.args={bogus: 1}", "unexpected keyword argument 'bogus'"),
    ("env.args={desc: [SH, HG]}", "desc has no path from S to a goal G"),
])
def test_train_inputs_fail_before_a_run_directory_is_made(tmp_path, capsys, override, expected):
    run_dir = tmp_path / "run"
    line = one_error(capsys, [*TRAIN, "--run-dir", str(run_dir), "--set", override])
    assert expected in line
    assert not run_dir.exists()  # so the corrected command needs no --overwrite


def test_env_arg_text_starting_with_hash_is_an_xsb_level_not_a_comment():
    from tsr_cli.cli import _parse_kv

    level = "#####\n#@$.#\n#####"
    assert _parse_kv([f"level={level}", "dim_room=[8,8]", "bad=[1,"], "--env-arg") == \
        {"level": level, "dim_room": [8, 8], "bad": "[1,"}

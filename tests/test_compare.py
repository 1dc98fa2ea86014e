"""`tsr compare`: the toy sweep end to end, resume, --table-only, starts, bad sweep files."""

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file, save_file

from tsr_cli import compare
from tsr_cli.cli import main
from tsr_cli.errors import Interrupted
from tsr_cli.executors import CellBusy
from tsr_cli.sft import load_sft_config
from tsr_cli.train.config import dump_config, load_config
from tsr_cli.train.run import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "experiments/sweeps/toy.yaml"
BASE = ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"


@pytest.fixture(scope="module")
def toy_out(tmp_path_factory):
    """The toy sweep interrupted (Ctrl-C) in its second run's second step, then run again to the end.

    Returns (OUT, (run states, results.csv, the second run's metrics lines) as the interruption
    left them, mtime of the first run's metrics.jsonl).
    """
    out = tmp_path_factory.mktemp("toy")
    real = compare.train_run
    runs = []

    def interrupted_in_second_run(run, advance):
        runs.append(run)
        steps = []

        def ctrl_c_at_second_step(n):
            steps.extend([1] * n)
            if len(runs) == 2 and len(steps) == 2:
                raise KeyboardInterrupt  # step 2 logged, its checkpoint not yet written
            advance(n)

        return real(run, ctrl_c_at_second_step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "train_run", interrupted_in_second_run)
        assert main(["compare", str(TOY), "--out", str(out)]) == 130
    states = [run.state for run in compare.plan(compare.load_sweep(TOY), out)]
    partial = pd.read_csv(out / "results.csv")
    assert (out / "table.md").read_text().count("\n| none") == 1  # tables follow the sweep cell by cell
    logged = (out / "runs/beam-s0/metrics.jsonl").read_text().splitlines()
    stamp = (out / "runs/none-s0/metrics.jsonl").stat().st_mtime_ns
    assert main(["compare", str(TOY), "--out", str(out)]) == 0
    return out, (states, partial, logged), stamp


def test_outputs_have_a_row_per_run_and_per_arm(toy_out):
    out, _, _ = toy_out
    results = pd.read_csv(out / "results.csv")
    required = ["arm", "env", "algo", "search", "seed", "final_val_success_rate", "final_val_mean_return",
                "initial_val_success_rate", "steps", "tokens_generated", "env_steps", "sim_env_steps",
                "wall_seconds", "steps_to_threshold", "run_dir"]
    assert set(required) <= set(results.columns)
    assert list(results["arm"]) == ["none", "beam"] and list(results["search"]) == ["none", "beam"]
    assert (results["steps"] == 2).all() and (results["tokens_generated"] > 0).all()
    by_arm = results.set_index("arm")
    assert by_arm.loc["none", "sim_env_steps"] == 0 < by_arm.loc["beam", "sim_env_steps"]

    table = pd.read_csv(out / "table.csv")
    assert list(table["arm"]) == ["none", "beam"] and (table["seeds"] == 1).all()
    assert {"final_val_success", "steps_to_threshold", "tokens_generated", "env_steps", "sim_env_steps",
            "wall_seconds"} <= set(table.columns)
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "held-out success" in rows[0]

    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns[:3]) == ["arm", "seed", "step"]
    assert curves.groupby("arm")["step"].apply(list).to_dict() == {"none": [0, 1, 2], "beam": [0, 1, 2]}
    assert curves["val_success_rate"].notna().all()  # the toy sweep evaluates every step
    for name in ("success_vs_step.png", "success_vs_tokens.png"):
        assert (out / name).stat().st_size > 10_000


def test_interrupted_sweep_resumes_without_retraining(toy_out):
    out, (states, partial, logged), stamp = toy_out
    assert states == ["done", "resume"]
    assert list(partial["arm"]) == ["none"]  # results.csv kept the run that finished before Ctrl-C
    assert {"final_entropy", "last_quarter_trend"} <= set(partial.columns)  # with the derived columns
    assert (out / "runs/none-s0/metrics.jsonl").stat().st_mtime_ns == stamp  # not trained again
    resumed = read_metrics(out / "runs/beam-s0")
    assert [record["step"] for record in resumed] == [0, 1, 2]
    # continued from step 1's checkpoint: steps 0-1 were kept (timings would differ if redone)
    assert (out / "runs/beam-s0/metrics.jsonl").read_text().splitlines()[:2] == logged[:2]
    assert [run.state for run in compare.plan(compare.load_sweep(TOY), out)] == ["done", "done"]


def test_table_only_rebuilds_from_results(toy_out, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    expected = (out / "table.md").read_text()
    for name in ("table.md", "table.csv", "curves.csv", "success_vs_step.png"):
        (out / name).unlink()
    monkeypatch.setattr(compare, "train_run", lambda run, advance: pytest.fail("--table-only trained"))
    assert main(["compare", str(TOY), "--out", str(out), "--table-only"]) == 0
    assert (out / "table.md").read_text() == expected
    assert (out / "table.csv").is_file() and (out / "success_vs_step.png").is_file()


def test_table_only_without_run_dirs_uses_saved_curves(toy_out, tmp_path):
    """results/ commits tables and curves but no run dirs: --table-only still works there."""
    out = tmp_path / "committed"
    shutil.copytree(toy_out[0], out, ignore=shutil.ignore_patterns("runs"))
    expected = (out / "table.md").read_text()
    assert main(["compare", str(TOY), "--out", str(out), "--table-only"]) == 0
    assert (out / "table.md").read_text() == expected


def test_keep_recorded_continues_a_committed_grid_without_its_run_dirs(toy_out, tmp_path, monkeypatch):
    """results/ commits results.csv but no run dirs: a fresh clone re-trains every cell (a
    reproduction), and with --keep-recorded trains only the cells results.csv lacks."""
    out = tmp_path / "committed"
    shutil.copytree(toy_out[0], out, ignore=shutil.ignore_patterns("runs"))
    before = pd.read_csv(out / "results.csv")
    before[before["arm"] == "none"].to_csv(out / "results.csv", index=False)  # beam not recorded yet
    spec = compare.load_sweep(TOY)
    assert [run.state for run in compare.plan(spec, out)] == ["new", "new"]
    assert [run.state for run in compare.plan(spec, out, keep_recorded=True)] == ["recorded", "new"]
    trained = []
    real = compare.train_run
    monkeypatch.setattr(compare, "train_run", lambda run, advance: trained.append(run.arm) or real(run, advance))
    assert main(["compare", str(TOY), "--out", str(out), "--keep-recorded"]) == 0
    assert trained == ["beam"] and not (out / "runs/none-s0").exists()
    after = pd.read_csv(out / "results.csv")
    columns = ["arm", "seed", "final_val_success_rate", "tokens_generated", "start"]
    pd.testing.assert_frame_equal(after[columns], before[columns])  # none kept, beam made again alike
    assert (out / "table.md").read_text().count("\n| none") == 1  # none's curve from the saved curves.csv


@pytest.mark.parametrize("knob, flag", [("", False), ("KEEP_RECORDED=1", True)])
def test_make_reproduce_keeps_recorded_cells_only_when_asked(knob, flag):
    import subprocess

    dry = subprocess.run(["make", "-n", "reproduce", *([knob] if knob else [])], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    compares = [line for line in dry.splitlines() if "tsr compare" in line]
    assert compares and all(("--keep-recorded" in line) == flag for line in compares)


def test_one_cell_reruns_to_the_same_numbers(toy_out, tmp_path):
    """`--arm A --seed S` into a new directory reproduces that cell of the sweep exactly.

    The sweep's beam run was interrupted and resumed; the re-run trains straight
    through, so this also checks that resuming did not change the result.
    """
    out, _, _ = toy_out
    assert main(["compare", str(TOY), "--arm", "beam", "--seed", "0", "--out", str(tmp_path)]) == 0
    again = pd.read_csv(tmp_path / "results.csv")
    assert list(again["arm"]) == ["beam"]
    sweep_row = pd.read_csv(out / "results.csv").set_index("arm").loc["beam"]
    for key in ("final_val_success_rate", "final_val_mean_return", "tokens_generated", "env_steps",
                "sim_env_steps"):
        assert again.loc[0, key] == sweep_row[key], key
    curve = pd.read_csv(tmp_path / "runs/beam-s0/curves.csv")
    original = pd.read_csv(out / "runs/beam-s0/curves.csv")
    for key in ("val_success_rate", "train_return", "loss", "entropy"):
        pd.testing.assert_series_equal(curve[key], original[key])


def test_a_finished_sweep_run_again_keeps_its_rows_from_the_run_dirs_and_the_derived_columns(toy_out, tmp_path):
    """A finished cell's row is rebuilt from its run dir (a stale value is mended) and keeps
    the columns the table stage derived; moved here, run_dir follows the runs."""
    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    before = pd.read_csv(out / "results.csv")
    assert {"final_entropy", "last_quarter_trend", "steps_to_threshold"} <= set(before.columns)
    stale = before.copy()
    stale.loc[0, "final_val_success_rate"] = 0.999
    stale.to_csv(out / "results.csv", index=False)
    compare.run_sweep(compare.plan(compare.load_sweep(TOY), out), out)
    after = pd.read_csv(out / "results.csv")
    assert list(after.columns) == list(before.columns)
    pd.testing.assert_frame_equal(after.drop(columns="run_dir"), before.drop(columns="run_dir"))
    assert all(path.startswith(str(out)) for path in after["run_dir"])


def test_rerunning_a_cell_in_place_keeps_the_other_rows(toy_out, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    shutil.rmtree(out / "runs/none-s0")
    before = pd.read_csv(out / "results.csv")
    assert main(["compare", str(TOY), "--arm", "none", "--out", str(out)]) == 0
    after = pd.read_csv(out / "results.csv")
    assert list(after["arm"]) == ["none", "beam"]
    pd.testing.assert_series_equal(after["final_val_success_rate"], before["final_val_success_rate"])


def test_two_compares_on_one_out_keep_each_others_rows(toy_out, tmp_path, monkeypatch):
    """`--arm none` and `--arm beam` in two processes on one OUT: the beam one finishes while the
    none one trains, and none's rewrite of results.csv keeps beam's row (it re-reads the file
    under OUT/runs/.lock-results instead of writing the rows it read at its start)."""
    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    for name in ("runs/none-s0", "runs/beam-s0", "results.csv"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    real = compare.train_run

    def beam_finishes_meanwhile(run, advance):
        if run.arm == "none":
            assert main(["compare", str(TOY), "--arm", "beam", "--out", str(out)]) == 0
            assert list(pd.read_csv(out / "results.csv")["arm"]) == ["beam"]
        return real(run, advance)

    monkeypatch.setattr(compare, "train_run", beam_finishes_meanwhile)
    assert main(["compare", str(TOY), "--arm", "none", "--out", str(out)]) == 0
    after = pd.read_csv(out / "results.csv")
    assert list(after["arm"]) == ["none", "beam"]
    timing = ["run_dir", "wall_seconds"]  # the rest are the cells' numbers, as one process made them
    pd.testing.assert_frame_equal(after.drop(columns=timing), pd.read_csv(toy_out[0] / "results.csv").drop(columns=timing))


def test_a_cell_another_compare_finished_while_this_one_found_it_busy_keeps_its_row(toy_out, tmp_path,
                                                                                   monkeypatch):
    """Two `tsr compare` on one OUT, both planning `none` as new: the other one trains it; this
    one finds it locked (a failure here) and then finishes `beam`. Its rewrite of results.csv
    must keep the row the other process wrote for `none`."""
    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    for name in ("runs/none-s0", "runs/beam-s0", "results.csv"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    real, other = compare.train_run, []

    def busy_because_another_process_trained_it(run, advance):
        if run.arm == "none" and not other:
            other.append(run)
            assert main(["compare", str(TOY), "--arm", "none", "--out", str(out)]) == 0
            raise CellBusy(f"{run.dir} is being trained by another tsr compare")
        return real(run, advance)

    monkeypatch.setattr(compare, "train_run", busy_because_another_process_trained_it)
    assert main(["compare", str(TOY), "--out", str(out)]) == 1  # none failed here
    assert list(pd.read_csv(out / "results.csv")["arm"]) == ["none", "beam"]


def test_a_cell_another_compare_is_training_is_left_to_it(toy_out, tmp_path, capsys):
    import fcntl

    out = tmp_path / "copy"
    shutil.copytree(toy_out[0], out)
    shutil.rmtree(out / "runs/none-s0")
    with open(out / "runs/.lock-none-s0", "a") as held:  # as the other process holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["compare", str(TOY), "--arm", "none", "--out", str(out)]) == 1
    assert "runs/none-s0 is being trained by another tsr compare" in capsys.readouterr().err
    assert not (out / "runs/none-s0").exists()
    assert main(["compare", str(TOY), "--arm", "none", "--out", str(out)]) == 0  # the lock went with it


@pytest.mark.parametrize("flags, message", [(["--arm", "greedy"], "no arm 'greedy'"),
                                            (["--seed", "7"], "no seed 7")])
def test_selecting_an_unknown_cell_is_one_line_exit_2(flags, message, tmp_path, capsys):
    assert main(["compare", str(TOY), *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_each_run_is_tagged_with_sweep_arm_and_seed(toy_out):
    out, _, _ = toy_out
    assert load_config(out / "runs/beam-s0/config.yaml").trainer.tags == {"sweep": "toy", "arm": "beam", "seed": 0}
    renamed = dataclasses.replace(compare.load_sweep(TOY), path=TOY.with_name("renamed.yaml"))
    assert [run.state for run in compare.plan(renamed, out)] == ["done", "done"]  # tags are not settings


def test_plan_states_and_mismatched_run_dir(tmp_path):
    sweep = compare.load_sweep(TOY)
    assert [(r.arm, r.seed, r.state) for r in compare.plan(sweep, tmp_path)] == [("none", 0, "new"),
                                                                                ("beam", 0, "new")]
    started = compare.plan(sweep, tmp_path)[0]
    started.dir.mkdir(parents=True)
    dump_config(started.cfg, started.dir / "config.yaml")
    assert [r.state for r in compare.plan(sweep, tmp_path)] == ["resume", "new"]
    other = compare.Sweep(sweep.path, sweep.base, sweep.seeds, sweep.arms,
                          {**sweep.overrides, "trainer.steps": 3}, sweep.threshold)
    with pytest.raises(compare.SweepError, match="trainer.steps"):
        compare.plan(other, tmp_path)


# ------------------------------------------------------------------ bad sweep files
BAD = {
    "unknown key": f"base: {BASE}\nseeds: [0]\narms: [{{name: a}}]\nrepeats: 3\n",
    "missing base": "seeds: [0]\narms: [{name: a}]\n",
    "base not found": "base: nowhere.yaml\nseeds: [0]\narms: [{name: a}]\n",
    "empty arms": f"base: {BASE}\nseeds: [0]\narms: []\n",
    "empty seeds": f"base: {BASE}\nseeds: []\narms: [{{name: a}}]\n",
    "duplicate arms": f"base: {BASE}\nseeds: [0]\narms: [{{name: a}}, {{name: a}}]\n",
    "unknown config key": f"base: {BASE}\nseeds: [0]\narms: [{{name: a, set: {{search.nope: 1}}}}]\n",
    "bad value": f"base: {BASE}\nseeds: [0]\narms: [{{name: a, set: {{search.strategy: greedy}}}}]\n",
    "bad shared override": f"base: {BASE}\nseeds: [0]\noverrides: {{trainer.steps: many}}\narms: [{{name: a}}]\n",
    "reserved key": f"base: {BASE}\nseeds: [0]\narms: [{{name: a, set: {{trainer.seed: 3}}}}]\n",
    "bad arm name": f"base: {BASE}\nseeds: [0]\narms: [{{name: ../a}}]\n",
    "bad threshold": f"base: {BASE}\nseeds: [0]\narms: [{{name: a}}]\nthreshold: 2\n",
    "bad resources": f"base: {BASE}\nseeds: [0]\narms: [{{name: a}}]\nresources: {{gpus: 1}}\n",
    "reserved tags": f"base: {BASE}\nseeds: [0]\narms: [{{name: a, set: {{trainer.tags: {{a: 1}}}}}}]\n",
    "not a mapping": "- a\n- b\n",
    "malformed": "base: [unclosed\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_is_one_line_exit_2(case, tmp_path, capsys):
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(BAD[case])
    assert main(["compare", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsr: error:") and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_missing_sweep_and_table_only_without_results(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "none.yaml")]) == 2
    assert main(["compare", str(TOY), "--out", str(tmp_path), "--table-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "results.csv" in err[1]


@pytest.mark.parametrize("sweep", sorted(p.name for p in (ROOT / "experiments/sweeps").glob("*.yaml")))
def test_shipped_sweeps_are_valid(sweep):
    loaded = compare.load_sweep(ROOT / "experiments/sweeps" / sweep)
    assert loaded.arms and loaded.seeds


def _sweep_with_start(tmp_path) -> tuple[Path, Path, Path]:
    """A one-step sweep with a one-step `tsr train` start, run once: (sweep file, start file, OUT)."""
    start = tmp_path / "start.yaml"
    small = ("trainer.steps: 1\n  trainer.groups: 2\n  trainer.group_size: 2\n  trainer.eval_episodes: 2\n"
             "  env.max_turns: 3")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        f"base: {BASE}\nstart: start.yaml\nseeds: [0, 1]\noverrides:\n  {small}\n"
        "arms:\n  - name: none\n    set: {search.strategy: none}\n"
        "  - name: beam\n    seeds: [1]\n    set: {search.strategy: beam, search.candidates: 2}\n")
    start.write_text(BASE.read_text().replace("steps: 80", "steps: 1").replace("eval_episodes: 128", "eval_episodes: 2")
                     .replace("groups: 16", "groups: 2").replace("group_size: 8", "group_size: 2"))
    out = tmp_path / "out"
    assert main(["compare", str(sweep_file), "--out", str(out)]) == 0
    return sweep_file, start, out


def test_start_is_trained_once_and_every_arm_starts_from_it(tmp_path):
    sweep_file, start, out = _sweep_with_start(tmp_path)
    checkpoint = out / "start/checkpoints/step_1"
    assert (checkpoint / "tsr_checkpoint.json").is_file()
    results = pd.read_csv(out / "results.csv")
    assert list(zip(results["arm"], results["seed"])) == [("none", 0), ("none", 1), ("beam", 1)]
    for arm, seed in zip(results["arm"], results["seed"]):
        cfg = compare.load_config(out / f"runs/{arm}-s{seed}/config.yaml")
        assert cfg.policy.name == str(checkpoint)
    stamp = (out / "start/summary.json").stat().st_mtime_ns
    states = [run.state for run in compare.plan(compare.load_sweep(sweep_file), out)]
    assert states == ["done"] * 3 and (out / "start/summary.json").stat().st_mtime_ns == stamp
    # the start config changed since: OUT/start no longer describes it, and is not reused
    start.write_text(start.read_text().replace("lr: 0.001", "lr: 0.0005"))
    with pytest.raises(compare.SweepError, match="holds a start made with a different algo.lr"):
        compare.plan(compare.load_sweep(sweep_file), out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(sweep_file.read_text().replace("seeds: [1]", "seeds: [7]"))
    with pytest.raises(compare.SweepError, match="among the sweep's"):
        compare.load_sweep(bad)


def test_runs_record_their_start_and_a_sweep_does_not_mix_two_starts(tmp_path):
    """The same start config trained on another CPU kind gives other weights (the Sokoban start:
    0.477 on a Xeon, 0.523 on an EPYC); runs and rows from another start must not be paired."""
    sweep_file, start, out = _sweep_with_start(tmp_path)
    checkpoint = out / "start/checkpoints/step_1"
    fingerprint = compare.start_fingerprint(checkpoint)
    assert len(fingerprint) == 12 and int(fingerprint, 16) >= 0
    results = pd.read_csv(out / "results.csv", dtype={"start": str})
    assert set(results["start"]) == {fingerprint}
    assert results["machine"].str.contains("torch").all()  # the CPU and torch that finished each run
    assert compare.load_config(out / "runs/none-s0/config.yaml").trainer.tags["start"] == fingerprint
    own = compare.Arm("own", {"policy.name": "tiny", "search.strategy": "none"}, None)
    assert "start" not in compare.load_sweep(sweep_file).config(own, 0, start=checkpoint,
                                                                 start_id=fingerprint).trainer.tags
    # the start trained again elsewhere: same config, other weights
    weights = load_file(str(checkpoint / "weights.safetensors"))
    save_file({name: tensor + 1e-3 for name, tensor in weights.items()}, str(checkpoint / "weights.safetensors"))
    other = compare.start_fingerprint(checkpoint)
    assert other != fingerprint
    with pytest.raises(compare.SweepError, match=f"trained from another start \\({fingerprint}\\) than this "
                                                 f"sweep's \\({other}\\)"):
        compare.plan(compare.load_sweep(sweep_file), out)
    # without those run dirs the runs would train anew, but results.csv still holds the old start's rows
    shutil.rmtree(out / "runs")
    runs = compare.plan(compare.load_sweep(sweep_file), out)
    with pytest.raises(compare.SweepError, match=f"holds none seed 0 from start {fingerprint}, not this sweep's "
                                                 f"start {other}"):
        compare.run_sweep(compare.select(runs, seeds=[1]), out, cells=[(r.arm, r.seed) for r in runs])
    assert not list((out / "runs").glob("[!.]*"))  # refused before anything trained (only the lock file)


def test_an_sft_start_stopped_part_way_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C during a sweep's `tsr sft` start saves its step; the next run of the sweep resumes
    the start there (a changed sft.save_every does not make it another start)."""
    start = tmp_path / "start.yaml"
    start.write_text((ROOT / "experiments/sft/sokoban_tiny.yaml").read_text())
    sets = {"trainer.eval_episodes": 2, "policy.tiny_hidden": 32, "policy.tiny_layers": 1,
            "sft.demos": 8, "sft.batch_size": 4, "sft.epochs": 2, "sft.save_every": 1}
    start.write_text(yaml.safe_dump(load_sft_config(start, sets).to_dict()))
    sweep = dataclasses.replace(compare.load_sweep(ROOT / "experiments/sweeps/sokoban_ppo_sft.yaml"), start=start)
    monkeypatch.setattr(compare, "stop_requested", lambda: True)
    with pytest.raises(Interrupted, match="after step 1 of 4"):
        compare.start_checkpoint(sweep, tmp_path / "out")
    monkeypatch.undo()
    start.write_text(start.read_text().replace("save_every: 1", "save_every: 2"))
    checkpoint = compare.start_checkpoint(sweep, tmp_path / "out")
    assert checkpoint.name == "step_4"
    assert [r["step"] for r in read_metrics(tmp_path / "out/start")] == [1, 2, 3, 4]


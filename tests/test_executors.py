"""`tsr compare --executor local|ray`: same outputs, failures reported per cell, resume, Ray's absence."""

import csv
import io
import os
import shutil
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest

from tsr_cli import compare, executors
from tsr_cli.cli import main
from tsr_cli.train.run import KILL_AFTER_SAVE

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("results.csv", "table.csv", "curves.csv", "table.md", "success_vs_step.png", "success_vs_tokens.png")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """experiments/sweeps/toy.yaml with two seeds: two arms x two seeds, four cells."""
    sweep = tmp_path_factory.mktemp("sweep") / "toy.yaml"
    text = (ROOT / "experiments/sweeps/toy.yaml").read_text()
    text = text.replace("base: ../tiny/", f"base: {ROOT}/experiments/tiny/").replace("seeds: [0]", "seeds: [0, 1]")
    sweep.write_text(text)
    return sweep


@pytest.fixture(scope="module")
def local_out(toy, tmp_path_factory) -> Path:
    """The toy sweep run by the local executor into `work/out`, then moved to `local/`.

    Both executors write into the same `work/out`, so the run_dir column matches too.
    """
    work = tmp_path_factory.mktemp("work")
    assert main(["compare", str(toy), "--out", str(work / "out")]) == 0
    return Path(shutil.move(str(work / "out"), str(work / "local")))


def without_wall_time(path: Path, columns=("wall_seconds",)) -> bytes:
    """The file's bytes without its wall-time cells (CSV `columns`, table.md's last column 'wall s / run')."""
    if path.suffix == ".png":
        return path.read_bytes()
    if path.suffix == ".md":
        return "".join(line.rsplit("|", 2)[0] + "\n" if line.startswith("| ") else line + "\n"
                       for line in path.read_text().splitlines()).encode()
    rows = list(csv.reader(io.StringIO(path.read_text())))
    keep = [i for i, name in enumerate(rows[0]) if name not in columns]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return text.getvalue().encode()


def assert_same_outputs(a: Path, b: Path, columns=("wall_seconds",)) -> None:
    """Same bytes but `columns`; run_dir differs only when the two sweeps had different --out."""
    for name in OUTPUTS:
        assert without_wall_time(a / name, columns) == without_wall_time(b / name, columns), name
    assert pd.read_csv(a / "results.csv")["seed"].tolist() == [0, 1, 0, 1]


# ------------------------------------------------------------------ local executor
def test_a_failing_cell_is_reported_and_the_rest_go_on_then_rerun_resumes(toy, local_out, tmp_path, capsys):
    """A run dir that cannot be made (a file in its place) fails that cell alone; the sweep exits 1."""
    out = tmp_path / "out"
    shutil.copytree(local_out, out)
    shutil.rmtree(out / "runs/beam-s1")
    shutil.rmtree(out / "runs/beam-s0/checkpoints/step_2")  # beam-s0 as if killed in step 2:
    (out / "runs/beam-s0/summary.json").unlink()              # it resumes from step 1
    (out / "runs/beam-s1").write_text("not a directory")
    for name in ("table.md", "table.csv"):
        (out / name).unlink()
    kept = (out / "runs/none-s0/metrics.jsonl").stat().st_mtime_ns

    assert main(["compare", str(toy), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "beam seed 1" in failed[0] and "FileExistsError" in failed[0], err
    assert "1 of 4 runs failed" in err
    assert "done    beam seed 0: held-out success 0.000" in err and "(resumed from step 1)" in err, err
    assert pd.read_csv(out / "results.csv")["arm"].tolist() == ["none", "none", "beam"]  # no row for the failure
    table = pd.read_csv(out / "table.csv")  # the table follows the cells that finished
    assert dict(zip(table["arm"], table["seeds"])) == {"none": 2, "beam": 1}

    (out / "runs/beam-s1").unlink()
    assert main(["compare", str(toy), "--out", str(out)]) == 0
    assert "done    beam seed 1" in capsys.readouterr().err
    assert (out / "runs/none-s0/metrics.jsonl").stat().st_mtime_ns == kept  # finished cells not retrained
    # beam-s0 resumed from its step-1 checkpoint and beam-s1 trained from scratch: both as in one go
    assert_same_outputs(out, local_out, ("wall_seconds", "run_dir"))


def test_ray_missing_is_one_line_naming_the_extra(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["compare", str(toy), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsr: error:") and "tsr[ray]" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [(["--executor", "dask"], "unknown executor 'dask'"),
                                            (["--address", "127.0.0.1:6379"], "--executor ray")])
def test_bad_executor_flags_are_one_line_exit_2(toy, flags, message, tmp_path, capsys):
    assert main(["compare", str(toy), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_unreachable_ray_address_is_one_line_exit_2(toy, tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["compare", str(toy), "--out", str(tmp_path / "out"), "--executor", "ray",
                 "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no Ray cluster answers at 127.0.0.1:{port}" in err, err
    assert not (tmp_path / "out" / "runs" / "none-s0" / "config.yaml").exists()


def test_sweep_resources():
    assert compare.load_sweep(ROOT / "experiments/sweeps/toy.yaml").resources == {"num_cpus": 1, "num_gpus": 0}
    assert executors.check_resources({"num_gpus": 1}, "s") == {"num_cpus": 1, "num_gpus": 1}
    for bad, message in (({"gpus": 1}, "unknown resource 'gpus'"), ({"num_cpus": -1}, ">= 0"), ([1], "mapping")):
        with pytest.raises(ValueError, match=message):
            executors.check_resources(bad, "s")


def test_a_cell_trained_elsewhere_has_its_files_written_here(tmp_path):
    """Without a shared filesystem, a Ray cell's returned RUN_FILES land in the driver's run dir."""
    files = {"summary.json": b'{"steps": 2}', "metrics.jsonl": b'{"step": 0}\n'}
    assert executors.mirror(tmp_path / "runs/a-s0", files)
    assert (tmp_path / "runs/a-s0/summary.json").read_bytes() == b'{"steps": 2}'
    assert not executors.mirror(tmp_path / "runs/a-s0", files)  # a shared filesystem: nothing to write


def test_error_line_is_the_last_line():
    assert executors.error_line(ValueError("context\n\n  the cause  \n")) == "ValueError: the cause"
    assert executors.error_line(KeyError()) == "KeyError"


# ------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with two CPUs, started by the test (the executor joins it and leaves it running)."""
    ray = pytest.importorskip("ray")
    # workers at nice 0, as the executor's own local Ray has them: at Ray's 15 they
    # crawl on a machine that is busy with anything else
    before = os.environ.get(executors.NICENESS)
    os.environ[executors.NICENESS] = "0"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a `ray start` one
    finally:
        if before is None:
            del os.environ[executors.NICENESS]
        else:
            os.environ[executors.NICENESS] = before
    yield ray
    ray.shutdown()


def test_ray_outputs_match_local_byte_for_byte_but_wall_time(toy, local_out, local_ray, capsys):
    out = local_out.parent / "out"
    assert main(["compare", str(toy), "--out", str(out), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert sum(line.startswith("done") for line in err.splitlines()) == 4, err
    assert_same_outputs(out, local_out)
    assert (pd.read_csv(out / "results.csv")["wall_seconds"] > 0).all()
    assert local_ray.is_initialized()


def test_ray_failing_cell_then_a_killed_cell_resumes(toy, local_out, local_ray, tmp_path, monkeypatch, capsys):
    """A cell that raises fails alone; re-run, its worker is SIGKILLed after step 1's checkpoint.

    Ray retries the cell, which must continue from that checkpoint: from step 0
    it would be killed there again, every time. The kill hook reaches the
    worker because the executor forwards the driver's TSR_* variables.
    """
    out = tmp_path / "out"
    shutil.copytree(local_out, out)
    shutil.rmtree(out / "runs/none-s1")
    (out / "runs/none-s1").write_text("not a directory")
    assert main(["compare", str(toy), "--out", str(out), "--executor", "ray"]) == 1
    err = capsys.readouterr().err
    assert "failed  none seed 1: FileExistsError" in err and "1 of 4 runs failed" in err, err
    assert sum(line.startswith("kept") for line in err.splitlines()) == 3  # finished: not sent to Ray

    (out / "runs/none-s1").unlink()
    monkeypatch.setenv(KILL_AFTER_SAVE, "1")  # this process only plans; the cell trains in a worker
    assert main(["compare", str(toy), "--out", str(out), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "done    none seed 1: held-out success 0.000" in err and "(resumed from step 1)" in err, err
    assert_same_outputs(out, local_out, ("wall_seconds", "run_dir"))


def test_a_local_ray_runs_its_cells_at_normal_priority(monkeypatch):
    """Ray starts workers at nice 15 unless told; a local Ray the sweep starts runs its cells at 0."""
    seen = []

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            seen.append(os.environ.get(executors.NICENESS))

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(executors.NICENESS, raising=False)
    monkeypatch.setattr(executors, "import_ray", FakeRay)
    executors.RayExecutor()._connect()
    assert seen == ["0"]


def test_ctrl_c_under_ray_cancels_the_cells_at_once(toy, tmp_path, monkeypatch, capsys):
    """Ray cells never see the driver's Ctrl-C, so the local executor's "finish this step"
    would wait for whole cells: under Ray the first Ctrl-C stops the sweep (the executor
    cancels its tasks as the interrupt unwinds it), exit 130 with the resume command."""
    cancelled = []

    class Interrupting:
        name = "ray"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def run(self, runs, train, advance):
            try:
                raise KeyboardInterrupt
                yield  # a generator, as the executors are
            finally:
                cancelled.append(len(runs))

    monkeypatch.setattr(executors, "make_executor", lambda *args: Interrupting())
    assert main(["compare", str(toy), "--out", str(tmp_path / "out"), "--executor", "ray"]) == 130
    err = capsys.readouterr().err
    assert cancelled == [4]
    assert "running cells were cancelled; each keeps its last checkpoint" in err, err
    assert f"tsr compare {toy} --out {tmp_path / 'out'}" in err, err

"""`trainer.logger`: metrics.jsonl always; TensorBoard and W&B (offline) receive the same numbers."""

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tsr_cli.cli import main
from tsr_cli.train.config import load_config
from tsr_cli.train.loggers import JsonlLogger, Loggers, scalars

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"
SMALL = ["--steps", "2", "--eval-every", "1", "--set", "trainer.groups=2", "--set", "trainer.group_size=2",
         "--set", "trainer.eval_episodes=4"]
TAGS = {"sweep": "toy", "arm": "beam", "seed": 1}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A two-step tiny run logging to TensorBoard and W&B (offline), in its own process.

    The logger list leaves out jsonl on purpose: metrics.jsonl is written anyway.
    """
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    tmp = tmp_path_factory.mktemp("logged")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp / "cfg"),
           "WANDB_CACHE_DIR": str(tmp / "cache"), "WANDB_DATA_DIR": str(tmp / "data")}
    run_dir = tmp / "run"
    done = subprocess.run([sys.executable, "-m", "tsr_cli.cli", "train", "--config", str(CONFIG), *SMALL,
                           "--run-dir", str(run_dir), "--set", "trainer.logger=[tensorboard, wandb]",
                           "--set", f"trainer.tags={json.dumps(TAGS)}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [0, 1, 2]
    return run_dir, records


def test_tensorboard_gets_every_number_at_its_step(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, records = logged_run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    for record in records:
        for key, value in scalars(record).items():
            logged = {event.step: event.value for event in events.Scalars(key)}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6), key  # stored as float32


def wandb_records(path: Path):
    """The protobuf records of a `.wandb` run file (a LevelDB-style log: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""  # 7-byte file header; then chunks of crc32 (4), length (2), type (1), data
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in the block for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def test_wandb_offline_run_holds_the_metrics_and_tags(logged_run):
    run_dir, records = logged_run
    [path] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history, runs = {}, []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
        elif record.WhichOneof("record_type") == "run":
            runs.append(record.run)
    for record in records:
        assert {key: history[record["step"]][key] for key in scalars(record)} == scalars(record)
    assert runs[0].run_group == "toy" and set(runs[0].tags) == {"sweep=toy", "arm=beam", "seed=1"}
    assert runs[0].display_name == "run" and runs[0].run_id == (run_dir / "wandb_id").read_text()


def test_default_is_metrics_jsonl_only(tmp_path):
    cfg = load_config(CONFIG)
    assert cfg.trainer.logger == ["jsonl"]
    assert [type(logger) for logger in Loggers(cfg, tmp_path).loggers] == [JsonlLogger]


def test_missing_extra_is_one_line_exit_2_before_the_run_dir(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(CONFIG), *SMALL, "--run-dir", str(run_dir),
                 "--set", "trainer.logger=[jsonl, wandb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tsr[wandb]" in err, err
    assert not run_dir.exists()

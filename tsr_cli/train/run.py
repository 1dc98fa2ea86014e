"""A run directory: config, metrics, learning curve, checkpoints and summary.

    RUN_DIR/config.yaml       the resolved config
    RUN_DIR/metrics.jsonl     one object per step (step 0: the initial evaluation)
    RUN_DIR/curves.csv        the learning curve (held-out columns filled on eval steps)
    RUN_DIR/checkpoints/step_N/
    RUN_DIR/summary.json

Under torchrun only rank 0 writes here (`train/distributed.py`); the other
ranks train alongside it and wait at barriers while it saves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pandas as pd

from tsr_cli.train import distributed
from tsr_cli.train.checkpoint import latest_checkpoint, load_into, save_checkpoint
from tsr_cli.train.config import TrainConfig, dump_config, load_config
from tsr_cli.train.trainer import Trainer

#: test hook: SIGKILL the process right after the checkpoint of this step is written
KILL_AFTER_SAVE = "TSR_KILL_AFTER_SAVE"

CURVE_COLUMNS = ["step", "train_success", "train_return", "loss", "kl", "entropy", "kept_fraction",
                 "val_success_rate", "val_mean_return", "val_sampled_success_rate", "val_invalid_action_rate",
                 "logprob_diff_max", "tokens_generated", "env_steps",
                 "sim_env_steps", "wall_seconds"]
CUMULATIVE = ("tokens_generated", "env_steps", "sim_env_steps")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_curves(run_dir: Path) -> pd.DataFrame:
    """curves.csv: one row per step; token and step counts are cumulative."""
    frame = pd.DataFrame(read_metrics(run_dir))
    for column in CURVE_COLUMNS:
        if column not in frame:
            frame[column] = float("nan")
    frame = frame[CURVE_COLUMNS].copy()
    for column in CUMULATIVE:
        frame[column] = frame[column].fillna(0).cumsum().astype(int)
    frame.to_csv(Path(run_dir) / "curves.csv", index=False)
    return frame


class Run:
    """Ties a Trainer to its directory: logging, checkpoints, resume."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, on_step=None):
        self.cfg = cfg
        self.dir = Path(run_dir)
        #: called with each logged record (step 0 is the initial evaluation); settable
        self.on_step = on_step or (lambda record: None)
        self._writer = None
        self.trainer = Trainer(cfg, on_step=self._log)
        self.world = self.trainer.world

    @classmethod
    def create(cls, cfg: TrainConfig, on_step=None, overwrite: bool = False) -> "Run":
        world = distributed.setup(cfg)  # checks and records world_size before config.yaml is written
        run_dir = cfg.resolved_run_dir()
        exists = (run_dir / "config.yaml").exists()
        if exists and not overwrite:
            raise FileExistsError(f"run directory {run_dir} already holds a run; use --resume to "
                                  "continue it, --overwrite to replace it, or --run-dir")
        world.barrier()  # every rank has looked before rank 0 writes
        if world.is_main:
            if exists:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
        world.barrier()
        return cls(cfg, run_dir, on_step)

    @classmethod
    def resume(cls, run_dir: Path, on_step=None) -> "Run":
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"no run to resume at {run_dir} (config.yaml missing)")
        run = cls(load_config(run_dir / "config.yaml"), run_dir, on_step)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is not None:
            load_into(run.trainer, checkpoint)
        run._truncate_metrics(run.trainer.step if checkpoint else -1)
        return run

    def train(self) -> dict:
        self.trainer.run(save=self._save)
        summary = self.trainer.summary()
        if self.world.is_main:
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=1))
            write_curves(self.dir)
        self.world.barrier()
        return summary

    def _log(self, record: dict) -> None:
        if not self.world.is_main:  # records are already reduced over ranks
            return
        with open(self.dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._tensorboard(record)
        self.on_step(record)

    def _tensorboard(self, record: dict) -> None:
        """Mirror the record to TensorBoard when it is installed (metrics.jsonl always)."""
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._writer = False
                return
            self._writer = SummaryWriter(str(self.dir / "tensorboard"))
        if self._writer:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, record["step"])
            self._writer.flush()

    def _save(self, step: int) -> None:
        if self.world.is_main:
            save_checkpoint(self.trainer, self.dir)
        self.world.barrier()
        if os.environ.get(KILL_AFTER_SAVE) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)

    def _truncate_metrics(self, last_step: int) -> None:
        """Drop records a killed run logged after its last checkpoint (they will be redone)."""
        if not self.world.is_main:
            return
        kept = [r for r in read_metrics(self.dir) if r["step"] <= last_step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        (self.dir / "metrics.jsonl").write_text(text)

"""A run directory: config, metrics, learning curve, checkpoints and summary.

    RUN_DIR/config.yaml       the resolved config
    RUN_DIR/metrics.jsonl     one object per step (step 0: the initial evaluation)
    RUN_DIR/curves.csv        the learning curve (held-out columns filled on eval steps)
    RUN_DIR/checkpoints/step_N/
    RUN_DIR/summary.json

What survives a crash (README "Reliability"): resume cleans what a killed
save left, takes the newest checkpoint that reads back, and cuts
metrics.jsonl (dropping a torn last line) and curves.csv back to that step,
so the finished run logs every step once, as an uninterrupted run would.
Ctrl-C (`request_stop`) finishes the current step and saves a checkpoint
at it before `train` raises Interrupted; a full disk is a RunFault.

Under torchrun only rank 0 writes here (`train/distributed.py`); the other
ranks train alongside it and wait at barriers while it writes. Every rank
stops at the same step: a stop request on any rank stops them all.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import threading
from pathlib import Path

import pandas as pd

from tsr_cli.errors import Interrupted, RunFault, StoppedRun, UserError, first_line, is_disk_full, warn
from tsr_cli.evaluate import EVAL_SEED_OFFSET
from tsr_cli.train.checkpoint import clean_checkpoints, fsync_file, latest_checkpoint, load_into, save_checkpoint
from tsr_cli.train.config import TrainConfig, dump_config, load_config
from tsr_cli.train.loggers import Loggers, require as require_loggers
from tsr_cli.train.trainer import Trainer

#: test hook: SIGKILL the process right after the checkpoint of this step is written
KILL_AFTER_SAVE = "TSR_KILL_AFTER_SAVE"

CURVE_COLUMNS = ["step", "train_success", "train_return", "loss", "kl", "entropy", "kept_fraction",
                 "val_success_rate", "val_mean_return", "val_sampled_success_rate", "val_invalid_action_rate",
                 "logprob_diff_max", "tokens_generated", "env_steps",
                 "sim_env_steps", "wall_seconds"]
CUMULATIVE = ("tokens_generated", "env_steps", "sim_env_steps")

#: Ctrl-C asks every run in this process to stop after its current step. A
#: signal belongs to the process, not to one Run, and `tsr compare` makes its
#: Runs deep inside the sweep, so the request is process-wide.
_STOP = threading.Event()


def request_stop() -> None:
    """Ask the training in this process to stop after the current step (and save)."""
    _STOP.set()


def clear_stop() -> None:
    _STOP.clear()


def stop_requested() -> bool:
    return _STOP.is_set()


class MetricsError(ValueError):
    """metrics.jsonl is damaged before its last line (a crash only ever tears the last one)."""


def machine() -> str:
    """The processor and torch build that finished the run (`summary.json`'s `machine`).

    A seed's curve repeats exactly on the same CPU kind only: other kernels round
    differently, and a run amplifies it (README, Reliability).
    """
    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, torch {torch.__version__}"


def read_metrics(run_dir: Path, on_torn=None) -> list[dict]:
    """metrics.jsonl's records. A torn last line (a kill while writing it) is dropped;
    `on_torn(message)` hears about it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        record = _record(line)
        if record is not None:
            records.append(record)
        elif index < len(lines) - 1:
            raise MetricsError(f"{path} line {number} is not a JSON record and is not the last line; "
                               "fix or delete that line")
        elif on_torn:
            on_torn(f"dropped the torn last line ({number}) of {path}")
    return records


def cut_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only metrics.jsonl's records up to `last_step` (what a resumed run will not redo);
    a torn last line is dropped with a warning."""
    kept = [r for r in read_metrics(run_dir, on_torn=warn) if r["step"] <= last_step]
    (Path(run_dir) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def _record(line: str) -> dict | None:
    """One metrics record, or None if the line is not one (torn or edited)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


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


def check_instances(cfg: TrainConfig) -> None:
    """Fail before training if the env cannot make a training or a held-out instance.

    Some arguments only fail at reset (an empty WebShop split, a room the
    generator cannot fill); a run would otherwise stop at its first rollout.
    """
    import envs

    make = envs.factory(cfg.env.name, **cfg.env.args)
    for seed, kind in ((0, "training"), (EVAL_SEED_OFFSET, "held-out")):
        try:
            make().reset(seed=seed)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"env {cfg.env.name} with args {cfg.env.args} cannot make a {kind} "
                             f"instance: {first_line(exc)}") from None


class Run:
    """Ties a Trainer to its directory: logging, checkpoints, resume."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, on_step=None):
        self.cfg = cfg
        self.dir = Path(run_dir)
        #: called with each logged record (step 0 is the initial evaluation); settable
        self.on_step = on_step or (lambda record: None)
        #: the step of the newest checkpoint on disk (None before the first)
        self._saved_step: int | None = None
        # What fails while a run is built comes from its config, env args or
        # policy files: a user's mistake, told in one line.
        with UserError.wrap(ValueError, TypeError, KeyError):
            check_instances(cfg)
        with UserError.wrap(ValueError, OSError, ImportError):
            self.trainer = Trainer(cfg, on_step=self._log)
            self.trainer.protocol()  # the turn budget, else checked only at the first rollout
        self.world = self.trainer.world
        self.loggers = Loggers(cfg, self.dir)

    @classmethod
    def create(cls, cfg: TrainConfig, on_step=None, overwrite: bool = False) -> "Run":
        require_loggers(cfg)  # before the run dir exists: a missing extra leaves nothing behind
        run_dir = cfg.resolved_run_dir()
        existing = (run_dir / "config.yaml").exists()
        if existing and not overwrite:
            raise FileExistsError(f"run directory {run_dir} already holds a run; use --resume to "
                                  "continue it, --overwrite to replace it, or --run-dir")
        run = cls(cfg, run_dir, on_step)  # built first: a bad config leaves no directory behind
        run.world.barrier()  # every rank has looked before rank 0 writes
        if run.world.is_main:
            if existing:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
        run.world.barrier()
        return run

    @classmethod
    def resume(cls, run_dir: Path, on_step=None) -> "Run":
        """Continue from the newest readable checkpoint (none: from the start)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"no run to resume at {run_dir} (config.yaml missing)")
        run = cls(load_config(run_dir / "config.yaml"), run_dir, on_step)
        main = run.world.is_main
        if main:
            clean_checkpoints(run_dir)
        run.world.barrier()
        checkpoint = latest_checkpoint(run_dir, on_skip=warn if main else None)
        # files that parse but do not fit this run's model; metrics damaged mid-file
        with UserError.wrap(ValueError):
            if checkpoint is not None:
                load_into(run.trainer, checkpoint)
                run._saved_step = run.trainer.step
            if main:
                run._cut_logs(run.trainer.step if checkpoint else -1)
        return run

    def train(self) -> dict:
        """Train to the end; Ctrl-C (`request_stop`) and a full disk stop it early, resumable."""
        try:
            if stop_requested():  # Ctrl-C came between two runs of a sweep
                raise Interrupted(f"interrupted before training; {self._last_saved()}", self.dir)
            self.trainer.run(save=self._save, should_stop=lambda: self.world.any(stop_requested()))
            if self.trainer.step < self.cfg.trainer.steps:
                raise self._interrupted()
            summary = {**self.trainer.summary(), "machine": machine()}
            if self.world.is_main:
                (self.dir / "summary.json").write_text(json.dumps(summary, indent=1))
                write_curves(self.dir)
            self.world.barrier()
        except StoppedRun as exc:
            exc.resume = exc.resume or f"tsr train --resume {self.dir}"
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, keep the last checkpoint
            raise Interrupted(f"interrupted during step {self.trainer.step} and stopped at once; "
                              f"{self._last_saved()}", self.dir) from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise RunFault(f"no space left on the device holding {self.dir} while writing "
                           f"{exc.filename or 'the run directory'}; {self._last_saved()}", self.dir) from None
        finally:
            self.loggers.close()
        return summary

    def _interrupted(self) -> Interrupted:
        """Ctrl-C asked to stop: make sure the step just finished has a checkpoint."""
        if self._saved_step != self.trainer.step:
            self._save(self.trainer.step)
        return Interrupted(f"interrupted after step {self.trainer.step} of {self.cfg.trainer.steps}; "
                           f"saved checkpoint step_{self.trainer.step}", self.dir)

    def _last_saved(self) -> str:
        return f"the last checkpoint is step_{self._saved_step}" if self._saved_step is not None \
            else "no checkpoint was saved yet"

    def _log(self, record: dict) -> None:
        if not self.world.is_main:  # records are already reduced over ranks
            return
        self.loggers.log(record)
        self.on_step(record)

    def _save(self, step: int) -> None:
        if self.world.is_main:
            # The records up to this step must be on disk before the checkpoint
            # that resume will trust (a power cut can lose unsynced appends).
            fsync_file(self.dir / "metrics.jsonl", missing_ok=True)
            save_checkpoint(self.trainer, self.dir)
        self.world.barrier()
        self._saved_step = step
        if os.environ.get(KILL_AFTER_SAVE) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)

    def _cut_logs(self, last_step: int) -> None:
        """Drop what a stopped run logged after the checkpoint resumed from (it will be redone)."""
        cut_metrics(self.dir, last_step)
        if (self.dir / "curves.csv").is_file():
            write_curves(self.dir)
        if last_step < self.cfg.trainer.steps:  # a summary of steps no longer on disk
            (self.dir / "summary.json").unlink(missing_ok=True)


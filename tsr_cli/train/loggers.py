"""Where a run's step records go: `trainer.logger: [jsonl, tensorboard, wandb]`.

metrics.jsonl is the record the rest of tsr reads (curves, `tsr compare`,
resume), so it is written whatever the list says. TensorBoard and Weights &
Biases mirror each record's numbers, at the record's step, for the tools
people already watch runs with. Both are optional extras, imported only when
a run asks for them; a missing one fails when the run is set up, naming the
extra, not after the first step has trained.

    RUN_DIR/metrics.jsonl     jsonl
    RUN_DIR/tensorboard/      tensorboard (event files; the run's tags as text)
    RUN_DIR/wandb/            wandb (local files; online runs also sync; WANDB_MODE=offline
                              keeps them here for `wandb sync`)
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path

LOGGERS = ("jsonl", "tensorboard", "wandb")
#: the package each optional logger needs, which is also the name of its extra
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def scalars(record: dict) -> dict:
    """The record's numbers, minus the step (the loggers' x axis)."""
    return {key: value for key, value in record.items()
            if key != "step" and isinstance(value, (int, float))}


def tag_text(tags: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in tags.items())


class JsonlLogger:
    """Appends each record to RUN_DIR/metrics.jsonl, one JSON object per line."""

    def __init__(self, run_dir: Path, cfg=None):
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        return None


class TensorBoardLogger:
    """Scalars under RUN_DIR/tensorboard/, flushed every step so a live TensorBoard sees them."""

    def __init__(self, run_dir: Path, cfg):
        self.dir = Path(run_dir) / "tensorboard"
        self.tags = cfg.trainer.tags
        self._writer = None

    def log(self, record: dict) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.dir))
            if self.tags:
                self._writer.add_text("tags", tag_text(self.tags), 0)
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, record["step"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbLogger:
    """One W&B run per run dir: named after it, grouped by sweep, tagged key=value, config attached.

    The run id is kept in RUN_DIR/wandb_id, so a resumed run continues the
    same W&B run (online; W&B ignores re-logged steps it already has).
    """

    def __init__(self, run_dir: Path, cfg):
        self.dir = Path(run_dir)
        self.cfg = cfg
        self._run = None

    def log(self, record: dict) -> None:
        if self._run is None:
            self._run = self._open()
        self._run.log(scalars(record), step=record["step"])

    def _open(self):
        import wandb

        tags = self.cfg.trainer.tags
        return wandb.init(project=os.environ.get("WANDB_PROJECT") or "tsr", dir=str(self.dir),
                          id=self._run_id(), resume="allow", name=self.dir.name,
                          group=str(tags["sweep"]) if "sweep" in tags else None,
                          tags=[f"{key}={value}" for key, value in tags.items()],
                          config=self.cfg.to_dict(), reinit="create_new")

    def _run_id(self) -> str:
        path = self.dir / "wandb_id"
        if not path.is_file():
            path.write_text(secrets.token_hex(8))
        return path.read_text().strip()

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


_CLASSES = {"jsonl": JsonlLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger}


class Loggers:
    """The run's loggers as one: jsonl first (always), then the others the config names."""

    def __init__(self, cfg, run_dir: Path):
        require(cfg)
        names = ["jsonl", *(name for name in dict.fromkeys(cfg.trainer.logger) if name != "jsonl")]
        self.loggers = [_CLASSES[name](run_dir, cfg) for name in names]

    def log(self, record: dict) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def require(cfg) -> None:
    """An ImportError naming the extra when a logger the config names is not installed."""
    for name in cfg.trainer.logger:
        package = _PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ImportError(f"trainer.logger {name} needs {package}: pip install 'tsr[{package}]'")

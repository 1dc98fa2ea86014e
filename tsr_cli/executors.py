"""Sweep executors: who trains the (arm, seed) cells of `tsr compare`, and where.

    LocalExecutor   one cell after another in this process (the default)
    RayExecutor     every cell a Ray task, on a local Ray or a cluster

Both take the function that trains one cell (`compare.train_run`) and yield a
`CellResult` per cell as it finishes. compare.py turns those into
results.csv the same way for both, so the outputs match byte for byte apart
from wall time: a cell's numbers depend only on its config and seed, not on
where it ran (the tiny policy pins torch to one thread everywhere; see
`RayExecutor` for threads per cell).

A cell that raises is reported with the error's last line and the others go
on; only Ctrl-C stops the sweep. Ray is imported only when `--executor ray`
asks for it (`pip install 'tsr[ray]'`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tsr_cli.errors import StoppedRun

#: a cell's training function: (planned run, advance(steps)) -> summary dict
Train = Callable[[Any, Callable[[int], None]], dict]
#: reports progress in cells; a cell adds up to 1 (the local executor in fractions, per step)
Advance = Callable[[float], None]
#: the run files compare.py reads back; a Ray cell returns them so no result stays on a node
RUN_FILES = ("config.yaml", "metrics.jsonl", "curves.csv", "summary.json")
#: sweep-file `resources:` keys (Ray's task options) and the default per cell
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")
DEFAULT_RESOURCES = {"num_cpus": 1, "num_gpus": 0}
#: Ray re-runs a cell whose worker died (OOM kill, lost node) this often; it resumes from its checkpoint
RAY_RETRIES = 2
#: the driver's environment variables with these prefixes reach every cell (W&B's mode, project and
#: key; tsr's own): on a cluster, workers do not inherit the shell that ran `tsr compare`
FORWARDED_ENV = ("TSR_", "WANDB_")
#: the raylet's worker niceness (default 15), read from the environment by a local Ray
NICENESS = "RAY_worker_niceness"
RAY_EXTRA = "--executor ray needs Ray: pip install 'tsr[ray]' (in a clone: pip install -e '.[ray]')"


class CellBusy(RuntimeError):
    """Another `tsr compare` on the same OUT holds this cell's lock: it is that process's to train."""


@dataclass(frozen=True)
class CellResult:
    """One finished cell: its planned run and either the run's summary or the error's last line."""

    run: Any
    summary: dict | None = None
    error: str | None = None
    #: it failed because another `tsr compare` was training it (CellBusy): its row is that one's
    busy: bool = False
    #: the checkpoint step it continued from (a resumed or retried cell); None: from the start
    resumed_from: int | None = None
    #: where it trained, when that was not this machine's filesystem (files were copied back)
    copied_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, run: Any, exc: BaseException) -> "CellResult":
        return cls(run, error=error_line(exc), busy=isinstance(exc, CellBusy))


def error_line(exc: BaseException) -> str:
    """`Type: last line of the message`: what a user needs to find the cause in a sweep's log."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def make_executor(name: str, address: str | None = None, resources: dict | None = None):
    """The executor `--executor NAME` names; Ray's absence is an ImportError naming the extra."""
    if name == "local":
        if address:
            raise ValueError("--address names a Ray cluster; use it with --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, resources)
    raise ValueError(f"unknown executor {name!r}; choose local or ray")


# ------------------------------------------------------------------ local
class LocalExecutor:
    """Today's behaviour: cells in order, in this process; the bar moves per training step."""

    name = "local"

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run(self, runs: list, train: Train, advance: Advance) -> Iterator[CellResult]:
        for run in runs:
            steps = max(run.cfg.trainer.steps, 1)
            moved = []

            def step(n: int) -> None:
                moved.append(n / steps)
                advance(n / steps)

            resumed = resume_step(run.dir)
            try:
                result = CellResult(run, summary=train(run, step), resumed_from=resumed)
            except StoppedRun:  # Ctrl-C or a full disk stops the sweep, resumable
                raise
            except Exception as exc:  # noqa: BLE001 - a cell's failure must not stop the others
                result = CellResult.failed(run, exc)
            advance(max(0.0, 1 - sum(moved)))
            yield result


def resume_step(run_dir: Path) -> int | None:
    """The step of the checkpoint a cell will continue from, or None when it starts from step 0."""
    from tsr_cli.train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(Path(run_dir))
    return int(checkpoint.name.split("_")[1]) if checkpoint else None


# ------------------------------------------------------------------ Ray
def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_EXTRA) from None
    return ray


class RayExecutor:
    """Every cell a Ray task with the sweep's `resources:` (default one CPU, no GPU).

    Connects to the cluster `address` (or RAY_ADDRESS, or the last `ray start`
    on this machine) or starts a local one whose workers are this machine's
    cores. A local Ray it started is shut down at the end; a cluster is left
    running, with unfinished tasks cancelled on Ctrl-C.

    Threads per cell: a task runs torch with as many threads as it has CPUs
    (Ray's OMP_NUM_THREADS rule, set again per task because Ray reuses
    workers). The tiny policy pins one thread regardless, so for it cells are
    the only parallelism: give each cell one CPU.

    Files: each cell writes its run directory at the path the sweep's --out
    gives (made absolute), on whichever node runs it. With a shared
    filesystem that is the one directory everywhere. Without one, the task
    returns the run's small files (RUN_FILES) and they are written here, so
    results and tables are complete; checkpoints stay on the node that
    trained the cell, and the cell is reported as copied from that node.
    """

    name = "ray"

    def __init__(self, address: str | None = None, resources: dict | None = None):
        self.ray = import_ray()
        self.address = address
        self.resources = {**DEFAULT_RESOURCES, **(resources or {})}
        self._started = False
        # Ray itself retries an address that does not answer for minutes; say so at once
        if address or os.environ.get("RAY_ADDRESS"):
            check_reachable(address or os.environ["RAY_ADDRESS"])

    def __enter__(self) -> "RayExecutor":
        return self

    def _connect(self) -> None:
        """Join or start Ray on first use, so a sweep with nothing left to train starts nothing."""
        if not self.ray.is_initialized():  # a caller (a test, a notebook) may have started Ray already
            if not (self.address or os.environ.get("RAY_ADDRESS")):
                # A local Ray runs its workers at nice 15: cells would yield the cores to
                # anything else on the machine. Here the cells are the work.
                os.environ.setdefault(NICENESS, "0")
            self.ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
            self._started = True

    def __exit__(self, *exc) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def run(self, runs: list, train: Train, advance: Advance) -> Iterator[CellResult]:
        if not runs:
            return
        self._connect()
        options = {**self.resources, "max_retries": RAY_RETRIES}
        if forwarded_env():
            options["runtime_env"] = {"env_vars": forwarded_env()}
        remote = self.ray.remote(_train_cell).options(**options)
        cwd = Path.cwd()
        pending = {remote.remote(train, _anchored(run, cwd)): run for run in runs}
        try:
            while pending:
                [ref], _ = self.ray.wait(list(pending), num_returns=1)
                result = self._collect(ref, pending.pop(ref))
                advance(1)
                yield result
        finally:
            for ref in pending:  # Ctrl-C or an error here: don't leave cells running on a cluster
                self.ray.cancel(ref, force=True)

    def _collect(self, ref, run) -> CellResult:
        try:
            summary, files, node, resumed = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # the cell raised: report its own error
            return CellResult.failed(run, exc.cause or exc)
        except self.ray.exceptions.RayError as exc:  # its worker or node died more than RAY_RETRIES times
            return CellResult.failed(run, exc)
        copied = mirror(Path(run.dir), files)
        return CellResult(run, summary=summary, resumed_from=resumed, copied_from=node if copied else None)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ConnectionError, at once, when nothing listens at a `host:port` (or ray://host:port) address."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                              "`ray start --head`, or fix --address / RAY_ADDRESS") from None


def _anchored(run, cwd: Path):
    """The run with an absolute run_dir: Ray workers do not share the driver's working directory."""
    directory = Path(run.cfg.trainer.run_dir)
    if directory.is_absolute():
        return run
    trainer = dataclasses.replace(run.cfg.trainer, run_dir=str(cwd / directory))
    return dataclasses.replace(run, cfg=dataclasses.replace(run.cfg, trainer=trainer))


def forwarded_env() -> dict:
    return {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV)}


def _train_cell(train: Train, run) -> tuple[dict, dict, str, int | None]:
    """Runs in a Ray worker: train one cell; return its summary, RUN_FILES, this node's name and
    the step it resumed from (a retry after the worker died continues from its checkpoint)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, math.floor(cpus)))
    resumed = resume_step(run.dir)
    summary = train(run, lambda n: None)
    files = {name: (run.dir / name).read_bytes() for name in RUN_FILES if (run.dir / name).is_file()}
    return summary, files, socket.gethostname(), resumed


def mirror(directory: Path, files: dict) -> bool:
    """Write a cell's returned files here where they are missing or differ; True if any was written.

    On a shared filesystem they are the same files and nothing is written.
    """
    written = False
    for name, data in files.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written = True
    return written


def check_resources(value, where: str) -> dict:
    """A sweep file's `resources:` mapping, checked: known keys, numbers >= 0."""
    if value is None:
        return dict(DEFAULT_RESOURCES)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'resources' must be a mapping like {{num_cpus: 1, num_gpus: 0}}")
    for key, amount in value.items():
        if key not in RESOURCE_KEYS:
            raise ValueError(f"{where}: unknown resource {key!r}; known: {', '.join(RESOURCE_KEYS)}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"{where}: resources.{key} must be a number >= 0, got {amount!r}")
    return {**DEFAULT_RESOURCES, **value}


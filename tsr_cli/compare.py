"""Ablation sweeps (`tsr compare`): arms x seeds of training runs -> tables, curves, plots.

A sweep file (`tsr_cli.sweep_file`) names a base config, the arms (each a set of
dotted overrides) and the seeds.

A `start:` config is trained once, into OUT/start/, before any arm; every arm
then starts from its last checkpoint (`policy.name`), unless the arm sets
`policy.name` itself. An arm may run on a subset of the seeds (`seeds:`), so
cheap arms can have more seeds than expensive ones; every arm still uses the
same instance seeds per seed, so arms stay paired.

Why a sweep command rather than a shell loop: every run's config is checked
before the first one trains, an interrupted sweep resumes where it stopped,
and the table compares arms on the paper's three axes at once: held-out
success (mean ± std over seeds), speed (steps to reach a fraction of the best
arm's success) and compute (generated tokens, real and simulated env steps,
wall time). The cells train one after another in this process or, with
`--executor ray`, side by side as Ray tasks (tsr_cli.executors); the outputs
are the same. Other `tsr compare` processes may share OUT, each with its own
cells (`_locked`). Run dirs stay on the machine that trained them; with
`--keep-recorded` a sweep continues on another machine (or a fresh clone) from
the rows OUT/results.csv holds, training only the cells it lacks.

    OUT/start/                    the start's run directory (committed: a start trained
                                  again on another CPU kind is another start)
    OUT/runs/<arm>-s<seed>/       one run directory each (tsr_cli.train.run), tagged with
                                  the sweep, arm and seed (trainer.tags, for the loggers)
                                  and the start's fingerprint (`start`)
    OUT/results.csv               one row per arm x seed
    OUT/table.md, OUT/table.csv   one row per arm
    OUT/curves.csv                every run's learning curve, long format
    OUT/success_vs_step.png, OUT/success_vs_tokens.png
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pandas as pd

from tsr_cli.tables import (  # noqa: F401  (re-exported: the sweep API)
    arm_table,
    caption,
    final_entropy,
    last_quarter_trend,
    mean_std,
    plot_success,
    references,
    steps_to_threshold,
    threshold_target,
    to_markdown,
)
from tsr_cli.executors import CellBusy, CellResult, LocalExecutor
from tsr_cli.sft import expert_success
from tsr_cli.sweep_file import (  # noqa: F401  (re-exported: the sweep API)
    Arm,
    Sweep,
    SweepError,
    default_out,
    load_sweep,
)
from tsr_cli.train.config import TrainConfig, load_config, read_yaml_mapping
from tsr_cli.train.checkpoint import latest_checkpoint
from tsr_cli.train.run import Run, stop_requested, write_curves

SUMMARY_KEYS = ("final_val_success_rate", "final_val_mean_return", "initial_val_success_rate", "steps",
                "tokens_generated", "env_steps", "sim_env_steps", "wall_seconds",
                "final_val_sampled_success_rate", "final_val_invalid_action_rate", "sibling_tokens",
                "machine")
RESULT_COLUMNS = ["arm", "env", "algo", "search", "seed", *SUMMARY_KEYS, "start", "steps_to_threshold",
                  "run_dir"]


# ------------------------------------------------------------------ running it
@dataclass(frozen=True)
class PlannedRun:
    """One arm x seed, with what is on disk: `done`, `resume` (started, unfinished), `new`, or
    `recorded` (no run dir, a row in OUT/results.csv, kept: `plan(..., keep_recorded=True)`)."""

    arm: str
    seed: int
    cfg: TrainConfig
    state: str

    @property
    def dir(self) -> Path:
        return self.cfg.resolved_run_dir()


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{arm}-s{seed}"


def plan(sweep: Sweep, out: Path, on_start=None, keep_recorded: bool = False) -> list[PlannedRun]:
    """Every arm x seed in order, with its state; run dirs are checked before anything trains.

    A sweep with a `start:` has it trained first (once; `on_start(path)` is
    called when that begins), since every arm's config names its checkpoint.
    With `keep_recorded`, a cell without a run dir whose row OUT/results.csv
    holds is `recorded`: its row is kept and it is not trained again (a grid
    committed from another machine, whose run dirs stay there). Without it
    such a cell is `new` and trains again, as a reproduction should.
    """
    start = start_checkpoint(sweep, out, on_start) if sweep.start is not None else None
    start_id = start_fingerprint(start) if start is not None else None
    runs = []
    for arm in sweep.arms:
        for seed in sweep.arm_seeds(arm):
            cfg = sweep.config(arm, seed, run_dir(out, arm.name, seed), start, start_id)
            runs.append(PlannedRun(arm.name, seed, cfg, _state(cfg)))
    if keep_recorded:
        recorded = recorded_rows(out)
        runs = [replace(run, state="recorded")
                if run.state == "new" and (run.arm, run.seed) in recorded else run for run in runs]
    return runs


def recorded_rows(out: Path) -> dict[tuple[str, int], dict]:
    """OUT/results.csv's rows by (arm, seed) cell; empty without the file."""
    path = Path(out) / "results.csv"
    if not path.is_file():
        return {}
    return {(row["arm"], int(row["seed"])): row for row in read_results(path).to_dict("records")}


def start_checkpoint(sweep: Sweep, out: Path, on_start=None) -> Path:
    """OUT/start's last checkpoint, training the sweep's start config there first if needed."""
    directory = Path(out) / "start"
    _check_start(sweep.start, directory)
    if not (directory / "summary.json").is_file():
        if on_start:
            on_start(sweep.start)
        train_start(sweep.start, directory)
    checkpoint = latest_checkpoint(directory)
    if checkpoint is None:
        raise SweepError(f"the start run {directory} finished without a checkpoint")
    return checkpoint


def start_fingerprint(checkpoint: Path) -> str:
    """Which start a run was trained from: the first 12 hex digits of its weights' sha256.

    The same start config trained on another CPU kind gives other weights (float
    rounding differs between kernels, and hundreds of steps amplify it: the Sokoban
    start scored 0.477 on a Xeon and 0.523 on an EPYC), so a sweep cannot pair runs
    by the start's config alone.
    """
    return hashlib.sha256((Path(checkpoint) / "weights.safetensors").read_bytes()).hexdigest()[:12]


def _load_start(config: Path, directory: Path):
    """A start config bound to `directory`: an SFTConfig when it has an `sft:` section, else a TrainConfig."""
    raw = read_yaml_mapping(config, "start config", SweepError)
    overrides = {"trainer.run_dir": str(directory)}
    if "sft" in raw:
        from tsr_cli.sft import load_sft_config

        return load_sft_config(config, overrides)
    return load_config(config, overrides)


def _check_start(config: Path, directory: Path) -> None:
    """OUT/start made from another start config is an error, as a run dir is: reusing it would
    start every arm from a policy the sweep file no longer describes."""
    recorded = directory / ("sft.yaml" if (directory / "sft.yaml").is_file() else "config.yaml")
    if not recorded.is_file():
        return
    want, have = _comparable(_load_start(config, directory)), _comparable(_load_start(recorded, directory))
    key = _first_difference(want, have) or _first_difference(have, want)
    if key:
        raise SweepError(f"{directory} holds a start made with a different {key}; "
                         "delete it or choose another --out")


def train_start(config: Path, directory: Path) -> dict:
    """Train a start config into `directory`: `tsr sft` when it has an `sft:` section, else `tsr train`."""
    cfg = _load_start(config, directory)
    if isinstance(cfg, TrainConfig):
        if (directory / "config.yaml").is_file():
            return Run.resume(directory).train()
        return Run.create(cfg).train()
    from tsr_cli.sft import SFTRun

    if (directory / "sft.yaml").is_file():  # a start stopped part-way (its config checked by _check_start)
        return SFTRun.resume(directory).train(should_stop=stop_requested)
    return SFTRun.create(cfg, overwrite=True).train(should_stop=stop_requested)


def select(runs: list[PlannedRun], arms: list[str] = (), seeds: list[int] = ()) -> list[PlannedRun]:
    """The runs of the named arms and seeds (all when none are named): one cell re-run alone."""
    for wanted, have, what in ((arms, [r.arm for r in runs], "arm"), (seeds, [r.seed for r in runs], "seed")):
        unknown = [w for w in wanted if w not in have]
        if unknown:
            raise SweepError(f"no {what} {unknown[0]!r} in this sweep; it has {', '.join(map(str, dict.fromkeys(have)))}")
    return [r for r in runs if (not arms or r.arm in arms) and (not seeds or r.seed in seeds)]


def _state(cfg: TrainConfig) -> str:
    """A run dir made from another config is an error: reusing it would silently mix settings."""
    directory = cfg.resolved_run_dir()
    state = _on_disk(directory)
    if state == "new":
        return state
    recorded = load_config(directory / "config.yaml")
    key = _first_difference(_comparable(recorded), _comparable(cfg))
    if key:
        raise SweepError(f"{directory} holds a run made with a different {key}; "
                         "delete it or choose another --out")
    had, has = recorded.trainer.tags.get("start"), cfg.trainer.tags.get("start")
    if had and has and had != has:
        raise SweepError(f"{directory} was trained from another start ({had}) than this sweep's ({has}); "
                         "delete it or choose another --out")
    return state


def _on_disk(directory: Path) -> str:
    if not (directory / "config.yaml").is_file():
        return "new"
    return "done" if (directory / "summary.json").is_file() else "resume"


def _comparable(cfg) -> dict:
    """A TrainConfig (or SFTConfig) as flat `section.key` values, minus what does not change a
    run's numbers: its directory (spelt relative or absolute), its tags (renaming the sweep
    file), its loggers (adding wandb mid-sweep) and how often an SFT start checkpoints (its
    resume is exact)."""
    flat = {f"{section}.{key}": value for section, values in cfg.to_dict().items() for key, value in values.items()}
    for key in ("trainer.run_dir", "trainer.tags", "trainer.logger", "sft.save_every"):
        flat.pop(key, None)
    return flat


def _first_difference(a: dict, b: dict) -> str | None:
    return next((key for key in a if a[key] != b.get(key)), None)


def train_run(run: PlannedRun, advance: Callable[[int], None]) -> dict:
    """Finish one run and return its summary; `advance(n)` reports n more steps done.

    What to do is read from the run dir now, not taken from the plan: a Ray
    cell retried after its worker died finds the checkpoints of its first
    attempt and resumes from the last one.
    """
    with _locked(cell_lock(run.dir), wait=False):
        state = _on_disk(run.dir)
        if state == "done":
            advance(run.cfg.trainer.steps)
            return _summary(run)

        def on_step(record: dict) -> None:
            if record["step"] > 0:  # step 0 is the initial evaluation, not a training step
                advance(1)

        job = Run.resume(run.dir, on_step) if state == "resume" else Run.create(run.cfg, on_step)
        advance(job.trainer.step)
        return job.train()


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True):
    """Hold an exclusive advisory lock (`fcntl.flock`) on `path` for the block.

    Several `tsr compare` processes may share one OUT, each running other cells
    (`--arm`, `--seed`): a cell's lock (OUT/runs/.lock-<arm>-s<seed>, `wait=False`)
    keeps two of them from training the same run dir, and OUT/runs/.lock-results
    makes each rewrite of results.csv and the tables read what the others wrote.
    The lock goes with the process, so a killed one leaves nothing to clean up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise CellBusy(f"{path.parent / path.name.removeprefix('.lock-')} is being trained by another "
                           "tsr compare; let it finish, or run other cells") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cell_lock(directory: Path) -> Path:
    """The lock file a `tsr compare` holds while it trains the run dir `directory`."""
    return directory.parent / f".lock-{directory.name}"


def is_training(directory: Path) -> bool:
    """Whether some process holds the cell lock of `directory` now (it is training that cell)."""
    path = cell_lock(directory)
    if not path.is_file():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _results_lock(out: Path):
    return _locked(Path(out) / "runs" / ".lock-results")


def _summary(run: PlannedRun) -> dict:
    return json.loads((run.dir / "summary.json").read_text())


def run_sweep(runs: list[PlannedRun], out: Path, advance: Callable[[float], None] = lambda n: None,
              cells: list[tuple[str, int]] | None = None, executor=None,
              on_result: Callable[[CellResult], None] = lambda result: None) -> list[CellResult]:
    """Train the unfinished runs with `executor` (default: one after another, here); finished runs
    are read, not sent to it. Returns each run's CellResult in the order they finished.

    results.csv is rewritten as each run finishes, in sweep order, so it holds
    what finished whatever the executor's order. `advance` counts runs.
    `cells` are the sweep's (arm, seed) pairs in sweep order (default: the
    runs'). Rows of those cells already in OUT/results.csv stay until this
    process finishes the cell (its new row replaces the old) or fails on it
    (the old row goes, so the next sweep runs it again): re-running one
    selected cell does not drop the others, and a cell that another `tsr
    compare` on OUT was training (busy here) keeps the row that process wrote.
    A finished run's row is rebuilt from its summary and keeps the columns the
    table stage derived (`write_outputs` recomputes them).
    """
    executor = executor or LocalExecutor()
    cells = cells or [(run.arm, run.seed) for run in runs]
    todo = [run for run in runs if run.state not in ("done", "recorded")]  # recorded rows are kept
    with _results_lock(out):  # the rows the runs to train will replace are not checked
        rows = _kept_rows(out, cells, {(run.arm, run.seed) for run in todo})
    _check_same_start(rows, runs, out)
    finished = [CellResult(run, summary=_summary(run)) for run in runs if run.state == "done"]
    advance(len(runs) - len(todo))
    unfinished = executor.run(todo, train_run, advance)
    results, mine, failed = [], {}, set()
    for result in itertools.chain(finished, unfinished):
        cell = (result.run.arm, result.run.seed)
        if result.ok:
            row = result_row(result.run, result.summary)
            if result.run.state == "done":  # what the table stage derived stays
                row.update({key: value for key, value in rows.get(cell, {}).items()
                            if key not in row or key == "steps_to_threshold"})
            mine[cell] = row
        elif not result.busy:
            failed.add(cell)
        if not result.busy:  # a busy cell's row is the other process's to write
            with _results_lock(out):  # rows another tsr compare wrote meanwhile stay
                write_results(_in_order({**_kept_rows(out, cells, failed), **mine}, cells), out)
        on_result(result)
        results.append(result)
    return results


def _kept_rows(out: Path, cells: list[tuple[str, int]], rerun: set[tuple[str, int]]) -> dict:
    """OUT/results.csv's rows of the sweep's cells, less those of the cells in `rerun`."""
    return {cell: row for cell, row in recorded_rows(out).items() if cell in cells and cell not in rerun}


def _check_same_start(rows: dict, runs: list[PlannedRun], out: Path) -> None:
    """Rows kept from OUT/results.csv must come from the start the new runs use: arms are compared
    seed by seed, and a row from another start (or one made before runs recorded it) is not paired.
    Arms among `runs` that name their own `policy.name` record no start and are not checked."""
    start = next((run.cfg.trainer.tags["start"] for run in runs if "start" in run.cfg.trainer.tags), None)
    if start is None:
        return
    own_policy = {run.arm for run in runs if "start" not in run.cfg.trainer.tags}
    for (arm, seed), row in rows.items():
        had = row.get("start")
        if had != start and arm not in own_policy:
            made = f"start {had}" if isinstance(had, str) else "a start it did not record"
            raise SweepError(f"{Path(out) / 'results.csv'} holds {arm} seed {seed} from {made}, not this "
                             f"sweep's start {start}; move that file away or choose another --out")


def _in_order(rows: dict, cells: list[tuple[str, int]]) -> pd.DataFrame:
    """The rows in sweep order; columns the table stage derived (`write_outputs`) stay."""
    derived = dict.fromkeys(key for row in rows.values() for key in row if key not in RESULT_COLUMNS)
    return pd.DataFrame([rows[cell] for cell in cells if cell in rows], columns=[*RESULT_COLUMNS, *derived])


def result_row(run: PlannedRun, summary: dict) -> dict:
    cfg = run.cfg
    return {"arm": run.arm, "env": cfg.env.name, "algo": cfg.algo.name, "search": cfg.search.strategy,
            "seed": run.seed, **{key: summary.get(key) for key in SUMMARY_KEYS},
            "start": cfg.trainer.tags.get("start"), "steps_to_threshold": math.nan, "run_dir": str(run.dir)}


def read_results(path: Path) -> pd.DataFrame:
    """OUT/results.csv; arm names and start fingerprints stay text (`012345678901` is no number)."""
    return pd.read_csv(path, dtype={"arm": str, "start": str})


def write_results(results: pd.DataFrame, out: Path) -> Path:
    Path(out).mkdir(parents=True, exist_ok=True)
    results.to_csv(Path(out) / "results.csv", index=False)
    return Path(out) / "results.csv"


# ------------------------------------------------------------------ outputs
def write_outputs(sweep: Sweep, out: Path) -> list[Path]:
    """Tables, long curves and plots from OUT/results.csv and the run dirs (also `--table-only`)."""
    out = Path(out)
    if not (out / "results.csv").is_file():
        raise FileNotFoundError(f"no results.csv in {out}; run the sweep first (without --table-only)")
    with _results_lock(out):  # another tsr compare on this OUT may be writing its rows
        return _write_outputs(sweep, out)


def _write_outputs(sweep: Sweep, out: Path) -> list[Path]:
    results = read_results(out / "results.csv")
    curves = collect_curves(results, out)
    refs = references(results)
    results["steps_to_threshold"] = steps_to_threshold(results, curves, sweep.threshold,
                                                       refs[0] if refs else None)
    results["final_entropy"] = final_entropy(results, curves)
    results["last_quarter_trend"] = last_quarter_trend(results, curves)
    table = arm_table(results, refs)
    written = [write_results(results, out), out / "curves.csv", out / "table.csv", out / "table.md"]
    curves.to_csv(out / "curves.csv", index=False)
    table.to_csv(out / "table.csv", index=False)
    headline = _headline(sweep)
    text = caption(sweep.name, results, sweep.threshold, refs, headline, ceiling=_ceiling(sweep))
    (out / "table.md").write_text(to_markdown(table, text, headline))
    for x, name in (("step", "success_vs_step.png"), ("tokens_generated", "success_vs_tokens.png")):
        written.append(plot_success(curves, x, out / name))
    return written


def collect_curves(results: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Every run's curves.csv with `arm` and `seed` in front (run dirs found under OUT/runs)."""
    saved = pd.read_csv(out / "curves.csv") if (out / "curves.csv").is_file() else None
    frames = [_run_curve(arm, seed, run_dir(out, arm, seed), saved)
              for arm, seed in zip(results["arm"], results["seed"])]
    return pd.concat(frames, ignore_index=True)


def _run_curve(arm: str, seed: int, directory: Path, saved: pd.DataFrame | None) -> pd.DataFrame:
    """A run's curve; without its run dir (results/ commits no checkpoints) the saved long rows serve."""
    if (directory / "curves.csv").is_file():
        curve = pd.read_csv(directory / "curves.csv")
    elif (directory / "metrics.jsonl").is_file():
        curve = write_curves(directory)
    elif saved is not None and ((saved["arm"] == arm) & (saved["seed"] == seed)).any():
        return saved[(saved["arm"] == arm) & (saved["seed"] == seed)]
    else:
        raise FileNotFoundError(f"no learning curve for {arm} seed {seed}: {directory} is missing")
    return curve.assign(arm=arm, seed=seed)[["arm", "seed", *curve.columns]]


def _ceiling(sweep: Sweep) -> float | None:
    """The expert's success on the sweep's held-out instances (None without an expert)."""
    return expert_success(sweep.config(sweep.arms[0], sweep.seeds[0]))


def _headline(sweep: Sweep) -> str:
    """What the success column measures: greedy or sampled held-out success."""
    cfg = sweep.config(sweep.arms[0], sweep.seeds[0])
    if cfg.policy.eval_temperature == 0:
        return "greedy held-out success"
    return f"held-out success (sampled, T={cfg.policy.eval_temperature:g})"

"""Ablation sweeps (`tsr compare`): arms x seeds of training runs -> tables, curves, plots.

A sweep file names a base config, the arms (each a set of dotted overrides)
and the seeds:

    base: ../tiny/frozenlake_grpo_none.yaml   # relative to the sweep file
    seeds: [0, 1, 2]
    overrides: {trainer.steps: 40}            # every arm (optional)
    arms:
      - name: none
        set: {search.strategy: none}
      - name: beam
        set: {search.strategy: beam, search.candidates: 4}
    threshold: 0.8                            # optional, see `steps_to_threshold`
    resources: {num_cpus: 1, num_gpus: 0}     # optional: per cell, for `--executor ray`

Why a sweep command rather than a shell loop: every run's config is checked
before the first one trains, an interrupted sweep resumes where it stopped,
and the table compares arms on the paper's three axes at once: held-out
success (mean ± std over seeds), speed (steps to reach a fraction of the best
arm's success) and compute (generated tokens, real and simulated env steps,
wall time). The cells train one after another in this process or, with
`--executor ray`, side by side as Ray tasks (tsr_cli.executors); the outputs
are the same.

    OUT/runs/<arm>-s<seed>/       one run directory each (tsr_cli.train.run), tagged with
                                  the sweep, arm and seed (trainer.tags, for the loggers)
    OUT/results.csv               one row per arm x seed
    OUT/table.md, OUT/table.csv   one row per arm
    OUT/curves.csv                every run's learning curve, long format
    OUT/success_vs_step.png, OUT/success_vs_tokens.png
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from tsr_cli.executors import DEFAULT_RESOURCES, CellResult, LocalExecutor, check_resources
from tsr_cli.train.config import ConfigError, TrainConfig, load_config, read_yaml_mapping
from tsr_cli.train.run import Run, write_curves

SWEEP_KEYS = ("base", "seeds", "arms", "overrides", "threshold", "resources")
ARM_KEYS = ("name", "set")
#: set by the sweep for every run: an arm that set them would collapse the seed axis or the layout
RESERVED = ("trainer.seed", "trainer.run_dir", "trainer.tags")
SUMMARY_KEYS = ("final_val_success_rate", "final_val_mean_return", "initial_val_success_rate", "steps",
                "tokens_generated", "env_steps", "sim_env_steps", "wall_seconds")
RESULT_COLUMNS = ["arm", "env", "algo", "search", "seed", *SUMMARY_KEYS, "steps_to_threshold", "run_dir"]
#: compute columns of the arm table: the mean over seeds of each run's total
COMPUTE = ("tokens_generated", "env_steps", "sim_env_steps", "wall_seconds")
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # it becomes a directory name


class SweepError(ValueError):
    """A malformed sweep file or an output directory that does not match it."""


# ------------------------------------------------------------------ the sweep file
@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict


@dataclass(frozen=True)
class Sweep:
    path: Path
    base: Path
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    overrides: dict
    threshold: float = 0.8
    #: Ray resources per cell (executors.RESOURCE_KEYS); the local executor ignores them
    resources: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESOURCES))

    @property
    def name(self) -> str:
        return self.path.stem

    def config(self, arm: Arm, seed: int, run_dir: Path | None = None) -> TrainConfig:
        """Base file < sweep overrides < arm overrides < the run's seed, tags and directory."""
        overrides = {**self.overrides, **arm.overrides, "trainer.seed": seed,
                     "trainer.tags": {"sweep": self.name, "arm": arm.name, "seed": seed}}
        if run_dir is not None:
            overrides["trainer.run_dir"] = str(run_dir)
        try:
            return load_config(self.base, overrides)
        except ConfigError as exc:
            raise SweepError(f"{self.path.name}: arm {arm.name!r}: {exc}") from None


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every arm's config is built so bad keys fail before any run."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file", SweepError)
    where = path.name
    unknown = [key for key in raw if key not in SWEEP_KEYS]
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(SWEEP_KEYS)}")
    sweep = Sweep(path, _base(raw.get("base"), path), _seeds(raw.get("seeds"), where),
                  _arms(raw.get("arms"), where), _overrides(raw.get("overrides"), f"{where}: overrides"),
                  _threshold(raw.get("threshold", 0.8), where), _resources(raw.get("resources"), where))
    for arm in sweep.arms:
        sweep.config(arm, sweep.seeds[0])
    return sweep


def _base(value, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{path.name}: 'base' must name the base config, relative to the sweep file")
    base = path.parent / value
    if not base.is_file():
        raise SweepError(f"{path.name}: base config not found: {base}")
    return base


def _seeds(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where}: 'seeds' must be a non-empty list of integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in value) or len(set(value)) < len(value):
        raise SweepError(f"{where}: 'seeds' must be distinct integers, got {value}")
    return tuple(value)


def _arms(value, where: str) -> tuple[Arm, ...]:
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where}: 'arms' must be a non-empty list of {{name, set}} mappings")
    arms = tuple(_arm(item, where) for item in value)
    names = [arm.name for arm in arms]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SweepError(f"{where}: duplicate arm name {duplicate!r}")
    return arms


def _arm(item, where: str) -> Arm:
    if not isinstance(item, dict):
        raise SweepError(f"{where}: each arm must be a mapping with keys {', '.join(ARM_KEYS)}")
    unknown = [key for key in item if key not in ARM_KEYS]
    if unknown:
        raise SweepError(f"{where}: unknown arm key {unknown[0]!r}; known: {', '.join(ARM_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not _ARM_NAME.fullmatch(name):
        raise SweepError(f"{where}: arm name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    return Arm(name, _overrides(item.get("set"), f"{where}: arm {name!r}"))


def _overrides(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where}: overrides must be a mapping of section.key: value")
    for key in value:
        if not isinstance(key, str) or "." not in key:
            raise SweepError(f"{where}: override {key!r} must look like section.key")
        if key in RESERVED:
            raise SweepError(f"{where}: {key} is set by the sweep for each run; remove it")
    return dict(value)


def _threshold(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise SweepError(f"{where}: 'threshold' must be a fraction in (0, 1], got {value!r}")
    return float(value)


def _resources(value, where: str) -> dict:
    try:
        return check_resources(value, where)
    except ValueError as exc:
        raise SweepError(str(exc)) from None


def default_out(sweep: Sweep) -> Path:
    return Path("results") / sweep.name


# ------------------------------------------------------------------ running it
@dataclass(frozen=True)
class PlannedRun:
    """One arm x seed, with what is on disk: `done`, `resume` (started, unfinished) or `new`."""

    arm: str
    seed: int
    cfg: TrainConfig
    state: str

    @property
    def dir(self) -> Path:
        return self.cfg.resolved_run_dir()


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{arm}-s{seed}"


def plan(sweep: Sweep, out: Path) -> list[PlannedRun]:
    """Every arm x seed in order, with its state; run dirs are checked before anything trains."""
    runs = []
    for arm in sweep.arms:
        for seed in sweep.seeds:
            cfg = sweep.config(arm, seed, run_dir(out, arm.name, seed))
            runs.append(PlannedRun(arm.name, seed, cfg, _state(cfg)))
    return runs


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
    key = _first_difference(_comparable(load_config(directory / "config.yaml")), _comparable(cfg))
    if key:
        raise SweepError(f"{directory} holds a run made with a different {key}; "
                         "delete it or choose another --out")
    return state


def _on_disk(directory: Path) -> str:
    if not (directory / "config.yaml").is_file():
        return "new"
    return "done" if (directory / "summary.json").is_file() else "resume"


def _comparable(cfg: TrainConfig) -> dict:
    """The config minus what does not change a run's numbers: its directory (spelt relative or
    absolute), its tags (renaming the sweep file) and its loggers (adding wandb mid-sweep)."""
    flat = {f"{section}.{key}": value for section, values in cfg.to_dict().items() for key, value in values.items()}
    for key in ("trainer.run_dir", "trainer.tags", "trainer.logger"):
        flat.pop(key)
    return flat


def _first_difference(a: dict, b: dict) -> str | None:
    return next((key for key in a if a[key] != b.get(key)), None)


def train_run(run: PlannedRun, advance: Callable[[int], None]) -> dict:
    """Finish one run and return its summary; `advance(n)` reports n more steps done.

    What to do is read from the run dir now, not taken from the plan: a Ray
    cell retried after its worker died finds the checkpoints of its first
    attempt and resumes from the last one.
    """
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
    runs'). Rows of those cells already in OUT/results.csv and not among
    `runs` are kept, so re-running one selected cell does not drop the others;
    a run that fails leaves no row, so the next sweep runs it again.
    """
    executor = executor or LocalExecutor()
    cells = cells or [(run.arm, run.seed) for run in runs]
    rows = _kept_rows(out, cells, runs)
    finished = [CellResult(run, summary=_summary(run)) for run in runs if run.state == "done"]
    advance(len(finished))
    unfinished = executor.run([run for run in runs if run.state != "done"], train_run, advance)
    results = []
    for result in itertools.chain(finished, unfinished):
        if result.ok:
            rows[(result.run.arm, result.run.seed)] = result_row(result.run, result.summary)
            write_results(_in_order(rows, cells), out)
        on_result(result)
        results.append(result)
    return results


def _kept_rows(out: Path, cells: list[tuple[str, int]], runs: list[PlannedRun]) -> dict:
    path = Path(out) / "results.csv"
    if not path.is_file():
        return {}
    rerun = {(run.arm, run.seed) for run in runs}
    rows = {(row["arm"], int(row["seed"])): row
            for row in pd.read_csv(path, dtype={"arm": str}).to_dict("records")}
    return {cell: row for cell, row in rows.items() if cell in cells and cell not in rerun}


def _in_order(rows: dict, cells: list[tuple[str, int]]) -> pd.DataFrame:
    return pd.DataFrame([rows[cell] for cell in cells if cell in rows], columns=RESULT_COLUMNS)


def result_row(run: PlannedRun, summary: dict) -> dict:
    cfg = run.cfg
    return {"arm": run.arm, "env": cfg.env.name, "algo": cfg.algo.name, "search": cfg.search.strategy,
            "seed": run.seed, **{key: summary.get(key) for key in SUMMARY_KEYS},
            "steps_to_threshold": math.nan, "run_dir": str(run.dir)}


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
    results = pd.read_csv(out / "results.csv")
    curves = collect_curves(results, out)
    results["steps_to_threshold"] = steps_to_threshold(results, curves, sweep.threshold)
    table = arm_table(results)
    written = [write_results(results, out), out / "curves.csv", out / "table.csv", out / "table.md"]
    curves.to_csv(out / "curves.csv", index=False)
    table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(to_markdown(table, _caption(sweep, results)))
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


def threshold_target(results: pd.DataFrame, threshold: float) -> float:
    """`threshold` x the best arm's mean final held-out success."""
    return threshold * results.groupby("arm", sort=False)["final_val_success_rate"].mean().max()


def steps_to_threshold(results: pd.DataFrame, curves: pd.DataFrame, threshold: float) -> pd.Series:
    """Per run, the first step whose held-out success reaches the target; NaN if it never does.

    When the best arm ends at 0 success there is nothing to reach, so every
    run gets NaN rather than a meaningless step 0.
    """
    target = threshold_target(results, threshold)
    held_out = curves.dropna(subset=["val_success_rate"])
    hits = held_out[held_out["val_success_rate"] >= target - 1e-9]
    first = hits.groupby(["arm", "seed"])["step"].min() if target > 0 else pd.Series(dtype=float)
    steps = [first.get((arm, seed), math.nan) for arm, seed in zip(results["arm"], results["seed"])]
    return pd.Series(steps, index=results.index, dtype=float)


def arm_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per arm (in sweep order): success as mean ± std over seeds, speed, compute per run."""
    return pd.DataFrame([_arm_row(arm, runs) for arm, runs in results.groupby("arm", sort=False)])


def _arm_row(arm: str, runs: pd.DataFrame) -> dict:
    success = runs["final_val_success_rate"].dropna()
    reached = runs["steps_to_threshold"].dropna()
    first = runs.iloc[0]
    return {
        "arm": arm, "env": first["env"], "algo": first["algo"], "search": first["search"], "seeds": len(runs),
        "final_val_success": mean_std(success),
        "steps_to_threshold": steps_text(reached, len(runs)),
        "final_val_success_mean": success.mean(),
        "final_val_success_std": success.std(ddof=1) if len(success) > 1 else math.nan,
        "initial_val_success_mean": runs["initial_val_success_rate"].mean(),
        "steps_to_threshold_mean": reached.mean() if len(reached) else math.nan,
        "seeds_reaching_threshold": len(reached),
        **{key: runs[key].mean() for key in COMPUTE},
    }


def mean_std(values: pd.Series, digits: int = 3) -> str:
    """`0.422 ± 0.031` (sample std over seeds); one seed has no spread, so just its value."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def steps_text(reached: pd.Series, seeds: int) -> str:
    """Mean step over the seeds that reached the target, saying how many did when not all."""
    if reached.empty:
        return "—"
    text = f"{reached.mean():.1f}"
    return text if len(reached) == seeds else f"{text} ({len(reached)}/{seeds} seeds)"


MARKDOWN_COLUMNS = [
    ("arm", "arm", str), ("search", "search", str), ("seeds", "seeds", str),
    ("final_val_success", "held-out success", str), ("steps_to_threshold", "steps to threshold", str),
    ("tokens_generated", "gen. tokens / run", "{:,.0f}".format),
    ("env_steps", "env steps / run", "{:,.0f}".format),
    ("sim_env_steps", "sim. env steps / run", "{:,.0f}".format),
    ("wall_seconds", "wall s / run", "{:,.1f}".format),
]


def to_markdown(table: pd.DataFrame, caption: str = "") -> str:
    """A GitHub markdown table (pandas' own needs `tabulate`, which is not a dependency)."""
    header = [title for _, title, _ in MARKDOWN_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in table.iterrows():
        cells = [fmt(row[key]) if not _missing(row[key]) else "—" for key, _, fmt in MARKDOWN_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return (caption + "\n\n" if caption else "") + "\n".join(lines) + "\n"


def _missing(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _caption(sweep: Sweep, results: pd.DataFrame) -> str:
    target = threshold_target(results, sweep.threshold)
    envs = ", ".join(dict.fromkeys(f"{e} · {a}" for e, a in zip(results["env"], results["algo"])))
    return (f"# {sweep.name}: {envs}\n\n"
            f"Final held-out success as mean ± std over seeds. Steps to threshold: the first step at which "
            f"held-out success reaches {sweep.threshold:g} x the best arm's mean final success "
            f"(= {target:.3f}), averaged over the seeds that reach it. Compute columns: each run's "
            f"training total (held-out evaluation excluded), averaged over seeds.")


def plot_success(curves: pd.DataFrame, x: str, path: Path) -> Path:
    """Held-out success per arm against `x`: mean over seeds, with the min-max band of the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held_out = curves.dropna(subset=["val_success_rate"]).assign(_x=lambda f: f[x])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, runs in held_out.groupby("arm", sort=False):
        stats = runs.groupby("step").agg(x=("_x", "mean"), mean=("val_success_rate", "mean"),
                                         lo=("val_success_rate", "min"), hi=("val_success_rate", "max"))
        line, = ax.plot(stats["x"], stats["mean"], marker="o", markersize=3, label=arm)
        ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step" if x == "step" else "cumulative generated tokens (mean over seeds)")
    ax.set_ylabel("held-out success (mean, min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

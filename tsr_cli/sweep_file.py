"""The sweep file of `tsr compare`: its keys, the checks that run before any cell trains,
and each cell's config (base file < sweep overrides < start < arm overrides < seed).

    base: ../tiny/frozenlake_grpo_none.yaml   # relative to the sweep file
    seeds: [0, 1, 2]
    overrides: {trainer.steps: 40}            # every arm (optional)
    arms:
      - name: none
        set: {search.strategy: none}
      - name: beam
        set: {search.strategy: beam, search.candidates: 4}
        seeds: [0, 1]                         # optional: a subset of the sweep's seeds
    threshold: 0.8                            # optional, see `tsr_cli.tables`
    start: ../sft/frozenlake_tiny_start.yaml  # optional: a `tsr sft` or `tsr train` config
    resources: {num_cpus: 1, num_gpus: 0}     # optional: per cell, for `--executor ray`
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from tsr_cli.executors import DEFAULT_RESOURCES, check_resources
from tsr_cli.train.config import ConfigError, TrainConfig, load_config, read_yaml_mapping

SWEEP_KEYS = ("base", "seeds", "arms", "overrides", "threshold", "start", "resources")
ARM_KEYS = ("name", "set", "seeds")
#: set by the sweep for every run: an arm that set them would collapse the seed axis or the layout
RESERVED = ("trainer.seed", "trainer.run_dir", "trainer.tags")
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # it becomes a directory name


class SweepError(ValueError):
    """A malformed sweep file or an output directory that does not match it."""


# ------------------------------------------------------------------ the sweep file
@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict
    #: the seeds this arm runs (None: all of the sweep's)
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Sweep:
    path: Path
    base: Path
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...]
    overrides: dict
    threshold: float = 0.8
    #: a `tsr sft` or `tsr train` config every arm starts from (trained first, once)
    start: Path | None = None
    #: Ray resources per cell (executors.RESOURCE_KEYS); the local executor ignores them
    resources: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESOURCES))

    @property
    def name(self) -> str:
        return self.path.stem

    def arm_seeds(self, arm: Arm) -> tuple[int, ...]:
        return arm.seeds if arm.seeds is not None else self.seeds

    def config(self, arm: Arm, seed: int, run_dir: Path | None = None, start: Path | None = None,
               start_id: str | None = None) -> TrainConfig:
        """Base file < sweep overrides < the start's checkpoint < arm overrides < seed, tags and directory.

        `start_id` (`start_fingerprint`) joins the tags, so every run records which start it
        was trained from; an arm that names its own `policy.name` does not start from it."""
        begin = {"policy.name": str(start)} if start is not None else {}
        from_start = start_id and "policy.name" not in arm.overrides
        tags = {"sweep": self.name, "arm": arm.name, "seed": seed, **({"start": start_id} if from_start else {})}
        overrides = {**self.overrides, **begin, **arm.overrides, "trainer.seed": seed, "trainer.tags": tags}
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
    seeds = _seeds(raw.get("seeds"), where)
    arms = _arms(raw.get("arms"), where)
    for arm in arms:
        if arm.seeds is not None and not set(arm.seeds) <= set(seeds):
            raise SweepError(f"{where}: arm {arm.name!r}: its seeds must be among the sweep's {list(seeds)}")
    start = _base(raw["start"], path, "start") if raw.get("start") is not None else None
    sweep = Sweep(path, _base(raw.get("base"), path), seeds, arms,
                  _overrides(raw.get("overrides"), f"{where}: overrides"),
                  _threshold(raw.get("threshold", 0.8), where), start,
                  _resources(raw.get("resources"), where))
    for arm in sweep.arms:
        sweep.config(arm, sweep.arm_seeds(arm)[0])
    return sweep


def _base(value, path: Path, key: str = "base") -> Path:
    if not isinstance(value, str) or not value:
        raise SweepError(f"{path.name}: '{key}' must name a config file, relative to the sweep file")
    base = path.parent / value
    if not base.is_file():
        raise SweepError(f"{path.name}: {key} config not found: {base}")
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
    seeds = _seeds(item["seeds"], f"{where}: arm {name!r}") if "seeds" in item else None
    return Arm(name, _overrides(item.get("set"), f"{where}: arm {name!r}"), seeds)


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

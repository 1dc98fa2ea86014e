"""Intervals for sweep tables: the mean over seeds, and paired differences between arms.

Every arm of a sweep trains on the same instance seeds and is evaluated on
the same held-out instances, so two arms' runs with the same seed are a
pair. A difference between arms is estimated from the per-seed differences,
which removes the seed-to-seed variation that both arms share.

- `mean_interval`: Student-t interval of the mean over seeds (scipy).
- `paired_difference`: mean of the per-seed differences with a percentile
  bootstrap interval over seeds (`scipy.stats.bootstrap`, resampling seeds
  with replacement). With 3-5 seeds the bootstrap interval is narrow-biased;
  the t interval of the same differences is reported beside it for that
  reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval; `n` is the number of seeds behind it."""

    estimate: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3, signed: bool = False) -> str:
        """`0.312 [0.251, 0.373]`; a single seed has no interval."""
        fmt = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
        if self.n < 2 or not np.isfinite(self.low):
            return fmt.format(self.estimate)
        return f"{fmt.format(self.estimate)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def mean_interval(values, level: float = LEVEL) -> Interval:
    """Mean of `values` with its Student-t interval (`level`, two-sided)."""
    x = np.asarray(pd.Series(values).dropna(), dtype=float)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    sem = stats.sem(x)
    if sem == 0:
        return Interval(mean, mean, mean, len(x))
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), len(x))


def paired_difference(a: pd.Series, b: pd.Series, level: float = LEVEL, seed: int = 0) -> Interval:
    """Mean of a - b over the seeds both have, with a percentile bootstrap interval.

    `a` and `b` are indexed by seed; seeds missing from either side are dropped.
    """
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    d = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    if len(d) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(d.mean())
    if len(d) < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    if np.all(d == d[0]):
        return Interval(mean, mean, mean, len(d))
    result = stats.bootstrap((d,), np.mean, confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), len(d))


def paired_t_interval(a: pd.Series, b: pd.Series, level: float = LEVEL) -> Interval:
    """The Student-t interval of the same per-seed differences (wider with few seeds)."""
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    return mean_interval(joined["a"] - joined["b"], level)

"""Sweep statistics: t intervals and paired bootstrap differences against numpy/scipy by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from tsr_cli.stats import mean_interval, paired_difference, paired_t_interval


def test_mean_interval_is_the_student_t_interval():
    x = [0.2, 0.3, 0.25, 0.4, 0.35]
    iv = mean_interval(x)
    mean, sd = np.mean(x), np.std(x, ddof=1)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert iv.estimate == pytest.approx(mean)
    assert (iv.low, iv.high) == pytest.approx((mean - half, mean + half))
    assert iv.text() == f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def test_single_seed_and_constant_values():
    assert mean_interval([0.5]).text() == "0.500"
    iv = mean_interval([0.5, 0.5, 0.5])
    assert (iv.low, iv.high) == (0.5, 0.5)


def test_paired_difference_pairs_by_seed_and_removes_shared_variation():
    seeds = [0, 1, 2, 3, 4]
    # the seeds vary a lot, but arm a is always 0.1 above arm b on the same seed
    base = pd.Series([0.1, 0.5, 0.2, 0.8, 0.4], index=seeds)
    a = base + pd.Series([0.09, 0.11, 0.1, 0.1, 0.1], index=seeds)
    iv = paired_difference(a, base)
    assert iv.estimate == pytest.approx(0.1)
    assert 0.09 <= iv.low < iv.high <= 0.11 and iv.excludes_zero()
    # unpaired, the two arms' intervals overlap heavily
    assert mean_interval(a).low < mean_interval(base).high


def test_paired_difference_drops_unpaired_seeds_and_is_reproducible():
    a = pd.Series([0.3, 0.2, 0.5, 0.9], index=[0, 1, 2, 7])
    b = pd.Series([0.1, 0.4, 0.2], index=[0, 1, 2])
    first, again = paired_difference(a, b), paired_difference(a, b)
    assert first.n == 3 and first == again
    assert first.estimate == pytest.approx((0.2 - 0.2 + 0.3) / 3)
    assert not first.excludes_zero()
    assert paired_t_interval(a, b).high > first.high  # the t interval is the wider one here

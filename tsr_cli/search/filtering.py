"""Instance filtering (RAGEN's StarPO-S, used by TSR).

Rollouts are grouped by instance (the same seed, `traj.group`). Groups whose
returns vary most carry the most learning signal; a group whose members all
scored the same gives GRPO a zero advantage everywhere. Keep the top
`keep` fraction of groups by the standard deviation of return.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import pstdev

from tsr_cli.agent.trajectory import Trajectory


def group_return_std(trajectories: list[Trajectory]) -> dict[int, float]:
    """Population std of total return within each group."""
    returns: dict[int, list[float]] = defaultdict(list)
    for t in trajectories:
        returns[t.group].append(t.total_return)
    return {g: pstdev(r) if len(r) > 1 else 0.0 for g, r in returns.items()}


def filter_groups(trajectories: list[Trajectory], keep: float) -> list[Trajectory]:
    """The trajectories of the ceil(keep * groups) groups with the largest return std.

    Ties keep the earlier group. `keep=1.0` returns everything unchanged.
    """
    if keep >= 1.0:
        return list(trajectories)
    std = group_return_std(trajectories)
    order = sorted(std, key=lambda g: (-std[g], list(std).index(g)))
    kept = set(order[:max(1, math.ceil(keep * len(order)))])
    return [t for t in trajectories if t.group in kept]

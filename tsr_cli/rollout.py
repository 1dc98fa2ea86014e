"""Turn (policy, environments, search strategy) into a batch of trajectories.

Instances are identified by their reset seed. Each instance becomes a group
of `group_size` episodes (GRPO needs several per instance); every member runs
its own search, so members differ. Episodes are processed in batches of whole
groups, and each batch shares one set of batched policy calls per turn.

A group's id (`traj.group`) is `first_group` plus its index in `seeds`: a
data-parallel trainer passes each rank's share of the step's seeds with the
share's offset, so ids are global. With `streams` every group samples from
its own random stream keyed by (streams..., group id) (`GroupStreams`), so a
group's trajectories do not depend on the batch or the rank it ran in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from tsr_cli.agent.episode import Episode
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.agent.trajectory import Trajectory
from tsr_cli.policies.base import Policy, SamplingParams
from tsr_cli.search import STRATEGIES, GroupStreams, SearchConfig, SearchContext, SearchCost, resolve_scorer


@dataclass
class RolloutResult:
    trajectories: list[Trajectory]
    cost: SearchCost


def rollout(
    policy: Policy,
    make_env: Callable[[], object],
    seeds: Sequence[int],
    search: SearchConfig,
    params: SamplingParams,
    protocol: ProtocolConfig,
    *,
    env_name: str = "",
    group_size: int = 1,
    batch_groups: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    first_group: int = 0,
    streams: Sequence[int] | None = None,
) -> RolloutResult:
    """Run one search-built trajectory per (seed, group member), in seed order.

    batch_groups: how many instance groups share one batch (None: all at once)
    on_batch:     called with the number of groups finished after each batch
    first_group:  the group id of seeds[0]; the others follow in order
    streams:      root key of per-group random streams (None: the policy's generator)
    """
    cost = SearchCost()
    ctx = SearchContext(policy, params, search, resolve_scorer(search.scorer), cost,
                        GroupStreams(streams) if streams is not None else None)
    strategy = STRATEGIES[search.strategy]
    step = batch_groups or max(len(seeds), 1)
    trajectories: list[Trajectory] = []
    start = time.perf_counter()
    for lo in range(0, len(seeds), step):
        chunk = seeds[lo:lo + step]
        episodes = [
            Episode.start(make_env(), policy.codec, protocol, seed=int(seed),
                          env_name=env_name, group=first_group + lo + g, meter=cost.meter)
            for g, seed in enumerate(chunk)
            for _ in range(group_size)
        ]
        strategy(ctx, episodes)
        trajectories += [ep.traj for ep in episodes]
        if on_batch:
            on_batch(len(chunk))
    cost.wall_seconds = time.perf_counter() - start
    return RolloutResult(trajectories, cost)

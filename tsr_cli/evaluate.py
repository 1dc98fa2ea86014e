"""Evaluation: roll out held-out seeds and summarise them (the `tsr eval` JSON)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import fmean

from tsr_cli.rollout import RolloutResult, rollout

#: held-out evaluation instances start here; training draws its seeds below it
EVAL_SEED_OFFSET = 1_000_000


def eval_seeds(count: int, start: int = 0) -> list[int]:
    """The held-out instances `start .. start+count-1`, never used for training."""
    return list(range(EVAL_SEED_OFFSET + start, EVAL_SEED_OFFSET + start + count))


def evaluate(policy, make_env, seeds, search, params, protocol, *, env_name: str,
             batch_groups: int | None = None, on_batch=None, first_group: int = 0,
             streams=None) -> dict:
    """Roll out `seeds` with the given search and sampling, and summarise."""
    return summarize(eval_rollout(policy, make_env, seeds, search, params, protocol, env_name=env_name,
                                  batch_groups=batch_groups, on_batch=on_batch,
                                  first_group=first_group, streams=streams))


def eval_rollout(policy, make_env, seeds, search, params, protocol, *, env_name: str,
                 batch_groups: int | None = None, on_batch=None, first_group: int = 0,
                 streams=None) -> RolloutResult:
    """The evaluation episodes themselves (`rollout` with one episode per seed).
    Evaluation never trains, so the search records no sibling groups."""
    search = replace(search, learn_from="chosen")
    return rollout(policy, make_env, seeds, search, params, protocol, env_name=env_name,
                   batch_groups=batch_groups, on_batch=on_batch, first_group=first_group, streams=streams)


@dataclass(frozen=True)
class EpisodeStats:
    """What the summary needs of one episode (small: data-parallel ranks gather these)."""

    success: float
    total_return: float
    turns: int
    invalid_actions: int
    attempted_actions: int
    truncated: bool


def episode_stats(trajectories) -> list[EpisodeStats]:
    return [EpisodeStats(float(t.success), t.total_return, len(t.turns), t.invalid_actions,
                         t.attempted_actions, bool(t.truncated)) for t in trajectories]


def summarize(result: RolloutResult) -> dict:
    """Success rate, mean return, turns, invalid-action rate, context-truncated
    episodes and cost of a rollout."""
    return summarize_stats(episode_stats(result.trajectories), result.cost.as_dict())


def summarize_stats(episodes: list[EpisodeStats], cost: dict) -> dict:
    """The summary of `summarize` from per-episode stats and the cost dict."""
    attempted = sum(e.attempted_actions for e in episodes)
    return {
        "episodes": len(episodes),
        "success_rate": fmean(e.success for e in episodes) if episodes else 0.0,
        "mean_return": fmean(e.total_return for e in episodes) if episodes else 0.0,
        "mean_turns": fmean(e.turns for e in episodes) if episodes else 0.0,
        "invalid_action_rate": sum(e.invalid_actions for e in episodes) / attempted if attempted else 0.0,
        "truncated_episodes": sum(e.truncated for e in episodes),
        **cost,
    }

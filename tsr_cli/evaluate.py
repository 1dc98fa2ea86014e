"""Evaluation: roll out held-out seeds and summarise them (the `tsr eval` JSON)."""

from __future__ import annotations

from dataclasses import replace
from statistics import fmean

from tsr_cli.rollout import RolloutResult, rollout

#: held-out evaluation instances start here; training draws its seeds below it
EVAL_SEED_OFFSET = 1_000_000


def eval_seeds(count: int, start: int = 0) -> list[int]:
    """The held-out instances `start .. start+count-1`, never used for training."""
    return list(range(EVAL_SEED_OFFSET + start, EVAL_SEED_OFFSET + start + count))


def evaluate(policy, make_env, seeds, search, params, protocol, *, env_name: str,
             batch_groups: int | None = None, on_batch=None) -> dict:
    """Roll out `seeds` with the given search and sampling, and summarise.
    Evaluation never trains, so the search records no sibling groups."""
    search = replace(search, learn_from="chosen")
    result = rollout(policy, make_env, seeds, search, params, protocol, env_name=env_name,
                     batch_groups=batch_groups, on_batch=on_batch)
    return summarize(result)


def summarize(result: RolloutResult) -> dict:
    """Success rate, mean return, turns, invalid-action rate, context-truncated
    episodes and cost of a rollout."""
    trajs = result.trajectories
    attempted = sum(t.attempted_actions for t in trajs)
    return {
        "episodes": len(trajs),
        "success_rate": fmean(float(t.success) for t in trajs) if trajs else 0.0,
        "mean_return": fmean(t.total_return for t in trajs) if trajs else 0.0,
        "mean_turns": fmean(len(t.turns) for t in trajs) if trajs else 0.0,
        "invalid_action_rate": sum(t.invalid_actions for t in trajs) / attempted if attempted else 0.0,
        "truncated_episodes": sum(t.truncated for t in trajs),
        **result.cost.as_dict(),
    }

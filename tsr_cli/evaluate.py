"""Evaluation: roll out held-out seeds and summarise them (the `tsr eval` JSON)."""

from __future__ import annotations

from statistics import fmean

from tsr_cli.rollout import RolloutResult


def summarize(result: RolloutResult) -> dict:
    """Success rate, mean return, turns, invalid-action rate and cost of a rollout."""
    trajs = result.trajectories
    attempted = sum(t.attempted_actions for t in trajs)
    return {
        "episodes": len(trajs),
        "success_rate": fmean(float(t.success) for t in trajs) if trajs else 0.0,
        "mean_return": fmean(t.total_return for t in trajs) if trajs else 0.0,
        "mean_turns": fmean(len(t.turns) for t in trajs) if trajs else 0.0,
        "invalid_action_rate": sum(t.invalid_actions for t in trajs) / attempted if attempted else 0.0,
        **result.cost.as_dict(),
    }

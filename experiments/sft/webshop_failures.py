"""Where a WebShop checkpoint's greedy held-out episodes go wrong.

Rolls out the held-out goals greedily with the checkpoint's own protocol settings (the same
seeds as `tsr eval`) and counts, against each goal: queries that copy the instruction exactly,
episodes that open the goal item, purchases, context overflows and successes. Actions are
compared lower-cased and without spaces, because the tiny tokenizer re-spaces what it writes.

    .venv/bin/python experiments/sft/webshop_failures.py RUN/checkpoints/step_N [EPISODES]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import envs
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.evaluate import eval_rollout, eval_seeds
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.search import SearchConfig
from tsr_cli.train.checkpoint import checkpoint_defaults


def _plain(action: str) -> str:
    return "".join(action.lower().split())


def failures(checkpoint: str, episodes: int = 100) -> dict:
    saved = checkpoint_defaults(Path(checkpoint))
    make_env = envs.factory("webshop", **saved.get("env_args", {}))
    protocol = ProtocolConfig(saved.get("max_turns"), saved.get("actions_per_turn"),
                              answer_only=saved.get("answer_only", False))
    params = SamplingParams(temperature=0.0, max_new_tokens=saved.get("max_new_tokens", 128),
                            stop=protocol.stop)
    result = eval_rollout(load_policy(checkpoint, seed=0), make_env, eval_seeds(episodes),
                          SearchConfig("none"), params, protocol, env_name="webshop")
    counts = Counter()
    for episode in result.trajectories:
        env = make_env()
        env.reset(seed=episode.seed)
        goal = env.goal
        actions = [_plain(a) for turn in episode.turns for a in turn.executed]
        counts["copied_query"] += bool(actions) and actions[0] == _plain(f"search[{goal['instruction_text']}]")
        counts["opened_goal"] += _plain(f"click[{goal['asin']}]") in actions
        counts["bought"] += "click[buynow]" in actions
        counts["truncated"] += episode.truncated
        counts["success"] += episode.success
    return {"checkpoint": checkpoint, "episodes": episodes, **counts}


if __name__ == "__main__":
    print(json.dumps(failures(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100)))

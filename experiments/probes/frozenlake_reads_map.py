"""Does a FrozenLake policy read the map, or only play a move pattern?

Greedy success alone cannot tell: the best map-blind move pattern already
reaches 0.359 on the held-out maps (frozenlake_open_loop.py), so a start near
that level may have learned nothing about holes. This rolls a checkpoint out
greedily on the held-out maps, replays each episode to recover the board the
policy saw at every turn, and compares its move with the expert's (finite-
horizon value iteration) there.

- agreement: the share of visited turns where the policy's move is the expert's.
- map-blind bound: the most agreement any policy can reach on the same turns
  when it knows the turn and its own position but not where the holes are
  (per (turn, position), the expert's most common move). A policy above the
  bound must use the map.
- first move: the same at the first turn, where every map starts the player in
  the top-left corner, so the bound is the expert's most common first move.

    python experiments/probes/frozenlake_reads_map.py CHECKPOINT [CHECKPOINT ...] [--episodes 200]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import envs
from envs.experts import ExpertView, make_expert, read_lake
from envs.frozenlake import ACTIONS
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.evaluate import eval_rollout, eval_seeds
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.search import SearchConfig
from tsr_cli.train.checkpoint import checkpoint_defaults


def visited_turns(trajectory, make_env, max_turns: int) -> list[tuple[int, int, str, str]]:
    """(turn, player position, policy move, expert move) for each turn of a greedy episode."""
    env = make_env()
    env.reset(seed=trajectory.seed)
    expert = make_expert("frozenlake", env)
    out = []
    for index, turn in enumerate(trajectory.turns):
        board = env.render()
        if not turn.executed:  # an invalid answer moves nothing; it never happens at 1 token
            continue
        move = expert.act(ExpertView(board, max_turns - index, 1)).actions[0]
        out.append((index, read_lake(board)[1], turn.executed[0], move))
        env.step(ACTIONS.index(turn.executed[0]))
    return out


def agreement(policy, make_env, protocol: ProtocolConfig, max_new_tokens: int, episodes: int) -> dict:
    """Greedy success, and agreement with the expert against the position-only bound, on
    the first `episodes` held-out maps."""
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=protocol.stop)
    result = eval_rollout(policy, make_env, eval_seeds(episodes), SearchConfig("none"), params, protocol,
                          env_name="frozenlake", batch_groups=50)
    rows = [row for t in result.trajectories for row in visited_turns(t, make_env, protocol.max_turns)]
    by_place = defaultdict(Counter)
    for turn, position, _, move in rows:
        by_place[turn, position][move] += 1
    first = [(p, e) for turn, _, p, e in rows if turn == 0]
    return {"success": sum(t.success for t in result.trajectories) / len(result.trajectories),
            "turns": len(rows), "agreement": sum(p == e for _, _, p, e in rows) / len(rows),
            "map_blind_bound": sum(max(c.values()) for c in by_place.values()) / len(rows),
            "first_agreement": sum(p == e for p, e in first) / len(first),
            "first_bound": max(Counter(e for _, e in first).values()) / len(first),
            "first_moves": dict(Counter(p for p, _ in first))}


def probe(checkpoint: str, episodes: int) -> dict:
    """`agreement` of a tsr checkpoint, with the env and protocol it was trained with."""
    saved = checkpoint_defaults(checkpoint)
    make_env = envs.factory("frozenlake", **saved.get("env_args", {}))
    protocol = ProtocolConfig(saved["max_turns"], saved["actions_per_turn"], answer_only=saved["answer_only"])
    policy = load_policy(checkpoint, seed=0, env_names=["frozenlake"])
    return {"checkpoint": checkpoint, **agreement(policy, make_env, protocol, saved["max_new_tokens"], episodes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="tsr checkpoint dirs (RUN/checkpoints/step_N)")
    parser.add_argument("--episodes", type=int, default=200, help="held-out maps (the SFT evaluations use 200)")
    args = parser.parse_args()
    print("| checkpoint | greedy success | turns | agreement with expert (bound) | first move: agreement "
          "(bound) | first moves |")
    print("|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        r = probe(checkpoint, args.episodes)
        print(f"| {r['checkpoint']} | {r['success']:.3f} | {r['turns']} | {r['agreement']:.3f} "
              f"({r['map_blind_bound']:.3f}) | {r['first_agreement']:.3f} ({r['first_bound']:.3f}) | "
              f"{r['first_moves']} |", flush=True)


if __name__ == "__main__":
    main()

"""Held-out success of FrozenLake policies that never look at the map.

The RL runs from the tiny SFT starts plateau near greedy success 0.33 on
FrozenLake. This measures what a map-blind policy reaches on the same
held-out maps, with the environment's own dynamics (slippery, 10 moves):
every fixed periodic move pattern up to period 4, best first.

    python experiments/probes/frozenlake_open_loop.py [--episodes 128] [--top 5]
"""

from __future__ import annotations

import argparse
import itertools

import envs
from envs.frozenlake import ACTIONS
from tsr_cli.evaluate import eval_seeds


def success(pattern: tuple[int, ...], seeds, max_turns: int = 10) -> float:
    """Share of `seeds` whose map the periodic move `pattern` solves within `max_turns` moves."""
    make = envs.factory("frozenlake")
    wins = 0
    for seed in seeds:
        env = make()
        env.reset(seed=int(seed))
        for turn in range(max_turns):
            _, reward, terminated, truncated, _ = env.step(pattern[turn % len(pattern)])
            if terminated or truncated:
                break
        wins += reward > 0
    return wins / len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=128, help="held-out maps (the sweeps use 128)")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    seeds = eval_seeds(args.episodes)
    patterns = {p for n in range(1, 5) for p in itertools.product(range(len(ACTIONS)), repeat=n)}
    scored = sorted(((success(p, seeds), p) for p in patterns), reverse=True)
    print(f"| map-blind move pattern (repeated) | held-out success ({args.episodes} maps) |")
    print("|---|---|")
    for rate, pattern in scored[:args.top]:
        print(f"| {', '.join(ACTIONS[a] for a in pattern)} | {rate:.3f} |")


if __name__ == "__main__":
    main()

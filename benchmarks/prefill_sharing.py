"""What does sharing the prefill of a common prefix save? (tsr_cli.policies.sampling.prefill)

Times one training step's rollout collection of the tiny policy on each
environment and strategy twice, in the same process: with prefix sharing off
(every distinct prompt prefilled in full, as before) and on. Prints a markdown
table with both wall times, their ratio, and whether the two produced the same
trajectories (they must: sharing changes the arithmetic order, not the tokens).

    .venv/bin/python benchmarks/prefill_sharing.py [--groups 8] [--group-size 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from tsr_cli.policies import sampling
from tsr_cli.train.config import load_config
from tsr_cli.train.trainer import Trainer

STRATEGIES = {"none": {}, "beam": {"search.candidates": 4, "search.beam_width": 1},
              "lookahead": {"search.candidates": 4, "search.depth": 2}}


def collect(env: str, strategy: str, groups: int, group_size: int, share: bool) -> tuple[float, list]:
    overrides = {"search.strategy": strategy, **STRATEGIES[strategy], "trainer.groups": groups,
                 "trainer.group_size": group_size}
    trainer = Trainer(load_config(f"experiments/tiny/{env}_grpo_none.yaml", overrides))
    trainer.step = 1
    saved = sampling.MIN_SHARED_TOKENS
    sampling.MIN_SHARED_TOKENS = saved if share else 10**9
    try:
        start = time.perf_counter()
        result = trainer.collect()
        seconds = time.perf_counter() - start
    finally:
        sampling.MIN_SHARED_TOKENS = saved
    tokens = [[tuple(turn.completion.token_ids) for turn in traj.turns] for traj in result.trajectories]
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings per cell")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}; {args.groups} x {args.group_size} rollouts, "
          f"best of {args.repeats}")
    print("| env | search | unshared s | shared s | speed-up | same trajectories |")
    print("|---|---|---|---|---|---|")
    for env in ("frozenlake", "sokoban"):
        for strategy in STRATEGIES:
            off, on = [], []
            for _ in range(args.repeats):
                t_off, tokens_off = collect(env, strategy, args.groups, args.group_size, share=False)
                t_on, tokens_on = collect(env, strategy, args.groups, args.group_size, share=True)
                off.append(t_off)
                on.append(t_on)
            same = "yes" if tokens_off == tokens_on else "NO"
            print(f"| {env} | {strategy} | {min(off):.1f} | {min(on):.1f} | {min(off) / min(on):.2f}x | {same} |",
                  flush=True)


if __name__ == "__main__":
    main()

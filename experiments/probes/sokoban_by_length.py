"""Which held-out Sokoban levels a policy solves, by the length of their optimal solution.

The RL runs from the Sokoban SFT start climb a few points and stop. This
plays each checkpoint greedily on a run's held-out levels (the same
episodes, streams and settings as the run's own evaluation) and splits
solved and failed levels by their BFS-optimal solution length
(`envs/sokoban_solver.py`). With two checkpoints it also counts how the
levels moved between them (solved before / after).

    python experiments/probes/sokoban_by_length.py RUN_CONFIG CHECKPOINT [CHECKPOINT ...]
        [--temperature T --repeats K]

With `--temperature T` the levels are played sampled at T instead, K times each
(sampling streams of trainer seeds 0..K-1): the counts are then solved plays
out of K x levels, which shows how often exploration finds each length's solutions.

RUN_CONFIG is a run's `config.yaml` (its env, protocol and held-out settings);
each CHECKPOINT is a `checkpoints/step_N` directory (an SFT start's too).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from envs.sokoban_solver import solution_length
from tsr_cli.evaluate import eval_seeds
from tsr_cli.train.config import load_config
from tsr_cli.train.trainer import Trainer


def outcomes(run_config: Path, checkpoint: Path, temperature: float = 0.0,
             repeats: int = 1) -> tuple[dict[int, int], Trainer]:
    """{held-out seed: solved plays out of `repeats`} for `checkpoint`, played at `temperature`
    as `run_config` evaluates; the trainer."""
    solved: Counter = Counter()
    for repeat in range(repeats):
        cfg = load_config(run_config, {"policy.name": str(checkpoint), "trainer.run_dir": "/nonexistent",
                                       "trainer.seed": repeat})
        trainer = Trainer(cfg)
        result = trainer.held_out_episodes(temperature=temperature)
        for seed, t in zip(eval_seeds(cfg.trainer.eval_episodes), result.trajectories):
            solved[seed] += int(bool(t.success))
    return dict(solved), trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_config", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    parser.add_argument("--repeats", type=int, default=1, help="sampled plays per level (with --temperature)")
    args = parser.parse_args()
    repeats = args.repeats if args.temperature > 0 else 1
    results, trainer = {}, None
    for checkpoint in args.checkpoints:
        results[checkpoint], trainer = outcomes(args.run_config, checkpoint, args.temperature, repeats)
    seeds = list(next(iter(results.values())))
    lengths = {}
    for seed in seeds:
        env = trainer._make_env()
        env.reset(seed=seed)
        lengths[seed] = solution_length(env)
    by_length = Counter(lengths.values())
    print("optimal length: levels  " + "  ".join(f"{k}: {v}" for k, v in sorted(by_length.items(), key=str)))
    how = "greedy" if repeats == 1 and args.temperature == 0 else f"T={args.temperature:g} x {repeats}"
    for checkpoint, solved in results.items():
        wins = Counter()
        for seed, count in solved.items():
            wins[lengths[seed]] += count
        print(f"{checkpoint}: {how} success {sum(solved.values()) / (repeats * len(solved)):.3f}; solved by length  "
              + "  ".join(f"{k}: {wins.get(k, 0)}/{repeats * n}" for k, n in sorted(by_length.items(), key=str)))
    if len(results) == 2 and repeats == 1:
        before, after = results.values()
        moves = Counter((before[s], after[s]) for s in seeds)
        print(f"levels solved before -> after: kept {moves[True, True]}, gained {moves[False, True]}, "
              f"lost {moves[True, False]}, never {moves[False, False]}")


if __name__ == "__main__":
    main()

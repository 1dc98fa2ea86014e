"""Which held-out Sokoban levels a policy solves, by the length of their optimal solution.

The RL runs from the Sokoban SFT start climb a few points and stop. This
plays each checkpoint greedily on a run's held-out levels (the same
episodes, streams and settings as the run's own evaluation) and splits
solved and failed levels by their BFS-optimal solution length
(`envs/sokoban_solver.py`). With two checkpoints it also counts how the
levels moved between them (solved before / after).

    python experiments/probes/sokoban_by_length.py RUN_CONFIG CHECKPOINT [CHECKPOINT ...]

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


def outcomes(run_config: Path, checkpoint: Path) -> tuple[dict[int, bool], Trainer]:
    """{held-out seed: solved} for `checkpoint`, played greedily as `run_config` evaluates; the trainer."""
    cfg = load_config(run_config, {"policy.name": str(checkpoint), "trainer.run_dir": "/nonexistent"})
    trainer = Trainer(cfg)
    result = trainer.held_out_episodes(temperature=0.0)
    seeds = eval_seeds(cfg.trainer.eval_episodes)
    return {seed: bool(t.success) for seed, t in zip(seeds, result.trajectories)}, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_config", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    args = parser.parse_args()
    results, trainer = {}, None
    for checkpoint in args.checkpoints:
        results[checkpoint], trainer = outcomes(args.run_config, checkpoint)
    seeds = list(next(iter(results.values())))
    lengths = {}
    for seed in seeds:
        env = trainer._make_env()
        env.reset(seed=seed)
        lengths[seed] = solution_length(env)
    by_length = Counter(lengths.values())
    print("optimal length: levels  " + "  ".join(f"{k}: {v}" for k, v in sorted(by_length.items(), key=str)))
    for checkpoint, solved in results.items():
        wins = Counter(lengths[s] for s, ok in solved.items() if ok)
        print(f"{checkpoint}: greedy success {sum(solved.values()) / len(solved):.3f}; solved by length  "
              + "  ".join(f"{k}: {wins.get(k, 0)}/{n}" for k, n in sorted(by_length.items(), key=str)))
    if len(results) == 2:
        before, after = results.values()
        moves = Counter((before[s], after[s]) for s in seeds)
        print(f"levels solved before -> after: kept {moves[True, True]}, gained {moves[False, True]}, "
              f"lost {moves[True, False]}, never {moves[False, False]}")


if __name__ == "__main__":
    main()

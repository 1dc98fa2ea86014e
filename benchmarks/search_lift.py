"""Does search lift success on the same policy? (issue 2's acceptance table)

Runs `tsr eval --policy random` on N held-out seeds of Sokoban 6x6 and slippery
FrozenLake 4x4 for every strategy and scorer, and prints a markdown table with
each strategy's success minus `none`'s, measured in the same run.

    .venv/bin/python benchmarks/search_lift.py [--episodes 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

RUNS = [("none", []), ("best-of-n", ["--candidates", "4"]), ("beam", ["--candidates", "4"]),
        ("lookahead", ["--candidates", "4", "--depth", "2"])]


def evaluate(env: str, search: str, extra: list[str], scorer: str, episodes: int) -> dict:
    cmd = [sys.executable, "-m", "tsr_cli.cli", "eval", "--env", env, "--policy", "random",
           "--search", search, *extra, "--scorer", scorer, "--episodes", str(episodes), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    print("| env | scorer | search | success | Δ vs none | mean return | tokens | real steps | sim steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env in ("sokoban", "frozenlake"):
        for scorer in ("heuristic", "env_reward"):
            base = None
            for search, extra in RUNS:
                r = evaluate(env, search, extra, scorer, args.episodes)
                base = r["success_rate"] if base is None else base
                print(f"| {env} | {scorer} | {search} | {r['success_rate']:.3f} | "
                      f"{r['success_rate'] - base:+.3f} | {r['mean_return']:.2f} | {r['tokens_generated']} | "
                      f"{r['env_steps']} | {r['sim_env_steps']} |", flush=True)


if __name__ == "__main__":
    main()

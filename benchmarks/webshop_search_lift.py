"""Does search lift WebShop rewards for the same policy? `random` on held-out goals, per strategy.

    .venv/bin/python benchmarks/webshop_search_lift.py [--episodes 100] [--data-dir DIR]

Prints a markdown table: mean reward, success, and cost of each strategy and
scorer, with the mean-reward difference to `none` measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

RUNS = [("none", "heuristic", []), ("beam", "env_reward", []), ("beam", "heuristic", []),
        ("beam", "heuristic", ["--beam-width", "2"]), ("lookahead", "heuristic", ["--depth", "2"]),
        ("best-of-n", "heuristic", [])]


def evaluate(search: str, scorer: str, extra: list[str], episodes: int, env_args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tsr_cli.cli", "eval", "--env", "webshop", *env_args, "--policy", "random",
           "--search", search, "--candidates", "4", *extra, "--scorer", scorer, "--episodes", str(episodes),
           "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--data-dir", default=None, help="WebShop's real files (uses their test split)")
    args = parser.parse_args()
    env_args = ["--env-arg", f"data_dir={args.data_dir}", "--env-arg", "split=test"] if args.data_dir else []
    print("| search | scorer | extra | mean reward | Δ vs none | success | tokens | sim steps |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for search, scorer, extra in RUNS:
        r = evaluate(search, scorer, extra, args.episodes, env_args)
        base = r["mean_return"] if base is None else base
        print(f"| {search} | {scorer} | {' '.join(extra)} | {r['mean_return']:.3f} | {r['mean_return'] - base:+.3f} | "
              f"{r['success_rate']:.2f} | {r['tokens_generated']} | {r['sim_env_steps']} |", flush=True)


if __name__ == "__main__":
    main()

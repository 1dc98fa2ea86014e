"""WebShop environment costs: steps per second, clone cost, and shared vs per-env catalogue builds.

    .venv/bin/python benchmarks/webshop_env.py [--episodes 300] [--envs 16] [--data-dir DIR]

Prints one markdown table, all numbers measured in this run:
- reset + step throughput, with the expert and with uniformly random listed actions;
- the cost of `clone()` (and of clone + one step), the operation search repeats most;
- catalogue + BM25 index: built once and shared (what `envs.make` does) against
  rebuilt for every environment (what the original WebShop does), for N envs, as a ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs
from envs.webshop import expert_action
from envs.webshop.catalogue import build_catalogue, load_catalogue
from envs.webshop.data import read_webshop_files
from envs.webshop.generated import generate_catalogue_records
from envs.webshop.pages import ACTIONS_PREFIX
from envs.webshop.search_engine import SearchEngine


def throughput(env, episodes: int, policy) -> tuple[float, float]:
    """(steps per second, resets per second) over `episodes` episodes of at most 9 steps."""
    rng = np.random.default_rng(0)
    steps, reset_time, step_time = 0, 0.0, 0.0
    for seed in range(episodes):
        t = time.perf_counter()
        obs, _ = env.reset(seed=seed)
        reset_time += time.perf_counter() - t
        for _ in range(env.max_turns):
            action = policy(env, obs, rng)
            t = time.perf_counter()
            obs, _, terminated, _, _ = env.step(action)
            step_time += time.perf_counter() - t
            steps += 1
            if terminated:
                break
    return steps / step_time, episodes / reset_time


def random_listed(env, obs, rng) -> str:
    listed = obs.rsplit("\n", 1)[-1][len(ACTIONS_PREFIX):].split(", ")
    return listed[int(rng.integers(len(listed)))]


def clone_cost(env, n: int = 20_000) -> tuple[float, float]:
    """(seconds per clone, seconds per clone + one step) on an item page."""
    env.reset(seed=0)
    while env.page.kind != "item":
        env.step(expert_action(env))
    t = time.perf_counter()
    for _ in range(n):
        env.clone()
    per_clone = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n // 10):
        env.clone().step("click[description]")
    return per_clone, (time.perf_counter() - t) / (n // 10)


def build_costs(data_dir: str | None, n_envs: int) -> tuple[float, float, float]:
    """(one catalogue + index build, one env from the shared cache, per-env total / shared total)."""
    t = time.perf_counter()
    if data_dir is None:
        raw, table = generate_catalogue_records()
        human = None
    else:
        raw, table, human = read_webshop_files(data_dir)
    catalogue = build_catalogue("benchmark", raw, table, human)
    SearchEngine(catalogue.products)
    build = time.perf_counter() - t
    envs.make("webshop", data_dir=data_dir)  # warm the shared cache
    t = time.perf_counter()
    for _ in range(n_envs):
        envs.make("webshop", data_dir=data_dir)
    make = (time.perf_counter() - t) / n_envs
    return build, make, (n_envs * (build + make)) / (build + n_envs * make)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--envs", type=int, default=16, help="environments for the build comparison")
    parser.add_argument("--data-dir", default=None, help="WebShop's real files instead of the generated catalogue")
    args = parser.parse_args()
    kwargs = {"data_dir": args.data_dir, "split": "all"} if args.data_dir else {}

    t = time.perf_counter()
    env = envs.make("webshop", **kwargs)
    first_make = time.perf_counter() - t
    t = time.perf_counter()
    env.reset(seed=0)
    while env.page.kind != "done":
        env.step(expert_action(env))  # the first purchase loads spaCy
    first_episode = time.perf_counter() - t
    expert_sps, expert_rps = throughput(env, args.episodes, lambda e, o, r: expert_action(e))
    random_sps, random_rps = throughput(env, args.episodes, random_listed)
    per_clone, clone_step = clone_cost(env)
    build, make, ratio = build_costs(args.data_dir, args.envs)

    catalogue = load_catalogue(args.data_dir)
    print(f"catalogue: {catalogue}\n")
    print("| measure | value |\n|---|---|")
    print(f"| first `envs.make` (catalogue + index build) | {first_make * 1e3:.0f} ms |")
    print(f"| first expert episode (loads spaCy for the reward) | {first_episode:.2f} s |")
    print(f"| expert: steps/s, resets/s | {expert_sps:,.0f}, {expert_rps:,.0f} |")
    print(f"| random listed actions: steps/s, resets/s | {random_sps:,.0f}, {random_rps:,.0f} |")
    print(f"| clone() | {per_clone * 1e6:.1f} µs |")
    print(f"| clone() + one step | {clone_step * 1e6:.1f} µs |")
    print(f"| catalogue + index build | {build * 1e3:.0f} ms |")
    print(f"| `envs.make` with the shared catalogue | {make * 1e3:.2f} ms |")
    print(f"| {args.envs} envs: per-env builds / shared build (time ratio) | {ratio:.1f}x |")


if __name__ == "__main__":
    main()

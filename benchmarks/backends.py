"""Rollouts from the HF sampling loop against vLLM, on the same workload.

SmolLM2-135M-Instruct, FrozenLake and Sokoban, `none` and `beam` (M=4, B=1),
answer-only and <think> (at most 64 new tokens per turn), 16 held-out
episodes each at temperature 1. Per cell and backend: rollout wall seconds,
generated tokens and tokens/s; for vLLM also its prefix-cache hit rate.
Then vLLM's weight-sync seconds (full weights, LoRA merged) and the gap
between its log-probs and the trainer's float32 recomputation.

Each backend runs in its own process: vLLM changes process-wide torch
settings, and the two must not share a warm cache. Both generate with
`--threads` torch threads (1 by default: on 2 shared cores SmolLM2 sampled
3-10x faster with one thread than two, in both backends). A warm-up call
before timing keeps one-time compilation out of the numbers.

    .venv-vllm/bin/python benchmarks/backends.py [--episodes 16] [--device cpu|cuda]
        [--arms hf:float32 vllm:bfloat16] [--envs frozenlake sokoban] [--searches none beam]
        [--formats answer think] [--threads 1]

Prints a markdown table; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 64


def cell_settings(env: str, search: str, fmt: str, episodes: int):
    from tsr_cli.agent.protocol import ProtocolConfig
    from tsr_cli.evaluate import eval_seeds
    from tsr_cli.policies.base import SamplingParams
    from tsr_cli.search import SearchConfig

    protocol = ProtocolConfig(answer_only=fmt == "answer")
    params = SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, stop=protocol.stop, seed=0)
    return protocol, params, SearchConfig(search, candidates=4, beam_width=1, seed=0), eval_seeds(episodes)


def run_cell(policy, env: str, search: str, fmt: str, episodes: int) -> dict:
    import envs
    from tsr_cli.rollout import rollout

    protocol, params, search_cfg, seeds = cell_settings(env, search, fmt, episodes)
    extra = dict(policy.stats.extra)
    start = time.perf_counter()
    result = rollout(policy, envs.factory(env), seeds, search_cfg, params, protocol, env_name=env)
    seconds = time.perf_counter() - start
    tokens = result.cost.tokens_generated
    row = {"env": env, "search": search, "format": fmt, "seconds": round(seconds, 2), "tokens": tokens,
           "tokens_per_s": round(tokens / seconds, 1),
           "success": sum(t.success for t in result.trajectories) / len(result.trajectories)}
    if "prompt_tokens" in extra:
        asked = policy.stats.extra["prompt_tokens"] - extra["prompt_tokens"]
        cached = policy.stats.extra["cached_tokens"] - extra["cached_tokens"]
        row["prefix_cache_hit_rate"] = round(cached / asked, 3) if asked else 0.0
    return row, result


def warm_up(policy) -> None:
    from tsr_cli.policies.base import SamplingParams

    codec = policy.codec
    prompt = codec.encode(codec.render([{"role": "user", "content": "Say hi."}], True))
    policy.generate([prompt] * 4, 2, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))


def worker(args) -> dict:
    """One backend's cells in this process (`--worker hf:float32`)."""
    import torch

    from tsr_cli.policies import load_policy

    backend, dtype = args.worker.split(":")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    policy = load_policy("smollm2-135m", seed=0, device=args.device, dtype=dtype, backend=backend)
    out = {"arm": args.worker, "load_seconds": round(time.perf_counter() - start, 1), "cells": []}
    warm_up(policy)
    first = None
    for env in args.envs:
        for search in args.searches:
            for fmt in args.formats:
                row, result = run_cell(policy, env, search, fmt, args.episodes)
                first = first or result
                out["cells"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    if backend == "vllm":
        out.update(sync_seconds(policy, args.device))
        out.update(logprob_gap(policy, first, args.device))
    return out


def sync_seconds(engine, device: str, repeats: int = 3) -> dict:
    """Median seconds of `sync_from`: every weight, and LoRA (rank 8, q/k/v/o) merged layers only."""
    from tsr_cli.policies import load_policy
    from tsr_cli.train.config import PolicySection
    from tsr_cli.train.model import TrainableModel

    hf = load_policy("smollm2-135m", seed=0, device=device)
    full = statistics.median(engine.sync_from(hf.model) for _ in range(repeats))
    lora = TrainableModel(hf, PolicySection(lora=True), critic=None).model
    merged = statistics.median(engine.sync_from(lora) for _ in range(repeats))
    merged_all = statistics.median(engine.sync_from(lora, everything=True) for _ in range(repeats))
    return {"sync_seconds_full": round(full, 3), "sync_seconds_lora_merged": round(merged, 3),
            "sync_seconds_lora_merged_all_weights": round(merged_all, 3)}


def logprob_gap(engine, result, device: str) -> dict:
    """|sampler - trainer| log-prob over the model tokens of one cell's trajectories (trainer: float32)."""
    import torch

    from tsr_cli.policies import load_policy
    from tsr_cli.train.batch import build_batch
    from tsr_cli.train.config import PolicySection
    from tsr_cli.train.model import TrainableModel

    hf = load_policy("smollm2-135m", seed=0, device=device)
    trajs = result.trajectories
    model = TrainableModel(hf, PolicySection(lora=False), critic=None)
    gaps = []
    for traj in trajs:
        batch = build_batch([traj], hf.codec.pad_token_id)
        with torch.no_grad():
            recomputed = model.forward(batch).logprobs[0]
        sampled = torch.zeros_like(recomputed)
        pos = 0
        for turn in traj.turns:
            pos += len(turn.prompt_ids)
            sampled[pos - 1:pos - 1 + len(turn.logprobs)] = torch.tensor(turn.logprobs)
            pos += len(turn.response_ids)
        gaps.append((sampled - recomputed).abs()[batch.mask[0].bool()])
    gap = torch.cat(gaps)
    return {"logprob_diff_max": round(float(gap.max()), 5), "logprob_diff_mean": round(float(gap.mean()), 6)}


def spawn(arm: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", arm, "--episodes", str(args.episodes),
               "--device", args.device, "--threads", str(args.threads), "--envs", *args.envs,
               "--searches", *args.searches, "--formats", *args.formats]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{arm} worker failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: list[dict]) -> None:
    base = results[0]
    print(f"| env | search | format | {' | '.join(r['arm'] + ' s (tok/s)' for r in results)} "
          f"| speed-up vs {base['arm']} | prefix-cache hit |")
    print("|---" * (5 + len(results)) + "|")
    for i, cell in enumerate(base["cells"]):
        rows = [r["cells"][i] for r in results]
        timings = " | ".join(f"{row['seconds']} ({row['tokens_per_s']})" for row in rows)
        speed = " / ".join(f"{cell['seconds'] / row['seconds']:.2f}x" for row in rows[1:]) or "-"
        hits = " / ".join(str(row["prefix_cache_hit_rate"]) for row in rows if "prefix_cache_hit_rate" in row)
        print(f"| {cell['env']} | {cell['search']} | {cell['format']} | {timings} | {speed} | {hits or '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arms", nargs="+", default=["hf:float32", "vllm:bfloat16"],
                        help="backend:dtype per arm; the first is the baseline")
    parser.add_argument("--envs", nargs="+", default=["frozenlake", "sokoban"])
    parser.add_argument("--searches", nargs="+", default=["none", "beam"])
    parser.add_argument("--formats", nargs="+", default=["answer", "think"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in both backends")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = [spawn(arm, args) for arm in args.arms]
    report(results)
    print(json.dumps({"device": args.device, "episodes": args.episodes, "threads": args.threads,
                      "max_new_tokens": MAX_NEW_TOKENS, "arms": results}))


if __name__ == "__main__":
    main()

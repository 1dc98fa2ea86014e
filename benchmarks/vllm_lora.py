"""LoRA into vLLM: merged weights against vLLM's native LoRA adapters (`policy.vllm_lora`).

SmolLM2-135M-Instruct with a rank-8 LoRA on q/k/v/o (lora_B drawn small and
random, as after some training), served by a vLLM engine either way:
- merge:  each sync streams W + scale * B @ A for the 120 wrapped layers;
- native: each sync writes the PEFT adapter (safetensors) and vLLM loads it;
          every forward adds the adapter through vLLM's LoRA kernels.
Per path: engine start-up, sync seconds (median of `--syncs`), and rollout
seconds of a fixed workload (FrozenLake, `none`, `--episodes` held-out
episodes at temperature 1, answer-only and <think>, at most 64 new tokens per
turn, the same seeds and adapter for both paths). Ratios are native / merge,
both measured in this run.

Each path runs in its own process, one after the other (vLLM changes
process-wide torch settings, and the engines must not share a warm cache),
with `--threads` torch threads.

    .venv-vllm/bin/python benchmarks/vllm_lora.py [--episodes 16] [--syncs 3] [--dtype float32]
        [--threads 1]

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import MAX_NEW_TOKENS, run_cell, warm_up  # noqa: E402  (the same cells as backends.py)

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("merge", "native")
CELLS = [("frozenlake", "none", "answer"), ("frozenlake", "none", "think")]
LORA = {"lora": True, "lora_rank": 8, "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
#: lora_B ~ N(0, B_STD^2), seeded: a non-zero adapter, as after training (PEFT starts B at 0)
B_STD = 0.05


def worker(args) -> dict:
    """One path's engine, syncs and cells in this process (`--worker merge`)."""
    import torch

    from tsr_cli.policies import load_policy
    from tsr_cli.train.config import PolicySection
    from tsr_cli.train.model import TrainableModel, build_sampler

    torch.set_num_threads(args.threads)
    section = PolicySection(dtype=args.dtype, backend="vllm", vllm_lora=args.worker, **LORA)
    policy = load_policy("smollm2-135m", seed=0, dtype=args.dtype)
    model = TrainableModel(policy, section, critic=None).model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * B_STD)
    start = time.perf_counter()
    engine = build_sampler(section, policy)
    out = {"path": args.worker, "start_seconds": round(time.perf_counter() - start, 2)}
    warm_up(engine)
    syncs = [engine.sync_from(model) for _ in range(args.syncs)]
    out.update(sync_seconds=round(statistics.median(syncs), 4), syncs=[round(s, 4) for s in syncs], cells=[])
    for env, search, fmt in CELLS:
        row, _ = run_cell(engine, env, search, fmt, args.episodes)
        out["cells"].append(row)
        print(json.dumps({"path": args.worker, **row}), file=sys.stderr, flush=True)
    engine.close()
    return out


def spawn(path: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", path,
               "--episodes", str(args.episodes), "--syncs", str(args.syncs), "--dtype", args.dtype,
               "--threads", str(args.threads)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{path} worker failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(merge: dict, native: dict) -> None:
    print("| measure | merge | native | native / merge |")
    print("|---|---|---|---|")
    for label, key in (("engine start s", "start_seconds"), ("sync s (median)", "sync_seconds")):
        print(f"| {label} | {merge[key]} | {native[key]} | {native[key] / merge[key]:.2f}x |")
    for m, n in zip(merge["cells"], native["cells"]):
        label = f"rollout s: {m['env']} {m['search']} {m['format']} (tokens, tok/s)"
        print(f"| {label} | {m['seconds']} ({m['tokens']}, {m['tokens_per_s']}) "
              f"| {n['seconds']} ({n['tokens']}, {n['tokens_per_s']}) | {n['seconds'] / m['seconds']:.2f}x "
              f"(tok/s {n['tokens_per_s'] / m['tokens_per_s']:.2f}x) |")
    m, n = step_seconds(merge), step_seconds(native)
    print(f"| sync + the rollouts above s | {m} | {n} | {n / m:.2f}x |")


def step_seconds(result: dict) -> float:
    """What a training step with these rollouts would spend generating: one sync and every cell."""
    return round(result["sync_seconds"] + sum(cell["seconds"] for cell in result["cells"]), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--syncs", type=int, default=3, help="syncs timed per path; the median is reported")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in both paths")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    merge, native = (spawn(path, args) for path in PATHS)
    report(merge, native)
    print(json.dumps({"episodes": args.episodes, "dtype": args.dtype, "threads": args.threads,
                      "max_new_tokens": MAX_NEW_TOKENS, "lora_rank": LORA["lora_rank"],
                      "paths": [merge, native]}))


if __name__ == "__main__":
    main()

"""Peak memory and seconds of one trainer update: the full-logits path against the lean path.

One update of SmolLM2-135M (full fine-tuning and LoRA) on a batch of
ROWS x TOKENS conversation tokens, through the real `Trainer.update`:

- baseline: `trainer.logprob_chunk=0` (the whole [N, P, V] float32 logits at
  once, entropy with gradient, no gradient checkpointing): the pre-fix path;
- lean: the logits projected 512 positions at a time under activation
  checkpointing, and `trainer.gradient_checkpointing=true`.

Each case runs in its own process. Before the measured update a small update
allocates the gradients and AdamW's moments, so the figure is a training
step's own peak, not the optimiser's first allocation. Peak memory is the
rise of the process's peak resident set (Linux VmHWM, reset just before the
update) over its resident set at the start of the update; on CUDA it is
`torch.cuda.max_memory_allocated` over the allocation at the start.

    .venv/bin/python benchmarks/train_memory.py [--rows 8] [--tokens 1024] [--device cpu|cuda]

The last stdout line is one JSON object; `baseline_peak_mb`, `peak_mb` and
`max_loss_diff` are for the full fine-tuning case, the `cases` list has all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = {
    "baseline": {"trainer.logprob_chunk": 0, "trainer.gradient_checkpointing": False},
    "lean": {"trainer.logprob_chunk": 512, "trainer.gradient_checkpointing": True},
}
#: a conversation of 5 turns: environment tokens then a response, per turn
RESPONSE_SHARE = 0.4


def config(lora: bool, mode: str, device: str):
    from tsr_cli.train.config import load_config

    overrides = {"policy.name": "smollm2-135m", "policy.lora": lora, "policy.temperature": 1.0,
                 "algo.name": "grpo", "algo.minibatch_size": 1 << 20, "algo.grad_accum": 1,
                 "algo.entropy_coef": 0.001, "trainer.device": device, **MODES[mode]}
    return load_config(None, overrides)


def synthetic_batch(trainer, rows: int, tokens: int, seed: int = 0):
    """ROWS conversations of TOKENS tokens, 5 turns each, RESPONSE_SHARE of them model tokens."""
    import torch

    from tsr_cli.train.batch import TokenBatch

    g = torch.Generator().manual_seed(seed)
    vocab = trainer.policy.model.config.vocab_size
    ids = torch.randint(0, vocab, (rows, tokens), generator=g)
    mask = torch.zeros(rows, tokens - 1)
    turn = (tokens - 1) // 5
    for t in range(5):
        start = t * turn + int(turn * (1 - RESPONSE_SHARE))
        mask[:, start:(t + 1) * turn] = 1
    batch = TokenBatch(ids, torch.ones_like(ids), torch.zeros(rows), torch.arange(rows) // 2,
                       {"mask": mask, "rewards": torch.zeros_like(mask)}).to(trainer.device)
    batch.tokens["advantages"] = torch.randn(rows, 1, generator=g).to(trainer.device) * batch.mask
    return batch


def measure(lora: bool, mode: str, rows: int, tokens: int, device: str) -> dict:
    """One case, in this process: warm-up update, then the measured one."""
    import torch

    from tsr_cli.train.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer(config(lora, mode, device))
    warm = synthetic_batch(trainer, 2, 64, seed=1)
    _score(trainer, warm)
    trainer.update(warm)
    _reload(trainer)  # the same starting weights for every case
    batch = synthetic_batch(trainer, rows, tokens)
    _score(trainer, batch)
    start_mb = _reset_peak(device)
    started = time.perf_counter()
    stats = trainer.update(batch)
    seconds = time.perf_counter() - started
    peak = _peak(device) - start_mb
    return {"lora": lora, "mode": mode, "peak_mb": round(peak, 1), "seconds": round(seconds, 2),
            "loss": stats["loss"], "rows": rows, "tokens": tokens, "device": device}


def _score(trainer, batch) -> None:
    """Old log-probs under the current weights, as the trainer's scoring pass makes them."""
    trainer.score_batch(batch)
    batch.tokens["sampler_logprobs"] = batch.tokens["old_logprobs"].clone()


def _reload(trainer) -> None:
    """Put back the initial trainable weights after the warm-up step (optimiser state stays allocated)."""
    import torch

    from tsr_cli.policies import load_policy

    fresh = load_policy("smollm2-135m").model.state_dict()
    with torch.no_grad():
        for name, param in trainer.model.model.named_parameters():
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            if key in fresh and fresh[key].shape == param.shape:
                param.copy_(fresh[key])
            elif "lora_B" in name:
                param.zero_()


def _reset_peak(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    return _status_mb("VmRSS")


def _peak(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    args = parser.parse_args()
    if args.case:
        lora, mode = args.case.split(":")
        print(json.dumps(measure(lora == "lora", mode, args.rows, args.tokens, args.device)))
        return
    cases = []
    for lora in ("full", "lora"):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--case", f"{lora}:{mode}", "--rows", str(args.rows),
                   "--tokens", str(args.tokens), "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            case = json.loads(done.stdout.strip().splitlines()[-1])
            cases.append(case)
            print(f"{lora:4} {mode:8} peak {case['peak_mb']:8.1f} MB  {case['seconds']:7.2f} s  "
                  f"loss {case['loss']:.8f}", flush=True)
    full = {c["mode"]: c for c in cases if not c["lora"]}
    lora = {c["mode"]: c for c in cases if c["lora"]}
    result = {
        "baseline_peak_mb": full["baseline"]["peak_mb"], "peak_mb": full["lean"]["peak_mb"],
        "peak_ratio": round(full["lean"]["peak_mb"] / full["baseline"]["peak_mb"], 3),
        "max_loss_diff": max(abs(full["lean"]["loss"] - full["baseline"]["loss"]),
                             abs(lora["lean"]["loss"] - lora["baseline"]["loss"])),
        "lora_baseline_peak_mb": lora["baseline"]["peak_mb"], "lora_peak_mb": lora["lean"]["peak_mb"],
        "seconds_ratio": round(full["lean"]["seconds"] / full["baseline"]["seconds"], 3),
        "rows": args.rows, "tokens": args.tokens, "device": args.device, "cases": cases,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

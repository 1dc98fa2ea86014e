"""vLLM's native LoRA: the engine keeps the base weights and serves the trainer's adapter beside them.

The other way to get a LoRA policy into vLLM (`policy.vllm_lora: merge`, the
code in `vllm.py`) streams W + scale * B @ A for every wrapped layer after
each update. Here (`native`) the engine is started with LoRA layers
(`enable_lora`), gets the frozen base weights once, and after each update
loads the adapter as PEFT writes it: adapter_model.safetensors and
adapter_config.json in a fresh directory (vLLM's loader reads those; it would
fall back to a pickled adapter_model.bin, which is never written here).

Every sync is a new adapter with a new name and integer id. vLLM keeps a
loaded adapter by id and does not reload an id it holds (a sync that reused
one would go on serving the previous update: tested), and it keys prefix-cache
blocks by the adapter's name and path. With `max_loras=1` (and vLLM's default
of as many CPU slots) loading the new adapter evicts the old one.
"""

from __future__ import annotations

import shutil
import tempfile
import typing
import weakref
from pathlib import Path

from tsr_cli.train.model import base_model


def lora_layers(base) -> list:
    """(name, module) of every PEFT LoRA layer in `base`; [] without PEFT or LoRA."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [(name, module) for name, module in base.named_modules() if isinstance(module, LoraLayer)]


def lora_rank(model) -> int | None:
    """The rank of `model`'s active PEFT LoRA adapter; None without one."""
    if not lora_layers(base_model(model)):
        return None
    return model.active_peft_config.r


def engine_options(rank: int) -> dict:
    """`vllm.LLM` arguments for one adapter of `rank` at a time.

    vLLM takes max_lora_rank from a fixed set (1, 8, 16, 32, ...); the
    smallest one that holds `rank` wastes the least of its padded buffers.
    """
    from vllm.config.lora import MaxLoRARanks

    allowed = sorted(typing.get_args(MaxLoRARanks))
    fitting = [r for r in allowed if r >= rank]
    if not fitting:
        raise ValueError(f"vLLM serves LoRA ranks up to {allowed[-1]}, the policy has rank {rank}; "
                         "lower policy.lora_rank or set policy.vllm_lora: merge")
    return {"enable_lora": True, "max_lora_rank": fitting[0], "max_loras": 1}


class NativeLoRA:
    """The adapter the engine serves now, and the directory its files live in.

    `request` goes with every generate call; it is None until the first
    `publish`, so the engine then serves its base weights.
    """

    def __init__(self, llm) -> None:
        self.llm = llm
        self.request = None
        self.version = 0
        self.root = Path(tempfile.mkdtemp(prefix="tsr-vllm-lora-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True)

    def publish(self, model) -> None:
        """Write `model`'s adapter (PEFT's own save, safetensors) and load it into the engine now.

        Loading here rather than at the next generate call puts vLLM's read
        of the files in the sync's time, where the merge path's cost is too.
        """
        from vllm.lora.request import LoRARequest

        self.version += 1
        path = self.root / f"v{self.version}"
        model.save_pretrained(str(path), safe_serialization=True)
        request = LoRARequest(f"tsr-policy-v{self.version}", self.version, str(path))
        self.llm.llm_engine.add_lora(request)
        previous, self.request = self.request, request
        if previous is not None:  # vLLM holds its tensors in memory; the files are spent
            shutil.rmtree(previous.lora_path, ignore_errors=True)

    def close(self) -> None:
        self._cleanup()

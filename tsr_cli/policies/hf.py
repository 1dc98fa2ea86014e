"""Hugging Face transformers backend: any causal LM, on CPU or GPU.

The model runs through the shared `sample` loop with its KV cache; only the
last position's logits are computed (`logits_to_keep=1`), which matters for
a 49k-token vocabulary over long multi-turn prompts.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import HFCodec
from tsr_cli.policies.sampling import seeded_generate

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class HFPolicy:
    """A transformers causal LM and its tokenizer as a `Policy`.

    model:     a `*ForCausalLM`; it is moved to `device` and put in eval mode
    tokenizer: its tokenizer, which must carry a chat template
    dtype:     "float32" (default) or "bfloat16"; bfloat16 runs the forward
               under autocast and leaves the float32 weights untouched, so
               training can keep full-precision parameters

    Generation stops on every end id the model's generation config and the
    tokenizer name (`codec.stop_token_ids`). `context_length` is the model's
    `max_position_embeddings`; search ends an episode as truncated before a
    prompt plus `max_new_tokens` would pass it.
    """

    def __init__(self, model, tokenizer, *, seed: int = 0, device: str = "cpu",
                 dtype: str | torch.dtype = "float32", name: str | None = None) -> None:
        self.model = model.to(device).eval()
        self.codec = HFCodec(tokenizer, extra_stop_ids=generation_stop_ids(model))
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        self.name = name or getattr(model.config, "_name_or_path", "") or "hf"
        self.device = torch.device(device)
        self.autocast_dtype = _resolve_dtype(dtype)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.stats = GenerationStats()
        self._cache_arg = _cache_argument_name()

    @classmethod
    def from_pretrained(cls, path_or_id: str, *, seed: int = 0, device: str = "cpu",
                        dtype: str | torch.dtype = "float32", name: str | None = None,
                        **load_kwargs) -> "HFPolicy":
        """Load a local model directory, or a hub id (downloads only if one is named)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # tsr draws its own progress on stderr; transformers' per-load bars are noise there
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, **load_kwargs)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=torch.float32, **load_kwargs)
        return cls(model, tokenizer, seed=seed, device=device, dtype=dtype, name=name or str(path_or_id))

    def forward(self, input_ids, attention_mask, position_ids, past):
        """One cached forward step. Returns (last-position logits [B, V] float32, cache)."""
        with self._autocast():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=True, logits_to_keep=1,
                             **{self._cache_arg: past})
        return out.logits[:, -1].float(), out[self._cache_arg]

    @staticmethod
    def reorder(past, index: torch.Tensor):
        """Keep (or repeat) batch rows `index` of a transformers cache, in place."""
        past.reorder_cache(index)
        return past

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams,
                 streams=None) -> list[list[Completion]]:
        return seeded_generate(self, self.forward, prompts, n, params, self.reorder, streams)

    def _autocast(self):
        if self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def generation_stop_ids(model) -> list[int]:
    """The end ids named by the model's generation config and config (an int, a list or None)."""
    found: list[int] = []
    for config in (getattr(model, "generation_config", None), model.config):
        ids = getattr(config, "eos_token_id", None)
        found += [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return found


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _cache_argument_name() -> str:
    """transformers >= 5.24 renamed `past_key_values` to `cache`; the old name warns."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

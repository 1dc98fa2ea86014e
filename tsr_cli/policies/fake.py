"""A fake model with fixed logits, for testing generation and search (STYLE.md §8).

`FakeLogitsPolicy` has a byte-level tokenizer and a forward that returns
fixed logits: uniform by default, a fixed bias vector, or a preference for a
scripted string. It runs through the real `sample` loop, so its tests
exercise batching, pruning, stop strings, seeding and logprobs.
"""

from __future__ import annotations

from typing import Sequence

import torch

from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.sampling import seeded_generate


class FakeLogitsPolicy:
    """Fixed logits over the `ByteCodec` vocabulary.

    bias:     [V] logits added at every step (None = all zero, i.e. uniform)
    script:   text the model prefers: at generation step k the k-th token of
              `script` (then end-of-turn) gets `strength` added to its logit
    strength: the scripted token's logit boost; large values make it near-certain

    `forward_calls` counts forward passes and `batch_sizes` records each one's
    batch size, so tests can see the prefill and decode batches.
    """

    def __init__(self, *, bias: Sequence[float] | None = None, script: str | None = None,
                 strength: float = 10.0, seed: int = 0, name: str = "fake") -> None:
        self.name = name
        self.codec = ByteCodec()
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = GenerationStats()
        vocab = self.codec.vocab_size
        self.bias = torch.zeros(vocab) if bias is None else torch.as_tensor(bias, dtype=torch.float32)
        if self.bias.shape != (vocab,):
            raise ValueError(f"bias must have shape ({vocab},), got {tuple(self.bias.shape)}")
        self.script = None
        if script is not None:
            self.script = torch.tensor(self.codec.encode(script) + [self.codec.eos_token_id])
        self.strength = strength
        self.forward_calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, input_ids, attention_mask, position_ids, past):
        """past: prompt length per row [B]. Returns (logits [B, V], past)."""
        self.forward_calls += 1
        self.batch_sizes.append(input_ids.shape[0])
        seen = attention_mask.sum(dim=-1)
        # a prefill (no cache, or a prompt's suffix after its shared prefix) sees only prompt tokens
        prompt_len = seen if past is None or input_ids.shape[1] > 1 else past
        logits = self.bias.expand(input_ids.shape[0], -1).clone()
        if self.script is not None:
            step = (seen - prompt_len).clamp(max=len(self.script) - 1)
            logits[torch.arange(len(step)), self.script[step]] += self.strength
        return logits, prompt_len

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams,
                 streams=None) -> list[list[Completion]]:
        return seeded_generate(self, self.forward, prompts, n, params, streams=streams)

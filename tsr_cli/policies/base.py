"""The generation interface every policy backend implements.

A policy takes token-id prompts (the agent protocol builds them with the
policy's own chat codec) and returns, for each prompt, `n` sampled
completions with their token ids and per-token logprobs under the sampling
distribution. Search batches every pending generation of a turn into one
`generate` call, so backends should batch internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature == 0` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    #: generation stops once the decoded completion contains one of these
    stop: tuple[str, ...] = ("</answer>",)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


@dataclass
class Completion:
    """One sampled response.

    token_ids: [T] generated ids (including the end-of-turn id if one was produced)
    logprobs:  [T] log-probability of each generated id under the sampling distribution
    text:      the decoded response, special tokens removed
    finish:    "stop" (end-of-turn or stop string) or "length" (hit max_new_tokens)
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish: str = "stop"


class ChatCodec(Protocol):
    """The tokenizer side of a policy: chat template, encode, decode.

    eos_token_id:   the end-of-turn id the chat template closes an assistant turn with
    stop_token_ids: every id that ends generation (end-of-turn and end-of-text ids)
    name:           the tokenizer's name or path, for error messages
    """

    eos_token_id: int
    stop_token_ids: frozenset[int]
    name: str

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Policy(Protocol):
    """A generation backend: `generate(prompts, n, params)`.

    A backend whose model has a context window also sets `context_length`
    (tokens); search ends an episode as truncated rather than ask for a
    prompt that would not fit with `max_new_tokens` more. Policies without
    one (random, fake) leave it out and are never truncated.

    Backends the trainer samples from also take `streams`: one
    `torch.Generator` per prompt, from which that prompt's samples draw all
    their randomness (`policies/sampling.py`), so a prompt samples the same
    whatever else is in the batch. The trainer passes it; nothing else does.
    """

    name: str
    codec: ChatCodec

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams, streams=None
    ) -> list[list[Completion]]:
        """For each prompt, `n` completions; one batched call for all of them."""
        ...


@dataclass
class GenerationStats:
    """Cost counters a policy accumulates across calls."""

    calls: int = 0
    sequences: int = 0
    tokens: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, completions: list[list[Completion]]) -> None:
        self.calls += 1
        for group in completions:
            self.sequences += len(group)
            self.tokens += sum(len(c.token_ids) for c in group)

"""The batched sampling loop shared by every logits-producing policy.

`sample` runs one batch holding every prompt x n samples: the distinct
prompts are left-padded and prefilled once, the KV cache is then copied to
every sample, and each decode step feeds one token per still-running row.
Rows that finish (end-of-turn id, a stop string, or `max_new_tokens`) are
pruned from the batch so they cost nothing afterwards.

A model plugs in through two functions:

    forward(input_ids [B, L], attention_mask [B, L_total], position_ids [B, L], past)
        -> (logits of the last position [B, V], past)
    reorder(past, index [B']) -> past holding rows `index` of the batch

`attention_mask` covers the cached tokens plus the new ones. `past` is
whatever the model caches (None before the first call); the default
`reorder` handles None and (nested tuples of) tensors with the batch first.

A completion keeps the token that completes a stop string, and its text is
always `decode(token_ids)`, so the text may run a few characters past the
stop string when that token carries more.

Logprobs are those of the sampling distribution before top-p truncation:
log_softmax(logits / T) for T > 0 and log_softmax(logits) for greedy, so a
trainer recomputing them from the same logits gets the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from tsr_cli.policies.base import Completion, SamplingParams

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], "tuple[torch.Tensor, Any]"]
Reorder = Callable[[Any, torch.Tensor], Any]


def reorder_tensors(past: Any, index: torch.Tensor) -> Any:
    """Select batch rows `index` from None, a tensor, or nested tuples/lists of tensors."""
    if past is None:
        return None
    if isinstance(past, torch.Tensor):
        return past.index_select(0, index.to(past.device))
    return type(past)(reorder_tensors(p, index) for p in past)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device=None):
    """Left-pad token lists. Returns ids [P, L] and attention mask [P, L] (1 = real)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the smallest set with mass >= top_p. [B, V] -> [B, V]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # a token is dropped when the mass strictly before it already reaches top_p,
    # so the most likely token always survives
    drop = (probs.cumsum(dim=-1) - probs) >= top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def pick_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator):
    """Choose the next token per row. logits [B, V] -> (tokens [B], logprobs [B])."""
    logits = logits.float()
    if params.temperature == 0:
        tokens = logits.argmax(dim=-1)
        logprobs = logits.log_softmax(dim=-1)
    else:
        scaled = logits / params.temperature
        logprobs = scaled.log_softmax(dim=-1)
        probs = top_p_filter(scaled, params.top_p).softmax(dim=-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


@dataclass
class _Row:
    """One sample being generated."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None


class _StopCheck:
    """Decides whether a row is done after its newest token.

    A stop string newly contained in the completion must end inside the newest
    token, and an ordinary token decodes to at least one character, so decoding
    the last `len(longest stop)` tokens is enough; the slack of 4 covers tokens
    that decode to nothing or to part of a UTF-8 character.
    """

    def __init__(self, params: SamplingParams, eos_id: int, decode: Callable) -> None:
        self.stops = tuple(s for s in params.stop if s)
        self.window = max((len(s) for s in self.stops), default=0) + 4
        self.eos_id, self.decode, self.limit = eos_id, decode, params.max_new_tokens

    def __call__(self, row: _Row) -> str | None:
        if row.token_ids[-1] == self.eos_id:
            return "stop"
        if self.stops:
            tail = self.decode(row.token_ids[-self.window:])
            if any(s in tail for s in self.stops):
                return "stop"
        return "length" if len(row.token_ids) >= self.limit else None


def sample(
    forward: Forward,
    prompts: Sequence[Sequence[int]],
    n: int,
    params: SamplingParams,
    generator: torch.Generator,
    eos_id: int,
    decode: Callable[[Sequence[int]], str],
    pad_id: int = 0,
    reorder: Reorder = reorder_tensors,
) -> list[list[Completion]]:
    """Generate `n` completions per prompt in one batch of len(prompts) * n rows.

    Tensors live on `generator.device`. Returns, per prompt, its n completions.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample needs at least one prompt and no empty prompt")
    device = generator.device
    unique, which = _dedupe(prompts)
    ids, mask = left_pad(unique, pad_id, device)
    logits, past = forward(ids, mask, _positions(mask), None)
    # Prefill each distinct prompt once (search often repeats a state), then
    # give each of the n samples of every prompt its own copy of the cache.
    copies = torch.tensor(which, device=device).repeat_interleave(n)
    logits, past, mask = logits[copies], reorder(past, copies), mask[copies]
    live = torch.arange(len(copies), device=device)  # batch row -> sample index
    rows = [_Row() for _ in range(len(live))]
    done = _StopCheck(params, eos_id, decode)
    while True:
        tokens, logprobs = pick_tokens(logits, params, generator)
        keep = _record(rows, live.tolist(), tokens.tolist(), logprobs.tolist(), done)
        if not any(keep):
            break
        if not all(keep):
            # Drop finished rows so they cost nothing in later steps.
            sel = torch.tensor([i for i, k in enumerate(keep) if k], device=device)
            live, tokens, mask, past = live[sel], tokens[sel], mask[sel], reorder(past, sel)
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        logits, past = forward(tokens[:, None], mask, _positions(mask)[:, -1:], past)
    return _completions(rows, len(prompts), n, decode)


def _dedupe(prompts: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Distinct prompts in first-seen order, and each prompt's index among them."""
    index: dict[tuple[int, ...], int] = {}
    which = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return list(index), which


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding: [B, L] -> [B, L] (pads get 0)."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def _record(rows, live, tokens, logprobs, done) -> list[bool]:
    """Append each running row's new token; returns which rows keep going."""
    keep = []
    for sample_idx, token, logprob in zip(live, tokens, logprobs):
        row = rows[sample_idx]
        row.token_ids.append(token)
        row.logprobs.append(logprob)
        row.finish = done(row)
        keep.append(row.finish is None)
    return keep


def _completions(rows: list[_Row], n_prompts: int, n: int, decode) -> list[list[Completion]]:
    out = [Completion(r.token_ids, r.logprobs, decode(r.token_ids), r.finish) for r in rows]
    return [out[p * n:(p + 1) * n] for p in range(n_prompts)]


def seeded_generate(policy, forward: Forward, prompts, n: int, params: SamplingParams,
                    reorder: Reorder = reorder_tensors) -> list[list[Completion]]:
    """A policy's `generate`: reseed if asked, sample without autograd, record stats.

    `policy` provides `generator`, `codec` (with `pad_token_id`) and `stats`.
    """
    if params.seed is not None:
        policy.generator.manual_seed(params.seed)
    codec = policy.codec
    with torch.no_grad():
        out = sample(forward, prompts, n, params, policy.generator, codec.eos_token_id,
                     codec.decode, codec.pad_token_id, reorder)
    policy.stats.add(out)
    return out

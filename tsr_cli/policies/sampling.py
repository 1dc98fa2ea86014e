"""The batched sampling loop shared by every logits-producing policy.

`sample` runs one batch holding every prompt x n samples: the distinct
prompts are left-padded and prefilled once, the KV cache is then copied to
every sample, and each decode step feeds one token per still-running row.
Rows that finish (any of the stop ids, a stop string, or `max_new_tokens`) are
pruned from the batch so they cost nothing afterwards.

A model plugs in through two functions:

    forward(input_ids [B, L], attention_mask [B, L_total], position_ids [B, L], past)
        -> (logits of the last position [B, V], past)
    reorder(past, index [B']) -> past holding rows `index` of the batch

`attention_mask` covers the cached tokens plus the new ones; it may have a
padding gap in the middle (see `prefill`). A call with a cache and more than
one input token continues a prompt; with one token it is a decode step. `past` is
whatever the model caches (None before the first call); the default
`reorder` handles None and (nested tuples of) tensors with the batch first.

A completion keeps the token that completes a stop string, and its text is
always `decode(token_ids)`, so the text may run a few characters past the
stop string when that token carries more.

Logprobs are those of the sampling distribution before top-p truncation:
log_softmax(logits / T) for T > 0 and log_softmax(logits) for greedy, so a
trainer recomputing them from the same logits gets the same numbers.

Random streams. By default every draw of a call comes from the policy's one
generator, so what a prompt samples depends on which other prompts share
its batch. Given `streams` (one `torch.Generator` per prompt, shared by the
prompts of one instance group), each row instead takes one uniform draw per
token from its own prompt's stream, in row order, and picks its token by
inverse CDF: a group's samples then depend on its stream alone, not on the
batch around it. Data-parallel training needs exactly that (a group must
sample the same tokens on whichever rank rolls it out), and it makes resume
need no sampler state (`search.base.GroupStreams`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Sequence

import numpy as np
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


def pick_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator,
                uniforms: torch.Tensor | None = None):
    """Choose the next token per row. logits [B, V] -> (tokens [B], logprobs [B]).

    uniforms: [B] float64 draws in [0, 1), one per row (per-prompt streams):
    each row then takes the token where its draw falls in the cumulative
    distribution; None draws from `generator` with torch.multinomial.
    """
    logits = logits.float()
    if params.temperature == 0:
        tokens = logits.argmax(dim=-1)
        logprobs = logits.log_softmax(dim=-1)
    else:
        scaled = logits / params.temperature
        logprobs = scaled.log_softmax(dim=-1)
        probs = top_p_filter(scaled, params.top_p).softmax(dim=-1)
        if uniforms is None:
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            tokens = inverse_cdf(probs, uniforms.to(probs.device))
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative-probability interval holds each row's draw.

    probs [B, V] (rows need not sum exactly to 1), uniforms [B] in [0, 1) -> tokens [B].
    A zero-probability token has an empty interval, so it is never chosen.
    """
    cdf = probs.double().cumsum(dim=-1)
    target = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def derive_seed(*key: int) -> int:
    """A 64-bit seed mixed from integers (numpy's SeedSequence): nearby keys give unrelated seeds."""
    words = [k & 0xFFFF_FFFF_FFFF_FFFF for k in key]  # SeedSequence takes non-negative ints
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def stream_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from `key`, e.g. (run seed, kind, step, group). Streams draw
    on the CPU whatever the model's device, so a key samples alike on CPU and GPU."""
    return torch.Generator().manual_seed(derive_seed(*key))


def row_uniforms(streams: Sequence[torch.Generator], row_prompts: Sequence[int]) -> torch.Tensor:
    """[B] float64 draws: row b's from the stream of prompt row_prompts[b].

    Each stream draws once for all its rows, in row order, so a stream's
    sequence of draws is the same whatever other streams share the batch.
    """
    out = torch.empty(len(row_prompts), dtype=torch.float64)
    rows: dict[int, tuple[torch.Generator, list[int]]] = {}
    for row, prompt in enumerate(row_prompts):
        stream = streams[prompt]
        rows.setdefault(id(stream), (stream, []))[1].append(row)
    for stream, index in rows.values():
        out[index] = torch.rand(len(index), generator=stream, dtype=torch.float64)
    return out


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

    def __init__(self, params: SamplingParams, stop_ids: Collection[int], decode: Callable) -> None:
        self.stops = tuple(s for s in params.stop if s)
        self.window = max((len(s) for s in self.stops), default=0) + 4
        self.stop_ids, self.decode, self.limit = frozenset(stop_ids), decode, params.max_new_tokens

    def __call__(self, row: _Row) -> str | None:
        if row.token_ids[-1] in self.stop_ids:
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
    stop_ids: Collection[int],
    decode: Callable[[Sequence[int]], str],
    pad_id: int = 0,
    reorder: Reorder = reorder_tensors,
    streams: Sequence[torch.Generator] | None = None,
) -> list[list[Completion]]:
    """Generate `n` completions per prompt in one batch of len(prompts) * n rows.

    stop_ids: the ids that end a row, e.g. every end-of-turn and
    end-of-text id of the model's generation config.
    streams: one generator per prompt to draw that prompt's rows from (see
    the module docstring); None draws every row from `generator`.
    Tensors live on `generator.device`. Returns, per prompt, its n completions.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("sample needs at least one prompt and no empty prompt")
    if streams is not None and len(streams) != len(prompts):
        raise ValueError(f"streams needs one generator per prompt: {len(streams)} for {len(prompts)}")
    device = generator.device
    unique, which = _dedupe(prompts)
    logits, past, mask = prefill(forward, reorder, unique, pad_id, device)
    # Each distinct prompt was prefilled once (search often repeats a state);
    # give each of the n samples of every prompt its own copy of the cache.
    copies = torch.tensor(which, device=device).repeat_interleave(n)
    logits, past, mask = logits[copies], reorder(past, copies), mask[copies]
    live = torch.arange(len(copies), device=device)  # batch row -> sample index
    rows = [_Row() for _ in range(len(live))]
    done = _StopCheck(params, stop_ids, decode)
    while True:
        uniforms = None
        if streams is not None and params.temperature > 0:
            uniforms = row_uniforms(streams, [sample // n for sample in live.tolist()])
        tokens, logprobs = pick_tokens(logits, params, generator, uniforms)
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


#: a run of prompts shares its prefix's prefill when that prefix is at least this
#: many tokens and at least this fraction of the run's first prompt
MIN_SHARED_TOKENS = 16
MIN_SHARED_FRACTION = 0.5


def prefill(forward: Forward, reorder: Reorder, prompts: Sequence[Sequence[int]], pad_id: int, device):
    """Run distinct prompts through the model. Returns (last logits [P, V], cache, mask [P, L]).

    Search asks for many prompts that differ only at the end: the look-ahead
    probes of one candidate set, or the candidates of one beam, carry the same
    conversation up to the last turn or two. Consecutive prompts sharing a long
    prefix (see `shared_runs`) have that prefix prefilled once; its cache is
    copied to each of them and only their own suffixes are run. The cache then
    has a padding gap between prefix and suffix, which the attention mask and
    the position ids (counting real tokens only) account for. When nothing is
    shared this is one plain left-padded prefill.
    """
    runs = shared_runs(prompts)
    if len(runs) == len(prompts) or any(cut == 0 for _, _, cut in runs):
        ids, mask = left_pad(prompts, pad_id, device)
        logits, past = forward(ids, mask, _positions(mask), None)
        return logits, past, mask
    prefixes = [prompts[start][:cut] for start, _, cut in runs]
    ids, prefix_mask = left_pad(prefixes, pad_id, device)
    _, past = forward(ids, prefix_mask, _positions(prefix_mask), None)
    owner = torch.tensor([r for r, (start, end, _) in enumerate(runs) for _ in range(start, end)], device=device)
    past, prefix_mask = reorder(past, owner), prefix_mask[owner]
    cuts = [cut for start, end, cut in runs for _ in range(start, end)]
    ids, suffix_mask = left_pad([p[cut:] for p, cut in zip(prompts, cuts)], pad_id, device)
    mask = torch.cat([prefix_mask, suffix_mask], dim=1)
    logits, past = forward(ids, mask, _positions(mask)[:, -ids.shape[1]:], past)
    return logits, past, mask


def shared_runs(prompts: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Split prompts into runs of consecutive ones with a long common prefix.

    Returns (start, end, cut) per run: prompts[start:end] all begin with the
    first `cut` tokens of prompts[start]; a prompt on its own is cut before its
    last two tokens (cut 0: too short to split).
    A prompt joins the current run while the run's common prefix stays at
    least MIN_SHARED_TOKENS and MIN_SHARED_FRACTION of the run's first prompt.
    Every suffix keeps at least two tokens, so a forward call given a cache
    and one token is always a decode step, and one given more is a prompt.
    """
    runs = []
    start, cut = 0, 0
    for i in range(1, len(prompts) + 1):
        if i < len(prompts):
            common = min(_common_prefix(prompts[start], prompts[i]), len(prompts[i]) - 2,
                         len(prompts[start]) - 2, cut if i > start + 1 else len(prompts[start]))
            if common >= max(MIN_SHARED_TOKENS, MIN_SHARED_FRACTION * len(prompts[start])):
                cut = common
                continue
        runs.append((start, i, cut if i > start + 1 else max(0, len(prompts[start]) - 2)))
        start, cut = i, 0
    return runs


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
                    reorder: Reorder = reorder_tensors, streams=None) -> list[list[Completion]]:
    """A policy's `generate`: reseed if asked, sample without autograd, record stats.

    `policy` provides `generator`, `codec` (with `pad_token_id`) and `stats`;
    `streams` (one generator per prompt) replaces the policy's generator.
    """
    if params.seed is not None:
        policy.generator.manual_seed(params.seed)
    codec = policy.codec
    with torch.no_grad():
        out = sample(forward, prompts, n, params, policy.generator, codec.stop_token_ids,
                     codec.decode, codec.pad_token_id, reorder, streams)
    policy.stats.add(out)
    return out

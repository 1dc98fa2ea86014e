"""Log-probs and entropy from hidden states, one chunk of positions at a time.

A forward that asks the model for logits materialises [N, P, V] float32
numbers: with Qwen2.5's 151,936-token vocabulary, 8 x 2,000 positions are
9.7 GB, and backward keeps the softmax of them alive as well. The loss only
needs one number per position (the target's log-prob, and the entropy), so
we project the final hidden states onto the vocabulary a chunk at a time
under activation checkpointing: the chunk's logits are freed as soon as its
log-probs are computed and recomputed in backward. Peak memory is then one
chunk's logits, whatever the sequence length (verl's fused/chunked
log-softmax and TRL's `selective_log_softmax` do the same for the same
reason).

`logprob_gap` measures how far the sampler's log-probs are from these.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from tsr_cli.algos import entropy_from_logits, token_logprobs
from tsr_cli.train import distributed
from tsr_cli.train.batch import TokenBatch


def head_logprobs(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk: int = 512,
    entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Target log-probs (and entropy) of softmax(head(hidden) / T), chunk by chunk.

    Args:
        hidden:  [N, P, H] final hidden states at the positions that predict `targets`.
        head:    the LM head, [*, H] -> [*, V].
        targets: [N, P] token ids.
        temperature: the rollout temperature T the sampler divided the logits by.
        chunk:   positions per chunk (rows of the flattened [N * P, H]).
        entropy: also return the entropy of each position's distribution.
        entropy_grad: let gradient flow through the entropy (False: computed
            under no_grad, e.g. when its loss coefficient is 0).
    Returns:
        (logprobs [N, P] float32, entropy [N, P] float32 or None).
    """
    n, p = targets.shape
    flat_h, flat_t = hidden.reshape(n * p, -1), targets.reshape(n * p)
    parts_lp, parts_ent = [], []
    for lo in range(0, n * p, max(1, chunk)):
        h, t = flat_h[lo:lo + chunk], flat_t[lo:lo + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk, h, t, head, temperature, entropy, entropy_grad, use_reentrant=False)
        else:
            lp, ent = _chunk(h, t, head, temperature, entropy, entropy_grad)
        parts_lp.append(lp)
        parts_ent.append(ent)
    logp = torch.cat(parts_lp).reshape(n, p)
    ent = torch.cat(parts_ent).reshape(n, p) if entropy else None
    return logp, ent


def _chunk(h, t, head, temperature, entropy, entropy_grad):
    logits = head(h).float() / temperature
    logp = token_logprobs(logits, t)
    if not entropy:
        return logp, None
    if entropy_grad:
        return logp, entropy_from_logits(logits)
    with torch.no_grad():
        return logp, entropy_from_logits(logits)


def logprob_gap(batch: TokenBatch, world: distributed.World = distributed.World()) -> dict:
    """|sampler log-prob - trainer old log-prob| over model tokens (of every rank): max and mean.

    verl logs this as its rollout/training probability gap: the sampler and the
    trainer must describe the same policy, or PPO's first ratio is not 1.
    """
    gap = (batch.tokens["sampler_logprobs"] - batch.tokens["old_logprobs"]).abs() * batch.mask
    top = world.all_max(gap.max() if gap.numel() else gap.new_zeros(()))
    summed, count = world.all_sum(torch.stack([torch.where(batch.mask != 0, gap * batch.mask, 0.0).sum(),
                                               batch.mask.sum()]))
    return {"logprob_diff_max": float(top), "logprob_diff_mean": float(summed / count.clamp_min(1e-8))}

"""Trajectories -> padded training tensors.

Per-token tensors are aligned with *targets*: position t holds what concerns
token t+1 of the conversation (the token predicted from the prefix ending at
t). The first conversation token is always a prompt token, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from tsr_cli.agent.trajectory import Trajectory


@dataclass
class TokenBatch:
    """N trajectories, right-padded to L+1 tokens.

    input_ids:      [N, L+1] conversation tokens (pad_id after the end)
    attention_mask: [N, L+1] 1 on real tokens
    returns:        [N] total return of each trajectory
    groups:         [N] instance-group id of each trajectory
    tokens:         per-target tensors, each [N, L]:
        mask     1 where the target is a model (response) token
        rewards  each turn's reward on the target of the turn's last response token
        sampler_logprobs  the log-prob the generation backend reported for each
                 model token (0 elsewhere): what the trainer's recomputation is
                 checked against (`logprob_diff_*`) and what TIS corrects for
        and whatever the trainer adds (old_logprobs, advantages, values, ...)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    returns: torch.Tensor
    groups: torch.Tensor
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        return self.tokens["mask"]

    def to(self, device) -> "TokenBatch":
        """The same batch on `device` (the policy's)."""
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          self.returns.to(device), self.groups.to(device),
                          {k: v.to(device) for k, v in self.tokens.items()})

    def select(self, index: torch.Tensor) -> "TokenBatch":
        """Rows `index`, trimmed to the longest selected sequence."""
        width = int(self.attention_mask[index].sum(1).max())
        return TokenBatch(
            self.input_ids[index, :width], self.attention_mask[index, :width],
            self.returns[index], self.groups[index],
            {k: v[index, :width - 1] for k, v in self.tokens.items()},
        )


def build_batch(trajectories: list[Trajectory], pad_id: int, device=None) -> TokenBatch:
    """Pad every trajectory's token sequence and place turn rewards on its last token.

    The tensors are built on the CPU and moved to `device` (None: stay there).
    """
    seqs = [t.token_ids() for t in trajectories]
    n, width = len(seqs), max(len(s) for s in seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1))
    rewards = torch.zeros((n, width - 1))
    sampler = torch.zeros((n, width - 1))
    for i, (traj, seq) in enumerate(zip(trajectories, seqs)):
        input_ids[i, :len(seq)] = torch.tensor(seq)
        attention[i, :len(seq)] = 1
        pos = 0
        for turn in traj.turns:
            pos += len(turn.prompt_ids)
            length = len(turn.response_ids)
            mask[i, pos - 1:pos - 1 + length] = 1
            sampler[i, pos - 1:pos - 1 + length] = torch.tensor(turn.logprobs[:length], dtype=torch.float)
            rewards[i, pos - 2 + max(length, 1)] += turn.reward
            pos += length
    returns = torch.tensor([t.total_return for t in trajectories])
    groups = torch.tensor([t.group for t in trajectories])
    batch = TokenBatch(input_ids, attention, returns, groups,
                       {"mask": mask, "rewards": rewards, "sampler_logprobs": sampler})
    return batch.to(device) if device is not None else batch


def append_rows(batch: TokenBatch, rows: Sequence, pad_id: int) -> TokenBatch:
    """The batch with extra rows after its own: sibling credit's rows
    (`search/siblings.py`), each with `ids`, `mask` (per token, 1 on model
    tokens), a precomputed `advantage` and a loss `weight`.

    Extra rows carry no rewards, return 0 and a group of their own (negative
    ids), so GRPO's group normalisation gives them 0 and never mixes them with
    episodes. Every existing per-target tensor gets 0 on them, `mask` their
    mask. Added per-target tensors, for every row:
        sibling_mask        1 on extra rows' model tokens
        sibling_advantages  each extra row's advantage on its model tokens
        weight              loss weight: `mask` on the batch's own rows, the
                            row's weight on extra rows' model tokens
    With no rows the batch is returned as it is.
    """
    if not rows:
        return batch
    n0, w0 = batch.input_ids.shape
    n, width = n0 + len(rows), max(w0, max(len(r.ids) for r in rows))
    grown = TokenBatch(
        _grow(batch.input_ids, (n, width), pad_id), _grow(batch.attention_mask, (n, width), 0),
        _grow(batch.returns, (n,), 0), _grow(batch.groups, (n,), 0),
        {key: _grow(value, (n, width - 1), 0) for key, value in batch.tokens.items()},
    )
    tok = grown.tokens
    tok["weight"] = tok["mask"].clone()
    tok["sibling_mask"] = torch.zeros_like(tok["mask"])
    tok["sibling_advantages"] = torch.zeros_like(tok["mask"])
    for i, row in enumerate(rows, start=n0):
        length = len(row.ids)
        grown.input_ids[i, :length] = torch.tensor(row.ids)
        grown.attention_mask[i, :length] = 1
        grown.groups[i] = n0 - 1 - i  # -1, -2, ...: one group per extra row
        target = torch.tensor(row.mask[1:], dtype=tok["mask"].dtype)  # targets: token t+1
        for key, scale in (("mask", 1.0), ("sibling_mask", 1.0), ("weight", row.weight),
                           ("sibling_advantages", row.advantage)):
            tok[key][i, :length - 1] = target * scale
        if "sampler_logprobs" in tok:
            tok["sampler_logprobs"][i, :length - 1] = torch.tensor(row.logprobs[1:], dtype=target.dtype) * target
    return grown


def _grow(x: torch.Tensor, shape: tuple[int, ...], fill) -> torch.Tensor:
    """`x` in the top-left corner of a new tensor of `shape` filled with `fill`."""
    out = torch.full(shape, fill, dtype=x.dtype, device=x.device)
    out[tuple(slice(0, s) for s in x.shape)] = x
    return out


def sections(batch: TokenBatch) -> tuple[int, int]:
    """(episode rows, extra rows): `append_rows` puts extra rows after the
    episodes, under negative group ids."""
    extra = int((batch.groups < 0).sum())
    return len(batch) - extra, extra


def weight_rows_equally(batch: TokenBatch) -> None:
    """Make the policy loss's token mean a mean over rows (verl's `seq-mean-token-mean`).

    Each row's loss weights are divided by its number of model tokens, so a
    row weighs its sibling weight (1 for the batch's own trajectories)
    however long it is, and the token mean of any minibatch, whose
    denominator is the sum of the weights, is the mean over its rows of each
    row's token mean. With one token per turn, a failed episode that ran out
    of turns no longer outweighs a short success.
    """
    tok = batch.tokens
    tokens = tok["mask"].sum(dim=1, keepdim=True).clamp(min=1)
    tok["weight"] = loss_mask(batch) / tokens


def loss_mask(batch: TokenBatch) -> torch.Tensor:
    """[N, L] per-token weights of the policy loss: `weight` when sibling rows
    were appended, else the plain model-token mask."""
    return batch.tokens.get("weight", batch.mask)


def episode_mask(batch: TokenBatch) -> torch.Tensor:
    """[N, L] model tokens of the batch's own trajectories, sibling rows left out
    (for the value loss and for statistics over episodes, e.g. whitening)."""
    sibling = batch.tokens.get("sibling_mask")
    return batch.mask if sibling is None else batch.mask * (1 - sibling)


def overlay_sibling_advantages(batch: TokenBatch) -> None:
    """Put sibling rows' precomputed advantages over what the advantage
    estimator wrote there (GRPO gives them 0; GAE has no meaning on them)."""
    if "sibling_mask" in batch.tokens:
        tok = batch.tokens
        tok["advantages"] = torch.where(tok["sibling_mask"] != 0, tok["sibling_advantages"], tok["advantages"])

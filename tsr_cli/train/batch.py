"""Trajectories -> padded training tensors.

Per-token tensors are aligned with *targets*: position t holds what concerns
token t+1 of the conversation (the token predicted from the prefix ending at
t). The first conversation token is always a prompt token, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

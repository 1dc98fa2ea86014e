"""Advantage estimators (SPEC section 4): GAE for PPO, group-normalised returns for GRPO.

Every function is pure tensor maths on a rollout batch; none knows whether
search produced it. Shapes: B (or N) trajectories, T token positions.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level generalised advantage estimation over model tokens only.

    Args:
        rewards: [B, T] reward on each token, usually on the last model token of a turn.
        values:  [B, T] critic values V(s_t).
        mask:    [B, T] 1 on model tokens, 0 on prompt/environment/padding tokens.
    Returns:
        (advantages, returns), both [B, T], zero where mask is 0;
        returns = advantages + values on model tokens.

    GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", eq. 16):
        delta_t = r_t + gamma * V(s_{t'}) - V(s_t),   A_t = delta_t + gamma * lam * A_{t'}
    where t' is the next *model* token of the same sequence (value 0 after the
    last one), so environment tokens between turns are skipped, as in verl's
    multi-turn `compute_gae_advantage_return`. Like verl, rewards placed on
    mask-0 positions are ignored: put turn rewards on model tokens.
    """
    mask = (mask != 0).to(values.dtype)
    rewards, values = rewards.to(values.dtype), values.detach()
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * m
        advantages[:, t] = adv
        # A masked position leaves the carried (value, advantage) untouched.
        next_value = m * values[:, t] + (1 - m) * next_value
        next_adv = adv + (1 - m) * next_adv
    return advantages, (advantages + values) * mask


def _group_index(group_ids: torch.Tensor | Sequence[Hashable]) -> torch.Tensor:
    """Map arbitrary group ids ([N] tensor, or any hashables) to 0..G-1."""
    if isinstance(group_ids, torch.Tensor):
        return torch.unique(group_ids, return_inverse=True)[1]
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in group_ids], dtype=torch.long)


def grpo_advantages(
    returns: torch.Tensor,
    group_ids: torch.Tensor | Sequence[Hashable],
    eps: float = 1e-6,
    scale: bool = True,
) -> torch.Tensor:
    """Group-relative advantage of each trajectory.

    Args:
        returns:   [N] trajectory returns.
        group_ids: [N] group of each trajectory (a tensor, or any hashables such as instance ids).
    Returns:
        [N] advantages: (R - mean_g) / (std_g + eps), or R - mean_g if scale=False.

    GRPO (Shao et al. 2024, "DeepSeekMath", sec. 4.1.2, outcome supervision).
    std_g is the unbiased (Bessel-corrected) standard deviation with eps 1e-6,
    matching verl's `compute_grpo_outcome_advantage` (torch.std). scale=False is
    Dr. GRPO's mean-centering (Liu et al. 2025, "Understanding R1-Zero-Like
    Training"), which removes the question-difficulty bias of dividing by std.
    Deliberate departures from verl: a singleton group gets advantage 0 (verl
    passes its raw return through), and a constant group gets exactly 0 rather
    than float rounding noise divided by eps.
    """
    idx = _group_index(group_ids).to(returns.device)
    x = returns
    n_groups = int(idx.max()) + 1 if idx.numel() else 0
    count = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, idx, torch.ones_like(x))
    mean = torch.zeros_like(count).index_add_(0, idx, x) / count
    centred = x - mean[idx]
    lo = torch.full_like(count, float("inf")).scatter_reduce(0, idx, x, "amin")
    hi = torch.full_like(count, -float("inf")).scatter_reduce(0, idx, x, "amax")
    informative = hi[idx] > lo[idx]  # False for singletons and constant groups
    if scale:
        var = torch.zeros_like(count).index_add_(0, idx, centred**2) / (count - 1).clamp_min(1)
        centred = centred / (var.sqrt()[idx] + eps)
    return torch.where(informative, centred, torch.zeros_like(centred))


def broadcast_to_tokens(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy a per-trajectory scalar onto each of its model tokens.

    Args:
        values: [N] one number per trajectory (e.g. a GRPO advantage).
        mask:   [N, T] 1 on model tokens.
    Returns:
        [N, T] values[n] where mask is 1, 0 elsewhere.
    """
    return values[:, None] * mask.to(values.dtype)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                  all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Whiten values over the masked entries of the whole batch.

    Args:
        values: [B, T] e.g. GAE advantages.
        mask:   [B, T] 1 on model tokens.
        all_sum: sums a tensor over the data-parallel ranks, so that mean and
            variance are those of every rank's tokens together (None: this
            batch is the whole batch).
    Returns:
        [B, T] (x - mean) / sqrt(var + eps) on model tokens, 0 elsewhere; mean
        and the (Bessel-corrected) variance are taken over model tokens only.

    verl's `masked_whiten` (applied to GAE advantages in
    `compute_gae_advantage_return`): without it the actor's step size scales
    with the return, so Sokoban's +10 would move the policy 10x further than
    FrozenLake's +1 at the same learning rate. The variance takes a second
    pass around the global mean rather than E[x^2] - mean^2, which cancels.
    """
    total = all_sum or (lambda x: x)
    m = (mask != 0).to(values.dtype)
    count, summed = total(torch.stack([m.sum(), (values * m).sum()]))
    count = count.clamp_min(1.0)
    mean = summed / count
    var = total((((values - mean) * m) ** 2).sum()) / (count - 1).clamp_min(1.0)
    return (values - mean) * torch.rsqrt(var + eps) * m

"""Pure tensor maths for the optimisers: advantages (GAE, GRPO) and losses (PPO, value, KL, entropy)."""

from tsr_cli.algos.advantages import broadcast_to_tokens, gae, grpo_advantages, masked_whiten
from tsr_cli.algos.losses import (
    entropy_bonus,
    entropy_from_logits,
    kl_k3,
    masked_mean,
    ppo_policy_loss,
    tis_weights,
    token_logprobs,
    value_loss,
)

__all__ = [
    "gae", "grpo_advantages", "broadcast_to_tokens", "masked_whiten",
    "masked_mean", "ppo_policy_loss", "value_loss", "entropy_from_logits", "entropy_bonus",
    "kl_k3", "token_logprobs", "tis_weights",
]

"""Losses for the PPO and GRPO optimisers (SPEC section 4).

Every loss is a token-mean over model tokens only (mask 1), never over
environment tokens. Shapes: B trajectories, T token positions, V vocabulary.
"""

from __future__ import annotations

import torch

# verl clamps log-ratios to this range before exponentiating (core_algos.py).
_LOG_RATIO_CLAMP = 20.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over entries where mask != 0 (mask values act as weights).

    Args:
        x:    [...] any shape; masked entries may hold anything, even inf or NaN.
        mask: same shape as x.
    Returns:
        A scalar if dim is None, else x reduced over dim; 0 where the mask is empty.
    """
    kept = torch.where(mask != 0, x * mask, torch.zeros_like(x))
    if dim is None:
        return kept.sum() / mask.sum().clamp_min(1e-8)
    return kept.sum(dim) / mask.sum(dim).clamp_min(1e-8)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    clip_ratio_c: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate policy loss, with optional dual clip and per-token weights.

    Args:
        logprobs, old_logprobs, advantages, mask: [B, T].
        clip_high: upper clip; None means symmetric (= clip_low). 0.28 is the
            asymmetric "clip-higher" of DAPO (Yu et al. 2025).
        clip_ratio_c: dual clip (Ye et al. 2020, "Mastering Complex Control in
            MOBA Games", eq. 5; verl's `clip_ratio_c`): for A < 0 the per-token
            loss is capped at -A * c, so one token whose ratio exploded cannot
            dominate the batch. None disables it; it must be > 1.
        weights: [B, T] per-token factors on the loss (no gradient flows through
            them), e.g. truncated importance-sampling weights (`tis_weights`).
    Returns:
        (loss, stats): loss is a scalar; stats holds detached scalars
        clip_fraction (share of model tokens whose clipped term was chosen),
        dual_clip_fraction (share capped by the dual clip) and approx_kl
        (k3 estimate of KL(old || new)).

    PPO (Schulman et al. 2017, eq. 7): L = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A),
    r = exp(logp - old_logp), token-mean over model tokens.
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = (logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(per_token, dtype=torch.bool)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
        cap = -advantages * clip_ratio_c
        dual = (advantages < 0) & (per_token > cap)
        per_token = torch.where(advantages < 0, torch.minimum(per_token, cap), per_token)
    if weights is not None:
        per_token = per_token * weights.detach()
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "dual_clip_fraction": masked_mean(dual.to(ratio.dtype), mask),
            # k3 = (r - 1) - log r >= 0, as cleanrl logs it.
            "approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
        }
    return loss, stats


def tis_weights(old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance-sampling weights for a sampler/trainer mismatch.

    Args:
        old_logprobs:     [B, T] log-probs of the sampled tokens under the trainer's
                          weights before the update (pi_old as the trainer computes it).
        sampler_logprobs: [B, T] log-probs the generation engine reported (pi_sampler).
        cap:              truncation C > 0.
    Returns:
        [B, T] min(pi_old / pi_sampler, C), without gradient.

    When the engine that samples (vLLM, bf16 kernels) and the trainer disagree,
    the samples come from pi_sampler but PPO's ratio is taken against pi_old.
    Re-weighting each token by pi_old / pi_sampler corrects the off-policy gap,
    truncated at C to bound the variance (Yao et al. 2025, "Your efficient RL
    framework secretly brings you off-policy RL training"; TRL's and verl's
    `tis_imp_ratio_cap`).
    """
    if cap <= 0:
        raise ValueError(f"the TIS cap must be > 0, got {cap}")
    log_ratio = (old_logprobs - sampler_logprobs).detach().clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return log_ratio.exp().clamp(max=cap)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
) -> torch.Tensor:
    """Clipped value loss, token-mean over model tokens.

    Args:
        values, old_values, returns, mask: [B, T].
        clip: value-clip range; None disables clipping.
    Returns:
        Scalar 0.5 * max((v - R)^2, (v_clip - R)^2), v_clip = old + clamp(v - old, -clip, clip).

    The PPO value clipping of OpenAI baselines ppo2, also used by verl and cleanrl.
    """
    loss = (values - returns) ** 2
    if clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of each row of logits.

    Args:
        logits: [B, T, V].
    Returns:
        [B, T] float32 or wider: H = logsumexp(z) - sum_i softmax(z)_i z_i,
        stable for large logits (as verl's `entropy_from_logits`).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    probs = logits.softmax(-1)
    return torch.logsumexp(logits, -1) - (probs * logits).sum(-1)


def entropy_bonus(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean entropy over model tokens, logits [B, T, V], mask [B, T] -> scalar.

    The caller subtracts coef * this from the loss (SPEC: coef 0.001).
    """
    return masked_mean(entropy_from_logits(logits), mask)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref).

    Args:
        logprobs, ref_logprobs: [B, T] log-probabilities of the sampled tokens.
    Returns:
        [B, T] exp(ref - logp) - (ref - logp) - 1, which is >= 0 and unbiased
        (Schulman 2020, "Approximating KL divergence"; GRPO eq. 4). The
        log-ratio is clamped to [-20, 20] as in verl's `kl_penalty`; unlike
        verl we do not also clamp the result to [-10, 10].
    """
    log_ratio = (ref_logprobs - logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return log_ratio.exp() - log_ratio - 1


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token.

    Args:
        logits: [B, T, V] (any float dtype; computed in float32 or wider).
        tokens: [B, T] token ids.
    Returns:
        [B, T] log softmax(logits)[tokens], as logit - logsumexp so that no
        [B, T, V] log-softmax is kept alive for backward.
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, -1)

"""PPO/value/KL/entropy losses: hand-worked values and plain-Python loop references."""

import math

import pytest
import torch
from torch.distributions import Categorical

from tsr_cli.algos import (
    entropy_bonus,
    entropy_from_logits,
    kl_k3,
    masked_mean,
    ppo_policy_loss,
    tis_weights,
    token_logprobs,
    value_loss,
)


def masked_mean_reference(x, mask):
    kept = [(a * m, m) for a, m in zip(x, mask) if m]
    return sum(a for a, _ in kept) / sum(m for _, m in kept) if kept else 0.0


# ---------------------------------------------------------------- masked_mean

def test_masked_mean_ignores_masked_entries_even_nan_and_inf():
    # Kept: 1, 2, 4, 6 -> 13 / 4 = 3.25; per row: (1+2)/2 = 1.5, (4+6)/2 = 5.
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(3.25)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.5, 5.0]))


def test_masked_mean_of_empty_mask_is_zero():
    assert masked_mean(torch.ones(2, 3), torch.zeros(2, 3)).item() == 0.0
    torch.testing.assert_close(masked_mean(torch.ones(2, 3), torch.tensor([[0, 0, 0], [1, 0, 0]]), dim=1),
                               torch.tensor([0.0, 1.0]))


def test_masked_mean_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 9, generator=g, dtype=torch.float64)
    mask = (torch.rand(5, 9, generator=g) < 0.5).double()
    flat = masked_mean_reference(x.flatten().tolist(), mask.flatten().tolist())
    assert masked_mean(x, mask).item() == pytest.approx(flat)
    rows = [masked_mean_reference(x[b].tolist(), mask[b].tolist()) for b in range(5)]
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor(rows, dtype=torch.float64))


# ---------------------------------------------------------------- PPO policy loss

# Five model tokens and one masked token with absurd values.
#   token  A   ratio  r*A    clip(r)*A (0.2/0.28)   -min        clipped term chosen?
#   1     +1   1.5    1.5    1.28                  -1.28       yes
#   2     -1   0.5   -0.5   -0.8                   +0.8        yes
#   3     +1   0.5    0.5    0.8                   -0.5        no
#   4     -1   1.5   -1.5   -1.28                  +1.5        no
#   5     +2   1.25   2.5    2.5 (inside 1.28)     -2.5        no
# loss = (-1.28 + 0.8 - 0.5 + 1.5 - 2.5) / 5 = -1.98 / 5 = -0.396, clip fraction 2/5.
# Symmetric 0.2: token 5 clips at 1.2 -> -2.4, token 1 -> -1.2:
# loss = (-1.2 + 0.8 - 0.5 + 1.5 - 2.4) / 5 = -0.36, clip fraction 3/5.
# approx_kl = mean((r - 1) - ln r): r=1.5 -> 0.0945349, r=0.5 -> 0.1931472, r=1.25 -> 0.0268564
#   (2*0.0945349 + 2*0.1931472 + 0.0268564) / 5 = 0.1204441.
RATIOS = [1.5, 0.5, 0.5, 1.5, 1.25, math.exp(5)]
ADVS = [1.0, -1.0, 1.0, -1.0, 2.0, 100.0]
MASK = [1, 1, 1, 1, 1, 0]


def _ppo_inputs():
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.5, -4.0]])
    logp = (old + torch.log(torch.tensor([RATIOS]))).requires_grad_()
    return logp, old, torch.tensor([ADVS]), torch.tensor([MASK])


def test_ppo_loss_asymmetric_clip_hand_worked():
    logp, old, adv, mask = _ppo_inputs()
    loss, stats = ppo_policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-0.396, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.4)
    assert stats["approx_kl"].item() == pytest.approx(0.1204441, abs=1e-6)
    # Clipped tokens (1, 2) and the masked one carry no gradient; unclipped ones do:
    # d/dlogp of -A r / 5 = -A r / 5 -> token 3: -0.1, token 4: +0.3, token 5: -0.5.
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -0.1, 0.3, -0.5, 0.0]]))


def test_ppo_loss_symmetric_by_default():
    logp, old, adv, mask = _ppo_inputs()
    loss, stats = ppo_policy_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(-0.36, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.6)


def test_ppo_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(2)
    B, T = 4, 11
    old = torch.randn(B, T, generator=g, dtype=torch.float64)
    logp = old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) < 0.7).long()
    terms, clipped = [], []
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            r, a = math.exp(logp[b, t] - old[b, t]), adv[b, t].item()
            rc = min(max(r, 1 - 0.2), 1 + 0.28)
            terms.append(-min(r * a, rc * a))
            clipped.append(rc * a < r * a)
    loss, stats = ppo_policy_loss(logp, old, adv, mask, clip_high=0.28)
    assert loss.item() == pytest.approx(sum(terms) / len(terms))
    assert stats["clip_fraction"].item() == pytest.approx(sum(clipped) / len(clipped))


# ---------------------------------------------------------------- value loss

# clip 0.2:
#   old   v     R     (v-R)^2  v_clip  (v_clip-R)^2  0.5*max
#   0     0.5   1     0.25     0.2     0.64          0.32
#   0     0.5   0.4   0.01     0.2     0.04          0.02
#   0     0.1   1     0.81     0.1     0.81          0.405
#   1    -1    -1     0        0.8     3.24          1.62
# mean = 2.365 / 4 = 0.59125. Unclipped: 0.5 * (0.25 + 0.01 + 0.81 + 0) / 4 = 0.13375.
V_OLD = [[0.0, 0.0, 0.0, 1.0, 5.0]]
V_NEW = [[0.5, 0.5, 0.1, -1.0, -50.0]]
V_RET = [[1.0, 0.4, 1.0, -1.0, 50.0]]
V_MASK = [[1, 1, 1, 1, 0]]


def test_value_loss_clipped_hand_worked():
    loss = value_loss(*map(torch.tensor, (V_NEW, V_OLD, V_RET, V_MASK)), clip=0.2)
    assert loss.item() == pytest.approx(0.59125)


def test_value_loss_unclipped_hand_worked():
    loss = value_loss(*map(torch.tensor, (V_NEW, V_OLD, V_RET, V_MASK)), clip=None)
    assert loss.item() == pytest.approx(0.13375)


def test_value_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(3)
    v, old, ret = (torch.randn(3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = (torch.rand(3, 8, generator=g) < 0.6).long()
    terms = []
    for b in range(3):
        for t in range(8):
            if mask[b, t]:
                vc = old[b, t] + min(max(v[b, t] - old[b, t], -0.2), 0.2)
                terms.append(0.5 * max((v[b, t] - ret[b, t]) ** 2, (vc - ret[b, t]) ** 2).item())
    assert value_loss(v, old, ret, mask).item() == pytest.approx(sum(terms) / len(terms))


# ---------------------------------------------------------------- entropy

def test_entropy_of_uniform_logits_is_log_vocab():
    logits = torch.full((2, 3, 7), 4.2)
    torch.testing.assert_close(entropy_from_logits(logits), torch.full((2, 3), math.log(7)))


def test_entropy_hand_worked_two_outcomes():
    # logits [0, ln 3] -> p = [1/4, 3/4];
    # H = 0.25 ln 4 + 0.75 ln(4/3) = 0.3465736 + 0.2157616 = 0.5623351.
    logits = torch.tensor([[[0.0, math.log(3)]]])
    assert entropy_from_logits(logits).item() == pytest.approx(0.5623351, abs=1e-6)


def test_entropy_is_stable_for_huge_logits_and_matches_categorical():
    g = torch.Generator().manual_seed(4)
    logits = 30 * torch.randn(3, 5, 11, generator=g)
    logits[0, 0] = torch.tensor([1e4] + [-1e4] * 10)  # one-hot: entropy 0, no NaN
    h = entropy_from_logits(logits)
    assert torch.isfinite(h).all() and h[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(h, Categorical(logits=logits).entropy(), atol=1e-4, rtol=1e-4)


def test_entropy_bonus_is_masked_token_mean():
    # Row 0 uniform over 4 -> ln 4; row 1 one-hot -> 0; masked token uniform over 4 ignored.
    # mean over the two kept tokens = ln 4 / 2.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                           [[100.0, -100.0, -100.0, -100.0], [0.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 0], [1, 0]])
    assert entropy_bonus(logits, mask).item() == pytest.approx(math.log(4) / 2, abs=1e-6)


# ---------------------------------------------------------------- KL (k3)

def test_kl_k3_hand_worked():
    # logp=0, ref=ln 2: ratio 2 -> 2 - ln 2 - 1 = 0.3068528
    # logp=ln 2, ref=0: ratio 1/2 -> 0.5 + ln 2 - 1 = 0.1931472
    # equal -> 0
    logp = torch.tensor([[0.0, math.log(2), -1.3]])
    ref = torch.tensor([[math.log(2), 0.0, -1.3]])
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([[0.3068528, 0.1931472, 0.0]]))


def test_kl_k3_nonnegative_and_matches_loop_reference():
    g = torch.Generator().manual_seed(5)
    logp = 3 * torch.randn(4, 9, generator=g, dtype=torch.float64)
    ref = 3 * torch.randn(4, 9, generator=g, dtype=torch.float64)
    out = kl_k3(logp, ref)
    assert (out >= 0).all()
    expected = [[math.exp(r - p) - (r - p) - 1 for p, r in zip(pr, rr)] for pr, rr in zip(logp.tolist(), ref.tolist())]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_kl_k3_clamps_the_log_ratio():
    # ref - logp = 100 is clamped to 20: e^20 - 20 - 1.
    out = kl_k3(torch.tensor([0.0], dtype=torch.float64), torch.tensor([100.0], dtype=torch.float64))
    assert out.item() == pytest.approx(math.exp(20) - 21)


# ---------------------------------------------------------------- token log-probs

def test_token_logprobs_hand_worked():
    # logits [0, ln 3]: token 1 -> ln(3/4) = -0.2876821; token 0 -> ln(1/4) = -1.3862944.
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)]]])
    out = token_logprobs(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[-0.2876821, -1.3862944]]))


def test_token_logprobs_matches_categorical_and_upcasts_bf16():
    g = torch.Generator().manual_seed(6)
    logits = 5 * torch.randn(2, 6, 13, generator=g)
    tokens = torch.randint(0, 13, (2, 6), generator=g)
    torch.testing.assert_close(token_logprobs(logits, tokens), Categorical(logits=logits).log_prob(tokens))
    low = logits.bfloat16()
    out = token_logprobs(low, tokens)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, Categorical(logits=low.float()).log_prob(tokens))


# ---------------------------------------------------------------- dual clip and TIS

# clip 0.2/0.28, dual clip c = 3:
#   token  A   ratio  -A r   -A clip(r)   max     capped at -A c (A < 0 only)
#   1     -1   5      5      1.28         5       3 (dual clip)
#   2     -1   2      2      1.28         2       2
#   3     +1   5     -5     -1.28        -1.28   -1.28 (A > 0: no cap)
# loss = (3 + 2 - 1.28) / 3 = 1.24; without the dual clip (5 + 2 - 1.28) / 3.
def _dual_inputs():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    logp = (old + torch.log(torch.tensor([[5.0, 2.0, 5.0]]))).requires_grad_()
    return logp, old, torch.tensor([[-1.0, -1.0, 1.0]]), torch.ones(1, 3)


def test_dual_clip_caps_negative_advantage_tokens_hand_worked():
    logp, old, adv, mask = _dual_inputs()
    loss, stats = ppo_policy_loss(logp, old, adv, mask, 0.2, 0.28, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(1.24, abs=1e-6)
    assert stats["dual_clip_fraction"].item() == pytest.approx(1 / 3)
    loss.backward()
    # token 1 sits on the constant cap and token 3 on the clip: only token 2 moves, d(-A r)/3 = 2/3
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2 / 3, 0.0]]))
    plain, _ = ppo_policy_loss(*_dual_inputs(), 0.2, 0.28)
    assert plain.item() == pytest.approx(5.72 / 3, abs=1e-6)


def test_dual_clip_matches_loop_reference():
    g = torch.Generator().manual_seed(5)
    old = torch.randn(3, 9, generator=g, dtype=torch.float64)
    logp = old + 1.5 * torch.randn(3, 9, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 9, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 9)
    terms = []
    for r_, a in zip((logp - old).exp().flatten().tolist(), adv.flatten().tolist()):
        term = max(-a * r_, -a * min(max(r_, 0.8), 1.2))
        terms.append(min(term, -a * 3.0) if a < 0 else term)
    loss, _ = ppo_policy_loss(logp, old, adv, mask, 0.2, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(sum(terms) / len(terms))
    with pytest.raises(ValueError):
        ppo_policy_loss(logp, old, adv, mask, clip_ratio_c=1.0)


def test_tis_weights_truncate_the_trainer_over_sampler_ratio():
    old = torch.tensor([[-1.0, -2.0, -3.0]])
    sampler = torch.tensor([[-1.5, -1.0, -3.0]])
    weights = tis_weights(old, sampler, cap=1.5)
    # exp(0.5) = 1.6487 -> 1.5 (truncated); exp(-1) = 0.3679; equal -> 1
    torch.testing.assert_close(weights, torch.tensor([[1.5, math.exp(-1.0), 1.0]]))
    logp = old.clone().requires_grad_()
    adv, mask = torch.tensor([[1.0, 1.0, 1.0]]), torch.ones(1, 3)
    loss, _ = ppo_policy_loss(logp, old, adv, mask, weights=weights)
    assert loss.item() == pytest.approx(-(1.5 + math.exp(-1.0) + 1.0) / 3, abs=1e-6)
    loss.backward()  # weights carry no gradient: d/dlogp = -A r w / 3
    torch.testing.assert_close(logp.grad, -weights / 3)
    with pytest.raises(ValueError):
        tis_weights(old, sampler, cap=0.0)

"""GAE and GRPO advantages: hand-worked values and plain-Python loop references."""

import math
import statistics

import pytest
import torch

from tsr_cli.algos import broadcast_to_tokens, gae, grpo_advantages, masked_whiten


def gae_reference(rewards, values, mask, gamma, lam):
    """Plain-Python GAE over one row's model tokens only (lists in, lists out)."""
    adv = [0.0] * len(rewards)
    next_value, next_adv = 0.0, 0.0
    for t in reversed([t for t, m in enumerate(mask) if m]):
        delta = rewards[t] + gamma * next_value - values[t]
        adv[t] = delta + gamma * lam * next_adv
        next_value, next_adv = values[t], adv[t]
    returns = [a + v if m else 0.0 for a, v, m in zip(adv, values, mask)]
    return adv, returns


def grpo_reference(returns, group_ids, eps=1e-6, scale=True):
    groups = {}
    for r, g in zip(returns, group_ids):
        groups.setdefault(g, []).append(r)
    out = []
    for r, g in zip(returns, group_ids):
        members = groups[g]
        if len(members) < 2 or max(members) == min(members):
            out.append(0.0)
            continue
        centred = r - statistics.fmean(members)
        out.append(centred / (statistics.stdev(members) + eps) if scale else centred)
    return out


def test_gae_hand_worked_with_env_gap():
    # Model tokens at t = 0, 2, 3; t = 1 is an environment token whose reward (5)
    # and value (9) must be ignored. gamma = lam = 0.5, so gamma * lam = 0.25.
    # t=3: delta = 1 + 0.5*0    - 0.5  =  0.5;    A3 = 0.5
    # t=2: delta = 0 + 0.5*0.5  - 0.25 =  0.0;    A2 = 0 + 0.25*0.5   = 0.125
    # t=0: delta = 0 + 0.5*0.25 - 0.5  = -0.375;  A0 = -0.375 + 0.25*0.125 = -0.34375
    # returns = A + V: [0.15625, 0, 0.375, 1.0]
    rewards = torch.tensor([[0.0, 5.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.25, 0.5]])
    mask = torch.tensor([[1, 0, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.34375, 0.0, 0.125, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[0.15625, 0.0, 0.375, 1.0]]))


def test_gae_default_is_undiscounted_return_to_go_minus_value():
    # gamma = lam = 1: A_t = (sum of rewards on model tokens from t on) - V_t.
    # Row 0 turns end at t=1 (reward 1) and t=4 (reward 2); t=2 is environment.
    #   returns-to-go at model tokens 0,1,3,4 = 3, 3, 2, 2; minus values 1,1,1,1.
    # Row 1 is all padding: everything 0.
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0], [7.0, 7.0, 7.0, 7.0, 7.0]])
    values = torch.ones(2, 5)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 2.0, 0.0, 1.0, 1.0], [0.0] * 5]))
    torch.testing.assert_close(ret, torch.tensor([[3.0, 3.0, 0.0, 2.0, 2.0], [0.0] * 5]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (0.5, 1.0)])
def test_gae_matches_loop_reference_on_random_gapped_masks(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 6, 23
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    # Random runs of model (1) and environment (0) tokens, with leading prompt zeros.
    mask = (torch.rand(B, T, generator=g) < 0.6).long()
    mask[:, :2] = 0
    mask[0] = 0  # an all-masked row
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for b in range(B):
        ref_adv, ref_ret = gae_reference(rewards[b].tolist(), values[b].tolist(), mask[b].tolist(), gamma, lam)
        torch.testing.assert_close(adv[b], torch.tensor(ref_adv, dtype=torch.float64))
        torch.testing.assert_close(ret[b], torch.tensor(ref_ret, dtype=torch.float64))


def test_gae_does_not_backpropagate_into_values():
    values = torch.randn(2, 4, requires_grad=True)
    adv, ret = gae(torch.randn(2, 4), values, torch.ones(2, 4))
    assert not adv.requires_grad and not ret.requires_grad


def test_grpo_hand_worked_groups():
    # Groups (interleaved on purpose):
    #   a: [1, 2, 3] mean 2, unbiased std sqrt((1+0+1)/2) = 1          -> [-1, 0, 1] / (1 + 1e-6)
    #   b: [5, 5]    constant                                            -> [0, 0]
    #   c: [7]       singleton                                           -> [0]
    #   d: [0, 4]    mean 2, unbiased std sqrt((4+4)/1) = 2*sqrt(2)      -> [-1, 1] / (sqrt(2) + 5e-7)
    # (A biased std would give group a +-1.2247, so this pins unbiased=True.)
    returns = torch.tensor([1.0, 5.0, 2.0, 7.0, 0.0, 3.0, 5.0, 4.0])
    groups = ["a", "b", "a", "c", "d", "a", "b", "d"]
    d = 2 / (2 * math.sqrt(2) + 1e-6)
    expected = torch.tensor([-1 / (1 + 1e-6), 0.0, 0.0, 0.0, -d, 1 / (1 + 1e-6), 0.0, d])
    torch.testing.assert_close(grpo_advantages(returns, groups), expected)
    # Same grouping as an integer tensor with non-contiguous ids.
    tensor_groups = torch.tensor([10, 3, 10, 99, 4, 10, 3, 4])
    torch.testing.assert_close(grpo_advantages(returns, tensor_groups), expected)


def test_grpo_without_scale_is_mean_centering():
    # Dr. GRPO: R - mean_g. Group a -> [-1, 0, 1]; d -> [-2, 2]; b, c -> 0.
    returns = torch.tensor([1.0, 5.0, 2.0, 7.0, 0.0, 3.0, 5.0, 4.0])
    groups = torch.tensor([0, 1, 0, 2, 3, 0, 1, 3])
    out = grpo_advantages(returns, groups, scale=False)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 0.0, 0.0, -2.0, 1.0, 0.0, 2.0]))


def test_grpo_constant_group_is_exactly_zero_in_float32():
    # 0.1 is not representable; a float32 mean of three copies can drift by an
    # ulp, which divided by (0 + 1e-6) would give ~0.01 instead of 0.
    returns = torch.full((3,), 0.1, dtype=torch.float32)
    out = grpo_advantages(returns, torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, torch.zeros(3))
    assert out.dtype == torch.float32
    # In float64 too: the mean of ten 0.1s is 0.09999999999999999, not 0.1.
    out = grpo_advantages(torch.full((10,), 0.1, dtype=torch.float64), [7] * 10)
    assert torch.equal(out, torch.zeros(10, dtype=torch.float64))


def test_grpo_matches_loop_reference_on_random_groups():
    g = torch.Generator().manual_seed(1)
    group_ids = torch.randint(0, 7, (60,), generator=g)
    returns = torch.randn(60, generator=g, dtype=torch.float64)
    returns[group_ids == 2] = 0.5  # a constant group
    returns = torch.cat([returns, torch.tensor([3.0], dtype=torch.float64)])  # a singleton group
    group_ids = torch.cat([group_ids, torch.tensor([42])])
    for scale in (True, False):
        expected = grpo_reference(returns.tolist(), group_ids.tolist(), scale=scale)
        out = grpo_advantages(returns, group_ids, scale=scale)
        torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
        assert torch.isfinite(out).all()


def test_broadcast_to_tokens():
    # Trajectory advantages [2, -1] onto their model tokens only.
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]])
    out = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    torch.testing.assert_close(out, torch.tensor([[0.0, 2.0, 2.0, 0.0], [-1.0, 0.0, 0.0, -1.0]]))


def test_masked_whiten_hand_worked_and_ignores_masked_entries():
    # model tokens 1, 3, 5 (and a masked 100): mean 3, sample variance 4 -> (-1, 0, 1)
    x = torch.tensor([[1.0, 100.0, 3.0], [5.0, -7.0, 0.0]])
    mask = torch.tensor([[1, 0, 1], [1, 0, 0]])
    out = masked_whiten(x, mask)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)


def test_masked_whiten_matches_loop_reference_and_removes_scale():
    g = torch.Generator().manual_seed(3)
    x = 10 * torch.randn(4, 7, generator=g, dtype=torch.float64)
    mask = (torch.rand(4, 7, generator=g) < 0.6).long()
    kept = [v for v, m in zip(x.flatten().tolist(), mask.flatten().tolist()) if m]
    mean, sd = statistics.fmean(kept), statistics.stdev(kept)
    out = masked_whiten(x, mask)
    for v, m, o in zip(x.flatten().tolist(), mask.flatten().tolist(), out.flatten().tolist()):
        assert o == pytest.approx((v - mean) / sd if m else 0.0, rel=1e-6, abs=1e-9)
    # Sokoban's +10 and FrozenLake's +1 returns give the same whitened advantages
    torch.testing.assert_close(masked_whiten(x * 10, mask), out)

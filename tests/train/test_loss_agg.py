"""algo.loss_agg: token-mean (verl's default) against seq-mean-token-mean."""

import pytest
import torch

from tsr_cli.algos.losses import masked_mean, ppo_policy_loss
from tsr_cli.train.batch import TokenBatch, loss_mask, weight_rows_equally
from tsr_cli.train.config import ConfigError, load_config


def _batch(mask, advantages):
    n, length = mask.shape
    return TokenBatch(torch.zeros(n, length + 1, dtype=torch.long), torch.ones(n, length + 1),
                      torch.zeros(n), torch.arange(n), {"mask": mask, "advantages": advantages})


def test_seq_mean_weighs_every_episode_the_same_whatever_its_length():
    # a 1-token success (A = +1) and a 3-token failure (A = -1), ratio 1
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    adv = torch.tensor([[1.0, 0, 0], [-1, -1, -1]])
    batch = _batch(mask, adv)
    zeros = torch.zeros(2, 3)
    token_mean, _ = ppo_policy_loss(zeros, zeros, adv, loss_mask(batch))
    assert token_mean.item() == pytest.approx(-(1 - 3) / 4)  # the failure's 3 tokens outvote the success
    weight_rows_equally(batch)
    seq_mean, _ = ppo_policy_loss(zeros, zeros, adv, loss_mask(batch))
    assert seq_mean.item() == pytest.approx(0.0, abs=1e-6)  # mean of the rows' token means: (-1 + 1) / 2


def test_seq_mean_matches_a_loop_over_rows_and_keeps_sibling_weights():
    torch.manual_seed(0)
    mask = (torch.rand(5, 7) > 0.4).float()
    mask[:, 0] = 1
    logp, old, adv = torch.randn(5, 7) * 0.1, torch.randn(5, 7) * 0.1, torch.randn(5, 7)
    batch = _batch(mask, adv)
    batch.tokens["weight"] = mask * torch.tensor([1, 1, 1, 0.5, 0.5]).unsqueeze(1)  # two sibling rows at 0.5
    weight_rows_equally(batch)
    loss, _ = ppo_policy_loss(logp, old, adv, loss_mask(batch), clip_ratio_c=None)
    rows, weights = [], [1, 1, 1, 0.5, 0.5]
    for i in range(5):
        row, _ = ppo_policy_loss(logp[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], clip_ratio_c=None)
        rows.append(weights[i] * row)
    assert loss.item() == pytest.approx((sum(rows) / sum(weights)).item(), rel=1e-5)
    assert masked_mean(torch.ones(5, 7), loss_mask(batch)).item() == pytest.approx(1.0)


def test_loss_agg_is_checked():
    with pytest.raises(ConfigError, match="loss_agg"):
        load_config(None, {"algo.loss_agg": "seq-sum"})
    assert load_config(None, {}).algo.loss_agg == "token-mean"

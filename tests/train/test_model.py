"""The training forward: log-probs computed only where the loss reads them equal the full computation."""

import torch

from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.algos import entropy_from_logits, token_logprobs
from tsr_cli.policies.base import Completion
from tsr_cli.train.batch import build_batch
from tsr_cli.train.config import PolicySection
from tsr_cli.train.model import TrainableModel, build_policy


def turn(prompt, response):
    return Turn(tuple(prompt), Completion(list(response), [0.0] * len(response), ""), (), (), (), (), 0.0, True)


def test_sliced_logprobs_match_full_logits():
    policy = build_policy(PolicySection(name="tiny", lora=False), "frozenlake", seed=0)
    model = TrainableModel(policy, PolicySection(name="tiny", lora=False), critic="head")
    trajs = [Trajectory("x", 0, 0, [turn([5, 6, 7], [8, 9]), turn([10], [11, 12, 13])]),
             Trajectory("x", 1, 1, [turn([5, 6], [20])])]
    batch = build_batch(trajs, policy.codec.pad_token_id)
    out = model.forward(batch, values=True, entropy=True)
    with torch.no_grad():
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    mask = batch.mask
    assert torch.allclose(out.logprobs * mask, token_logprobs(logits, batch.input_ids[:, 1:]) * mask, atol=1e-6)
    assert torch.allclose(out.entropy * mask, entropy_from_logits(logits) * mask, atol=1e-5)
    assert out.values.shape == mask.shape
    # positions without any model token are never projected and stay 0
    assert torch.all(out.logprobs[:, ~mask.bool().any(0)] == 0)

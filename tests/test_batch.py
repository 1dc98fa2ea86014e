import torch

from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.policies.base import Completion
from tsr_cli.train.batch import build_batch


def turn(prompt, response, reward):
    return Turn(tuple(prompt), Completion(list(response), [0.0] * len(response), ""), (), (), (), (), reward, True)


def test_mask_and_rewards_align_with_targets():
    a = Trajectory("x", 0, 0, [turn([1, 2], [3, 4], 0.5), turn([5], [6], 2.0)])
    b = Trajectory("x", 1, 1, [turn([1], [7], -1.0)])
    batch = build_batch([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [1, 7, 0, 0, 0, 0]]
    # targets of row a are tokens 2,3,4,5,6: model tokens are 3,4 and 6
    assert batch.mask.tolist() == [[0, 1, 1, 0, 1], [1, 0, 0, 0, 0]]
    assert batch.tokens["rewards"].tolist() == [[0, 0, 0.5, 0, 2.0], [-1.0, 0, 0, 0, 0]]
    assert batch.returns.tolist() == [2.5, -1.0]
    sub = batch.select(torch.tensor([1]))
    assert sub.input_ids.tolist() == [[1, 7]] and sub.mask.tolist() == [[1]]

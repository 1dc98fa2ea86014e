"""The data-parallel collectives at world size 2 (gloo). Not a pytest module:
`test_distributed.py` launches it under torchrun and reads its exit code.

Each check compares what the ranks compute together with what one process
computes on the whole.
"""

import math

import torch

from tsr_cli.algos import masked_whiten
from tsr_cli.train import distributed
from tsr_cli.train.config import build_config


def main() -> None:
    cfg = build_config({"trainer": {"groups": 4}})
    world = distributed.setup(cfg)
    rank = world.rank
    assert (world.world_size, world.backend, cfg.world_size) == (2, "gloo", 2)
    assert world.share(4) == slice(2 * rank, 2 * rank + 2) and world.share(5) == [slice(0, 2), slice(2, 5)][rank]

    # metrics: sums, maxima, means over the ranks where a key is finite; a key one rank lacks
    record = {"steps": 3 + rank, "time": 1.0 + rank, "loss": [1.5, math.nan][rank], "rate": 0.25 * rank}
    if rank == 1:
        record["kl"] = 0.5
    out = world.reduce(record, sums=["steps"], maxes=["time"])
    assert out == {"steps": 7, "time": 2.0, "loss": 1.5, "rate": 0.125, "kl": 0.5}, out
    assert isinstance(out["steps"], int)
    assert world.gather([rank, rank]) == [0, 0, 1, 1]

    # the global batch: episodes rank by rank, then sibling rows rank by rank
    sections = [(2, 1), (2, 0)][rank]
    rows, totals = world.global_rows(sections)
    assert rows.tolist() == [[0, 1, -1, -1, 2], [-1, -1, 0, 1, -1]][rank] and totals == (4, 1)

    # gradients: summed; a rank without one adds zeros; none anywhere stays None
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    if rank == 0:
        a.grad = torch.tensor([1.0, 2.0, 3.0])
    else:
        a.grad = None
    world.sum_gradients([a, b])
    assert a.grad.tolist() == [1.0, 2.0, 3.0] and b.grad is None

    # whitening over both ranks' tokens equals whitening the whole batch
    g = torch.Generator().manual_seed(0)
    values, mask = 5 * torch.randn(4, 6, generator=g), (torch.rand(4, 6, generator=g) < 0.6).float()
    mine = masked_whiten(values[2 * rank:2 * rank + 2], mask[2 * rank:2 * rank + 2], all_sum=world.all_sum)
    assert torch.allclose(mine, masked_whiten(values, mask)[2 * rank:2 * rank + 2], atol=1e-6)

    weights = torch.full((3,), float(rank))
    world.broadcast_parameters([weights])
    assert weights.tolist() == [0.0, 0.0, 0.0]
    world.barrier()
    print(f"rank {rank}: ok")


if __name__ == "__main__":
    main()

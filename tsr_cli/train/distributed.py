"""Data parallelism on torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc-per-node N $(which tsr) train --config ...

A launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`setup` joins its process group once per process (gloo on CPU, nccl on
CUDA with one device per local rank) and leaves it at exit. Without a
launcher it returns a world of one whose collectives do nothing, so the
single-process trainer runs the same code, bit for bit.

What the trainer (`train/trainer.py`) splits and what it reduces:
- Rollouts: each rank plays a contiguous share of the step's instance
  groups (`trainer.groups` must be divisible by the world size), under
  global group ids; evaluation episodes are shared out the same way and
  their per-episode results gathered.
- Instance filtering and GRPO normalisation stay per group, so they need no
  communication. Deliberate departure: filtering keeps the top fraction of
  each rank's share of groups, not of all groups (equal with
  `algo.filter_keep: 1.0`).
- Advantage whitening (PPO's default) is global: sums and counts of the
  model tokens are all-reduced.
- The optimiser sees the single-process batch: every rank draws the same
  permutation of the global batch (same shuffle seed) and trains on the
  rows of each minibatch it holds; a minibatch's token-mean denominator is
  its global token count (all-reduced), so the ranks' losses add up to the
  single-process loss, and their gradients are summed by one all-reduce
  per optimiser step, after gradient accumulation. That is DDP's gradient
  average with the loss scaled by the world size; hand-rolled on
  torch.distributed's all_reduce because a rank may hold no row of a
  minibatch, where DDP's hooks would wait forever.
- Metrics are reduced across ranks before rank 0 logs them: counts summed,
  loss statistics summed (each rank logs its part of every minibatch's
  token means), times and peaks maxed, rates averaged over equal shares.
- Only rank 0 writes the run directory and checkpoints; the others wait at
  barriers. Every rank resumes from the same checkpoint.

Random streams, and which of them are split per rank:
- The step's instances: a pure function of (seed, step), the same on every
  rank; each takes its share.
- Sampling: every instance group draws from its own stream keyed by (run
  seed, step, global group id) (`search.base.GroupStreams`,
  `policies/sampling.py`), not from one generator shared by the batch, so
  a group samples the same tokens on any rank and next to any other
  groups. Fresh-RNG clones take their seeds from the same per-group keys.
  Evaluation episodes have streams keyed by (run seed, episode).
- The minibatch shuffler: one generator, identical on every rank (not
  split), so the global order is the single-process order.
- Environments are seeded per instance, so need nothing.
"""

from __future__ import annotations

import atexit
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist

from tsr_cli.train.config import ConfigError, TrainConfig

#: elements per flattened gradient all-reduce (100 MB of float32)
BUCKET_ELEMENTS = 25_000_000


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks.

    backend: "gloo" or "nccl" when a process group is joined; None for a
    single process, where every collective returns its input.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collective tensors live: the local GPU under nccl, else the CPU."""
        return torch.device(f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu")

    def train_device(self, device: str) -> str:
        """The device this rank trains on: `cuda` or `cuda:N` become its local GPU."""
        if self.backend == "nccl" and device.startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return device

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items (shares differ by at most one)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def global_rows(self, sections: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """([N] where each row of the global batch sits in this rank's batch (-1: another
        rank's), the global batch's row count per section).

        `sections` holds this rank's row count per section (episodes, sibling
        rows); its batch lists its sections in order. The global batch lists
        section by section, and within a section rank by rank: with ranks
        holding consecutive instance groups, the order one process builds.
        """
        counts = self.gather([tuple(sections)])
        return global_rows(counts, self.rank), tuple(map(sum, zip(*counts)))

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.backend is not None:
            dist.barrier(**({"device_ids": [self.local_rank]} if self.backend == "nccl" else {}))

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over ranks (a new tensor on x's device)."""
        return self._all_reduce(x, dist.ReduceOp.SUM)

    def all_max(self, x: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(x, dist.ReduceOp.MAX)

    def _all_reduce(self, x: torch.Tensor, op) -> torch.Tensor:
        if self.backend is None:
            return x
        y = x.detach().to(self.device, copy=True)
        dist.all_reduce(y, op=op)
        return y.to(x.device)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (all ranks must agree to stop together)."""
        if self.backend is None:
            return bool(flag)
        return bool(self.all_max(torch.tensor([float(bool(flag))], device=self.device)))

    def gather(self, items: list) -> list:
        """Every rank's list, concatenated in rank order (small picklable items)."""
        if self.backend is None:
            return list(items)
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def reduce(self, values: dict, sums: Iterable[str] = (), maxes: Iterable[str] = ()) -> dict:
        """Numbers reduced over ranks: keys in `sums` summed, in `maxes` maxed, the
        rest averaged over the ranks where they are finite (NaN where none is).

        Ranks may hold different keys (a rank that trained on no row logs no
        loss); a missing key counts as NaN. Integers stay integers.
        """
        if self.backend is None:
            return dict(values)
        keys = sorted(set(self.gather(list(values))))
        local = [float(values.get(k, math.nan)) for k in keys]
        finite = torch.tensor([[v if math.isfinite(v) else 0.0, float(math.isfinite(v))] for v in local],
                              dtype=torch.float64).reshape(-1, 2)
        top = torch.tensor([v if math.isfinite(v) else -math.inf for v in local], dtype=torch.float64)
        total, top = self.all_sum(finite), self.all_max(top)
        sums, maxes = set(sums), set(maxes)
        out = {}
        for i, key in enumerate(keys):
            value_sum, count = float(total[i, 0]), float(total[i, 1])
            if key in sums:
                value = value_sum
            elif key in maxes:
                value = float(top[i]) if count else math.nan
            else:
                value = value_sum / count if count else math.nan
            out[key] = int(value) if isinstance(values.get(key), int) and math.isfinite(value) else value
        return out

    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over ranks, in place.

        A rank without a gradient for a parameter (it held no row of the
        minibatch) adds zeros; a parameter no rank has a gradient for keeps
        None, as in a single process, so AdamW skips it there too.
        """
        if self.backend is None:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = self.all_sum(torch.tensor([float(p.grad is not None) for p in params], device=self.device))
        for bucket in _buckets(grads, BUCKET_ELEMENTS):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(part.view_as(g))
        for p, g, seen in zip(params, grads, present.tolist()):
            p.grad = g if seen else None

    def broadcast_parameters(self, params: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's values into every rank's tensors (identical starting weights)."""
        if self.backend is None:
            return
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)


def global_rows(counts: list[tuple[int, ...]], rank: int) -> torch.Tensor:
    """`World.global_rows` given every rank's section counts (`counts[r]`)."""
    pieces, own = [], counts[rank]
    for section in range(len(own)):
        start = sum(own[:section])
        for r, per_section in enumerate(counts):
            n = per_section[section]
            pieces.append(torch.arange(start, start + n) if r == rank else torch.full((n,), -1))
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _buckets(tensors: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, up to `limit` elements per bucket."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        last = out[-1][-1] if out else None
        if last is None or size + t.numel() > limit or (t.dtype, t.device) != (last.dtype, last.device):
            out.append([])
            size = 0
        out[-1].append(t)
        size += t.numel()
    return out


_WORLD: World | None = None


def setup(cfg: TrainConfig) -> World:
    """This process's world (joining the launcher's process group on first call),
    after checking the config against it and recording its size in the config.

    Raises ConfigError when the config records another world size (a run
    resumes with the world size it started with), or when the step's
    instance groups cannot be shared out evenly.
    """
    world = _join(cfg.trainer.device)
    recorded, size = cfg.world_size, world.world_size
    if recorded is not None and recorded != size:
        raise ConfigError(
            f"this run was started with world size {recorded} and resumes only with it, but this launch "
            f"has {size} process(es): launch `torchrun --nproc-per-node {recorded} $(which tsr) train ...`")
    if cfg.trainer.groups % size:
        raise ConfigError(
            f"trainer.groups ({cfg.trainer.groups}) must be divisible by the world size ({size}): each "
            "process rolls out an equal share of the step's instance groups")
    cfg.world_size = size
    return world


def _join(device: str) -> World:
    """The launcher's process group, joined once per process; a world of one without a launcher."""
    global _WORLD
    if _WORLD is None:
        if "WORLD_SIZE" not in os.environ:
            _WORLD = World()
        else:
            backend = "nccl" if device.startswith("cuda") else "gloo"
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend)
                atexit.register(teardown)
            _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _WORLD


def teardown() -> None:
    """Leave the process group (registered to run at exit)."""
    global _WORLD
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None

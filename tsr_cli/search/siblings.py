"""Sibling credit (`search.learn_from: siblings`): learn from what search rejected.

TSR executes only the winning candidate of a turn, so the learner never sees
the losing ones fail: an invalid answer that search passed over is never
penalised. Sibling credit keeps the candidates the search already paid for.
Every turn where a beam or look-ahead scored M candidates from one state
gives a turn-level group, as GiGPO's anchor-state groups and Tree-GRPO's
sibling advantages do. Each member becomes a training row of its own: the
conversation up to that turn (loss mask 0) plus the member's response (mask 1),
with the advantage (v - mean) / std over its group (GRPO's normalisation,
with its Bessel-corrected std; `algos.grpo_advantages`). v is the search
score, with invalid members moved below every valid one (`ranked_values`), so
they get a negative advantage. Groups whose members all tie add no rows.

For best-of-n the members are the whole samples of an instance group's pool,
ranked by return: that is plain GRPO over the pool.

The chosen trajectory keeps its own episode-level advantage; these rows come
on top. `train/batch.py` appends them to the same `TokenBatch`, so the loss
stays one function and the optimiser never learns which strategy built them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from tsr_cli.agent.trajectory import Sibling, SiblingGroup, Trajectory, Turn
from tsr_cli.algos import grpo_advantages


@dataclass(frozen=True)
class SiblingRow:
    """One extra training row.

    ids:       [L] the group's prefix, then the member's tokens
    mask:      [L] 1 on the member's model tokens, 0 on the prefix and environment tokens
    logprobs:  [L] sampler log-probs where mask is 1, 0.0 elsewhere
    advantage: the member's advantage within its group, on every mask-1 token
    weight:    `search.sibling_weight`, the loss weight of its tokens
    """

    ids: list[int]
    mask: list[int]
    logprobs: list[float]
    advantage: float
    weight: float


def turn_group(prefix: Sequence[int], scored: Sequence[tuple[Turn, float]]) -> SiblingGroup:
    """The M candidates (turn, search score) one state produced; `prefix` is that
    state's prompt, the token ids every candidate was sampled after."""
    members = tuple(
        Sibling(tuple(t.response_ids), (1,) * len(t.response_ids), tuple(t.logprobs), float(score), t.format_ok)
        for t, score in scored
    )
    return SiblingGroup(tuple(prefix), members)


def pool_group(samples: Sequence[Trajectory]) -> SiblingGroup:
    """Best-of-n's pool as one group of whole trajectories, ranked by return."""
    members = tuple(
        Sibling(tuple(t.token_ids()), tuple(t.loss_mask()), tuple(t.old_logprobs()), t.total_return, True)
        for t in samples
    )
    return SiblingGroup((), members)


def ranked_values(group: SiblingGroup) -> list[float]:
    """One number per member, ordered as search ranks them: every valid member
    above every invalid one, then by score.

    Invalid members keep their order among themselves but are moved down so
    the best of them sits max(1, spread of the valid scores) below the worst
    valid member: an invalid answer then costs at least as much as the gap
    between the best and worst valid ones.
    """
    valid = [m.score for m in group.members if m.valid]
    invalid = [m.score for m in group.members if not m.valid]
    if not valid or not invalid:
        return [m.score for m in group.members]
    shift = max(invalid) - min(valid) + max(1.0, max(valid) - min(valid))
    return [m.score if m.valid else m.score - shift for m in group.members]


def group_rows(group: SiblingGroup, weight: float) -> list[SiblingRow]:
    """The group's rows, or none when all its members tie."""
    values = ranked_values(group)
    if len(set(values)) < 2:
        return []
    advantages = grpo_advantages(torch.tensor(values, dtype=torch.float64), [0] * len(values)).tolist()
    prefix = list(group.prefix)
    return [
        SiblingRow(prefix + list(m.ids), [0] * len(prefix) + list(m.mask),
                   [0.0] * len(prefix) + list(m.logprobs), float(adv), float(weight))
        for m, adv in zip(group.members, advantages)
    ]


def sibling_rows(trajectories: Sequence[Trajectory], weight: float) -> list[SiblingRow]:
    """Every row the trajectories' recorded sibling groups give, in order.

    Pass the trajectories that will be trained on (after instance filtering),
    so a filtered-out instance drops its siblings too. Weight 0 gives no rows.
    """
    if weight == 0:
        return []
    return [row for traj in trajectories for group in traj.siblings for row in group_rows(group, weight)]

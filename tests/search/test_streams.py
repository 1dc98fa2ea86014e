"""Per-group random streams through rollout and search (`rollout(..., streams=, first_group=)`).

A group's trajectories depend on (root, its group id) alone: rolling out a
share of the groups under their global ids, or in other batches, gives the
same trajectories. That is what lets data-parallel ranks split a step.
"""

import pytest

import envs
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.rollout import rollout
from tsr_cli.search import GroupStreams, SearchConfig

SEEDS = [3, 14, 15, 92]
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=1)
PROTOCOL = ProtocolConfig(max_turns=4, max_actions_per_turn=1, answer_only=True)


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny", seed=0, env_names=["frozenlake"])


def play(policy, seeds, strategy, first_group=0, batch_groups=None, streams=(0, 0, 1)):
    search = SearchConfig(strategy, candidates=2, beam_width=2, depth=1, fresh_rng=True, fresh_samples=2)
    return rollout(policy, lambda: envs.make("frozenlake"), seeds, search, PARAMS, PROTOCOL,
                   env_name="frozenlake", group_size=2, batch_groups=batch_groups,
                   first_group=first_group, streams=streams).trajectories


def fingerprint(trajs):
    return [(t.group, t.seed, t.token_ids(), [turn.rewards for turn in t.turns]) for t in trajs]


@pytest.mark.parametrize("strategy", ["none", "beam", "lookahead"])
def test_a_share_of_the_groups_rolls_out_as_in_the_whole_step(policy, strategy):
    whole = play(policy, SEEDS, strategy)
    second_half = play(policy, SEEDS[2:], strategy, first_group=2)
    one_at_a_time = play(policy, SEEDS, strategy, batch_groups=1)
    assert [t.group for t in whole] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert fingerprint(second_half) == fingerprint(whole[4:])
    assert fingerprint(one_at_a_time) == fingerprint(whole)


def test_other_roots_sample_otherwise(policy):
    assert fingerprint(play(policy, SEEDS, "none")) != fingerprint(play(policy, SEEDS, "none", streams=(0, 0, 2)))


def test_group_streams_continue_per_group():
    streams = GroupStreams((5, 0, 1))
    assert streams.generator(3) is streams.generator(3)
    assert streams.generator(3) is not streams.generator(4)
    first = [streams.fresh_seed(3), streams.fresh_seed(3)]
    again = GroupStreams((5, 0, 1))
    again.fresh_seed(4)  # another group's draws do not shift group 3's
    assert [again.fresh_seed(3), again.fresh_seed(3)] == first and first[0] != first[1]

"""Sibling credit (issue 12, section 1): candidate groups -> extra rows of the same batch."""

import pytest
import torch

import envs
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.agent.trajectory import Sibling, SiblingGroup, Trajectory, Turn
from tsr_cli.algos import broadcast_to_tokens, grpo_advantages
from tsr_cli.policies.base import Completion, SamplingParams
from tsr_cli.policies.random import RandomPolicy
from tsr_cli.rollout import rollout
from tsr_cli.search import SearchConfig
from tsr_cli.search.siblings import group_rows, ranked_values, sibling_rows
from tsr_cli.train.batch import append_rows, build_batch, episode_mask, loss_mask, overlay_sibling_advantages
from tests.search.test_search import Cycling

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=32)
LEVEL = "#######\n#@ $ .#\n#######"  # right, right, right solves it


def member(ids, score, valid=True):
    return Sibling(tuple(ids), (1,) * len(ids), (-0.5,) * len(ids), score, valid)


def four_with_one_invalid():
    """M=4 from one state: the invalid one has the highest raw score (env_reward of no action is 0,
    above a step's -0.1), as happens on Sokoban."""
    return SiblingGroup((1, 2, 3), (member([10, 11], -0.1), member([12], 0.0, valid=False),
                                    member([13, 14, 15], 1.0), member([16], -0.1)))


def test_an_invalid_candidate_ranks_lowest_and_gets_a_negative_advantage():
    group = four_with_one_invalid()
    values = ranked_values(group)
    assert values[1] < min(values[0], values[2], values[3])
    rows = group_rows(group, weight=0.5)
    advantages = [r.advantage for r in rows]
    assert advantages[1] < 0 and advantages[1] == min(advantages)
    assert advantages[2] > 0 and advantages[2] == max(advantages)
    assert sum(advantages) == pytest.approx(0.0, abs=1e-9)
    expected = grpo_advantages(torch.tensor(values, dtype=torch.float64), [0, 0, 0, 0])
    assert advantages == pytest.approx(expected.tolist())
    assert [r.ids for r in rows] == [[1, 2, 3, 10, 11], [1, 2, 3, 12], [1, 2, 3, 13, 14, 15], [1, 2, 3, 16]]
    assert rows[2].mask == [0, 0, 0, 1, 1, 1] and rows[2].logprobs == [0.0] * 3 + [-0.5] * 3
    assert all(r.weight == 0.5 for r in rows)


@pytest.mark.parametrize("members", [
    [member([10], 0.0), member([11], 0.0), member([12], 0.0), member([13], 0.0)],
    [member([10], 0.3, False), member([11], 0.3, False)],
])
def test_all_tied_groups_add_no_rows(members):
    group = SiblingGroup((1, 2), tuple(members))
    assert group_rows(group, 1.0) == []
    assert sibling_rows([Trajectory("x", 0, siblings=[group])], 1.0) == []


def turn(prompt, response, reward):
    return Turn(tuple(prompt), Completion(list(response), [0.0] * len(response), ""), (), (), (), (), reward, True)


def test_sibling_rows_join_the_batch_with_their_own_masks_and_advantages():
    chosen = [Trajectory("x", 0, 0, [turn([1, 2, 3], [13, 14, 15], 1.0)], siblings=[four_with_one_invalid()]),
              Trajectory("x", 0, 0, [turn([1, 2, 3], [16], -0.1)])]
    plain = build_batch(chosen, pad_id=0)
    rows = sibling_rows(chosen, weight=0.5)
    batch = append_rows(plain, rows, pad_id=0)
    assert len(batch) == 2 + 4
    assert batch.input_ids[:2, :plain.input_ids.shape[1]].equal(plain.input_ids)
    assert batch.input_ids[3].tolist() == [1, 2, 3, 12, 0, 0]
    # targets are tokens 1.. of a row: the response tokens of a sibling row sit after its prefix
    assert batch.mask[2:].tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 1, 0, 0]]
    assert batch.tokens["sibling_mask"][:2].sum() == 0 and batch.tokens["sibling_mask"][2:].equal(batch.mask[2:])
    assert loss_mask(batch)[:2].equal(batch.mask[:2]) and loss_mask(batch)[2:].equal(0.5 * batch.mask[2:])
    assert episode_mask(batch)[2:].sum() == 0 and episode_mask(batch)[:2].equal(batch.mask[:2])
    assert batch.tokens["rewards"][2:].abs().sum() == 0 and batch.returns[2:].tolist() == [0.0] * 4
    assert batch.groups.tolist() == [0, 0, -1, -2, -3, -4]
    # the trainer's GRPO step gives sibling rows 0 (singleton groups); the overlay puts theirs back
    batch.tokens["advantages"] = broadcast_to_tokens(grpo_advantages(batch.returns, batch.groups), batch.mask)
    overlay_sibling_advantages(batch)
    adv = batch.tokens["advantages"]
    for i, row in enumerate(rows, start=2):
        assert adv[i][batch.mask[i] != 0].tolist() == pytest.approx([row.advantage] * len([m for m in row.mask if m]))
    assert adv[:2].equal(broadcast_to_tokens(grpo_advantages(plain.returns, plain.groups), plain.mask))


def beam_rollout(learn_from, policy=None, strategy="beam", **search):
    policy = policy or Cycling(["<answer>right</answer>", "<answer>dance</answer>",
                                "<answer>left</answer>", "<answer>right</answer>"])
    cfg = SearchConfig(strategy, candidates=4, scorer="env_reward", learn_from=learn_from, **search)
    return rollout(policy, lambda: envs.make("sokoban", level=LEVEL), [0], cfg, PARAMS,
                   ProtocolConfig(max_turns=3, max_actions_per_turn=1), env_name="sokoban")


def test_beam_records_one_group_per_turn_with_the_prefix_it_sampled_after():
    traj = beam_rollout("siblings").trajectories[0]
    assert traj.success and len(traj.turns) == 3 and len(traj.siblings) == 3
    context = []
    for turn_, group in zip(traj.turns, traj.siblings):
        context += turn_.prompt_ids
        assert list(group.prefix) == context
        assert [m.valid for m in group.members] == [True, False, True, True]
        assert tuple(turn_.response_ids) in [m.ids for m in group.members]
        context += turn_.response_ids
    rows = sibling_rows([traj], 1.0)
    assert len(rows) == 12  # no turn is all-tied: "dance" is invalid
    invalid = [r for r, m in zip(rows, [m for g in traj.siblings for m in g.members]) if not m.valid]
    assert invalid and all(r.advantage < 0 for r in invalid)


@pytest.mark.parametrize("strategy", ["lookahead", "best-of-n"])
def test_lookahead_and_best_of_n_record_groups(strategy):
    traj = beam_rollout("siblings", strategy=strategy).trajectories[0]
    if strategy == "lookahead":
        assert len(traj.siblings) == len(traj.turns)
        assert all(len(g.members) == 4 for g in traj.siblings)
    else:  # best-of-n: one group of whole samples, ranked by return (plain GRPO over the pool)
        (group,) = traj.siblings
        assert group.prefix == () and len(group.members) == 4
        assert {m.score for m in group.members} >= {traj.total_return}
        assert all(m.mask[0] == 0 and 1 in m.mask for m in group.members)


@pytest.mark.parametrize("strategy", ["best-of-n", "beam", "lookahead"])
def test_learn_from_chosen_leaves_trajectories_and_batch_as_they_were(strategy):
    policy = lambda: RandomPolicy(seed=4)
    chosen = beam_rollout("chosen", policy(), strategy).trajectories
    siblings = beam_rollout("siblings", policy(), strategy).trajectories
    assert [t.token_ids() for t in chosen] == [t.token_ids() for t in siblings]
    assert all(t.siblings == [] for t in chosen) and any(t.siblings for t in siblings)
    batch = build_batch(chosen, pad_id=0)
    assert sibling_rows(chosen, 1.0) == [] and append_rows(batch, [], pad_id=0) is batch
    assert set(batch.tokens) == {"mask", "rewards", "sampler_logprobs"}  # no sibling fields


def test_config_rejects_bad_learn_from_and_weight():
    with pytest.raises(ValueError, match="learn_from"):
        SearchConfig("beam", learn_from="everything")
    with pytest.raises(ValueError, match="sibling_weight"):
        SearchConfig("beam", sibling_weight=-1.0)


def test_evaluation_records_no_siblings(monkeypatch):
    import tsr_cli.evaluate as evaluation

    seen = []

    def spy(policy, make_env, seeds, search, *args, **kw):
        result = rollout(policy, make_env, seeds, search, *args, **kw)
        seen.append((search.learn_from, [t.siblings for t in result.trajectories]))
        return result

    monkeypatch.setattr(evaluation, "rollout", spy)
    evaluation.evaluate(RandomPolicy(seed=0), lambda: envs.make("sokoban", level=LEVEL), [0],
                        SearchConfig("beam", learn_from="siblings"), PARAMS, ProtocolConfig(max_turns=2),
                        env_name="sokoban")
    assert seen == [("chosen", [[]])]

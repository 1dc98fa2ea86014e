"""An episode that would overflow the model's context ends truncated (issue 10, point 9)."""

import pytest

import envs
from tsr_cli.agent.episode import Episode
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.evaluate import summarize
from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.random import RandomPolicy
from tsr_cli.policies.tiny import make_tiny_policy
from tsr_cli.rollout import rollout
from tsr_cli.search import SearchConfig

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=32)
LEVEL = "#######\n#@    #\n#  $ .#\n#######"  # never solved in two turns by chance alone


def first_prompt_length(codec) -> int:
    env = envs.make("sokoban", level=LEVEL)
    return len(Episode.start(env, codec, ProtocolConfig(), seed=0).prompt())


@pytest.mark.parametrize("strategy", ["none", "best-of-n", "beam", "lookahead"])
def test_every_strategy_ends_an_overflowing_episode_as_truncated(strategy):
    policy = RandomPolicy(seed=0)
    # room for the first turn, not for the second prompt on top of it
    policy.context_length = first_prompt_length(policy.codec) + PARAMS.max_new_tokens + 10
    cfg = SearchConfig(strategy, candidates=3, beam_width=2)
    result = rollout(policy, lambda: envs.make("sokoban", level=LEVEL), [0, 1, 2], cfg, PARAMS,
                     ProtocolConfig(max_turns=5), env_name="sokoban")
    for traj in result.trajectories:
        assert traj.truncated and not traj.terminated and len(traj.turns) == 1
        assert len(traj.turns[0].prompt_ids) + PARAMS.max_new_tokens <= policy.context_length
    assert summarize(result)["truncated_episodes"] == 3


def test_without_a_context_length_nothing_is_truncated():
    result = rollout(RandomPolicy(seed=0), lambda: envs.make("sokoban", level=LEVEL), [0, 1], SearchConfig("beam"),
                     PARAMS, ProtocolConfig(max_turns=3), env_name="sokoban")
    assert not any(t.truncated for t in result.trajectories)
    assert all(len(t.turns) == 3 for t in result.trajectories)
    assert summarize(result)["truncated_episodes"] == 0


def test_a_real_model_past_its_position_limit_is_truncated_not_run():
    words = [envs.make("sokoban").instruction, envs.make("sokoban").legend, "up down left right", LEVEL]
    probe = make_tiny_policy(words, seed=0)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, stop=("</answer>",))
    window = first_prompt_length(probe.codec) + params.max_new_tokens
    policy = make_tiny_policy(words, seed=0, context=window)
    assert policy.context_length == window
    result = rollout(policy, lambda: envs.make("sokoban", level=LEVEL), [0, 1], SearchConfig("none"), params,
                     ProtocolConfig(max_turns=4), env_name="sokoban")
    assert [len(t.turns) for t in result.trajectories] == [1, 1]
    assert all(t.truncated for t in result.trajectories)
    # the first prompt alone leaves no room: the episode ends before any turn
    tight = make_tiny_policy(words, seed=0, context=window - 1)
    result = rollout(tight, lambda: envs.make("sokoban", level=LEVEL), [0], SearchConfig("none"), params,
                     ProtocolConfig(max_turns=4), env_name="sokoban")
    assert result.trajectories[0].turns == [] and result.trajectories[0].truncated

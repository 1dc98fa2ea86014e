"""The random policy: legal actions only, from the last `Available actions:` line."""

import math

import pytest

from tsr_cli.agent.parse import parse_response
from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.random import RandomPolicy, available_actions

CODEC = ByteCodec()
GRID = ["up", "down", "left", "right"]
SHOP = ["search[red shoes]", "click[buy now]", "back"]


def prompt(*action_lists):
    """A conversation whose user messages list the given actions, one message each."""
    messages = []
    for actions in action_lists:
        messages.append({"role": "user", "content": f"Do it.\nAvailable actions: {', '.join(actions)}\nState: #_P#"})
        messages.append({"role": "assistant", "content": "<answer>up</answer>"})
    return CODEC.encode(CODEC.render(messages[:-1], True))


def all_completions(out):
    return [c for group in out for c in group]


def test_available_actions_reads_the_last_line_and_keeps_spaces_inside_items():
    text = CODEC.decode(prompt(GRID, SHOP))
    assert available_actions(text) == SHOP
    with pytest.raises(ValueError, match="Available actions"):
        available_actions("no actions here")


@pytest.mark.parametrize("max_actions", [1, 2, 3])
def test_emits_only_legal_actions_up_to_max_actions(max_actions):
    policy = RandomPolicy(seed=0, max_actions=max_actions)
    out = policy.generate([prompt(GRID), prompt(GRID, SHOP)], 20, SamplingParams(max_new_tokens=200))
    for group, legal in zip(out, [GRID, SHOP]):
        for c in group:
            parsed = parse_response(c.text, max_actions=10)
            assert len(parsed.parts) == max_actions
            assert set(parsed.parts) <= set(legal)
            assert c.finish == "stop" and c.token_ids[-1] == CODEC.eos_token_id
    assert policy.stats.calls == 1 and policy.stats.sequences == 40


def test_draws_are_uniform_and_seeded():
    params = SamplingParams(max_new_tokens=200)
    out = RandomPolicy(seed=3, max_actions=1).generate([prompt(GRID)], 400, params)
    counts = {a: sum(c.text == f"<answer>{a}</answer>" for c in out[0]) for a in GRID}
    assert all(70 <= n <= 130 for n in counts.values()), counts
    again = RandomPolicy(seed=3, max_actions=1).generate([prompt(GRID)], 400, params)
    assert [c.text for c in again[0]] == [c.text for c in out[0]]


def test_logprobs_sum_to_the_probability_of_the_response():
    out = RandomPolicy(seed=0, max_actions=2).generate([prompt(SHOP)], 5, SamplingParams(max_new_tokens=200))
    for c in all_completions(out):
        assert len(c.logprobs) == len(c.token_ids)
        assert CODEC.decode(c.token_ids) == c.text
        assert sum(c.logprobs) == pytest.approx(-2 * math.log(len(SHOP)))
        assert sum(lp != 0 for lp in c.logprobs) == 2


def test_greedy_is_still_uniform_and_truncation_reports_length():
    policy = RandomPolicy(seed=0, max_actions=2)
    greedy = policy.generate([prompt(GRID)], 40, SamplingParams(temperature=0))
    assert len({c.text for c in greedy[0]}) > 1
    cut = policy.generate([prompt(GRID)], 1, SamplingParams(max_new_tokens=5))[0][0]
    assert len(cut.token_ids) == 5 and cut.finish == "length"


def test_reads_the_action_budget_from_the_prompt():
    text = "Available actions: up, down\nYou can make up to 1 action per turn, separated by ||."
    out = RandomPolicy(seed=0, max_actions=3).generate([CODEC.encode(text)], 10, SamplingParams())
    assert all(c.text.count("||") == 0 for c in out[0])

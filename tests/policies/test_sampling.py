"""The shared sampling loop, exercised through the fake fixed-logits model (STYLE.md §8)."""

import math

import pytest
import torch

from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.fake import FakeLogitsPolicy
from tsr_cli.policies.sampling import left_pad, pick_tokens, shared_runs, top_p_filter

CODEC = ByteCodec()
V = CODEC.vocab_size
PROMPTS = [CODEC.encode("hi"), CODEC.encode("a longer prompt"), CODEC.encode("x")]


def no_eos_bias():
    """Uniform over every id except end-of-turn, so rows only stop at the length limit."""
    bias = torch.zeros(V)
    bias[CODEC.eos_token_id] = float("-inf")
    return bias


def texts(out):
    return [[c.text for c in group] for group in out]


def ids(out):
    return [[c.token_ids for c in group] for group in out]


def test_same_seed_same_samples_and_different_seed_differs():
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop=())
    a = FakeLogitsPolicy(seed=1).generate(PROMPTS, 3, params)
    b = FakeLogitsPolicy(seed=1).generate(PROMPTS, 3, params)
    c = FakeLogitsPolicy(seed=2).generate(PROMPTS, 3, params)
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_params_seed_reseeds_the_policy_generator():
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop=(), seed=7)
    policy = FakeLogitsPolicy(seed=1)
    first = policy.generate(PROMPTS, 2, params)
    assert ids(policy.generate(PROMPTS, 2, params)) == ids(first)
    assert ids(FakeLogitsPolicy(seed=99).generate(PROMPTS, 2, params)) == ids(first)


def test_samples_of_one_prompt_differ():
    out = FakeLogitsPolicy(seed=0).generate(PROMPTS[:1], 4, SamplingParams(max_new_tokens=8, stop=()))
    assert len({tuple(c.token_ids) for c in out[0]}) == 4


def test_temperature_zero_is_deterministic_argmax():
    bias = torch.randn(V, generator=torch.Generator().manual_seed(0))
    policy = FakeLogitsPolicy(bias=bias, seed=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=5, stop=())
    out = policy.generate(PROMPTS, 3, params)
    best = int(bias.argmax())
    assert all(c.token_ids == [best] * 5 for group in out for c in group)
    assert ids(policy.generate(PROMPTS, 3, params)) == ids(out)


def test_all_prompts_times_n_in_one_call_with_one_prefill():
    policy = FakeLogitsPolicy(bias=no_eos_bias())
    out = policy.generate(PROMPTS, 4, SamplingParams(max_new_tokens=6, stop=()))
    assert [len(group) for group in out] == [4, 4, 4]
    assert policy.stats.calls == 1
    assert policy.stats.sequences == 12 and policy.stats.tokens == 12 * 6
    # the prompts are prefilled once, then every decode step runs all 12 samples together
    assert policy.batch_sizes == [3] + [12] * 5


def test_repeated_prompts_are_prefilled_once():
    policy = FakeLogitsPolicy(bias=no_eos_bias())
    out = policy.generate([PROMPTS[0], PROMPTS[1], PROMPTS[0]], 2, SamplingParams(max_new_tokens=3, stop=()))
    assert [len(group) for group in out] == [2, 2, 2]
    assert policy.batch_sizes == [2, 6, 6]


def test_prompts_with_a_long_common_prefix_share_its_prefill():
    head = CODEC.encode("a shared conversation of many turns ")
    family = [head + CODEC.encode(t) for t in ("up", "down", "left!")]
    policy = FakeLogitsPolicy(bias=no_eos_bias())
    out = policy.generate([*family, PROMPTS[1]], 2, SamplingParams(max_new_tokens=3, stop=()))
    assert [len(group) for group in out] == [2, 2, 2, 2]
    # one prefill of the two prefixes (the family's and the lone prompt's), one of the
    # four suffixes, then the 8 samples decode together
    assert policy.batch_sizes == [2, 4, 8, 8]
    assert all(len(c.token_ids) == 3 for group in out for c in group)


def test_shared_runs_need_a_long_enough_common_prefix():
    head = list(range(40))
    assert shared_runs([head + [1, 2], head + [3, 4], head + [5, 6]]) == [(0, 3, 40)]
    assert shared_runs([head + [1, 2], list(range(100, 140))]) == [(0, 1, 40), (1, 2, 38)]
    # a prefix under half of the first prompt is not worth a second pass
    assert shared_runs([head[:20] + list(range(200, 260)), head[:20] + [1, 2]]) == [(0, 1, 78), (1, 2, 20)]
    assert shared_runs([[1, 2], [1, 2, 3]]) == [(0, 1, 0), (1, 2, 1)]


@pytest.mark.parametrize("max_new_tokens", [1, 7])
def test_max_new_tokens_is_respected(max_new_tokens):
    out = FakeLogitsPolicy(bias=no_eos_bias()).generate(
        PROMPTS, 2, SamplingParams(max_new_tokens=max_new_tokens, stop=()))
    for c in (c for group in out for c in group):
        assert len(c.token_ids) == len(c.logprobs) == max_new_tokens
        assert c.finish == "length"


def test_stop_string_ends_generation_after_it_appears():
    policy = FakeLogitsPolicy(script="<think>hm</think><answer>up || left</answer> trailing", strength=50)
    out = policy.generate(PROMPTS, 2, SamplingParams(temperature=1.0, max_new_tokens=100))
    for c in (c for group in out for c in group):
        assert c.text == "<think>hm</think><answer>up || left</answer>"
        assert c.finish == "stop"
        assert CODEC.decode(c.token_ids) == c.text


def test_end_of_turn_token_ends_generation_and_is_kept_in_ids():
    policy = FakeLogitsPolicy(script="<answer>up", strength=50)
    out = policy.generate(PROMPTS, 1, SamplingParams(temperature=0, max_new_tokens=100, stop=()))
    for group in out:
        assert group[0].token_ids == CODEC.encode("<answer>up") + [CODEC.eos_token_id]
        assert group[0].text == "<answer>up" and group[0].finish == "stop"


def test_rows_finishing_early_leave_the_batch_and_others_continue():
    bias = torch.zeros(V)
    bias[CODEC.eos_token_id] = math.log(V)  # end-of-turn about half the time at each step
    policy = FakeLogitsPolicy(bias=bias, seed=0)
    out = policy.generate(PROMPTS, 4, SamplingParams(max_new_tokens=6, stop=()))
    lengths = [len(c.token_ids) for group in out for c in group]
    assert len(set(lengths)) > 2
    # decode forward j feeds the j-th token of every sample still running after it
    assert policy.batch_sizes[1:] == [sum(n > j for n in lengths) for j in range(1, max(lengths))]
    for c in (c for group in out for c in group):
        ended = c.token_ids[-1] == CODEC.eos_token_id
        assert c.finish == ("stop" if ended else "length")
        assert ended or len(c.token_ids) == 6


def test_scripted_text_survives_left_padding():
    policy = FakeLogitsPolicy(script="<answer>down</answer>", strength=50)
    out = policy.generate(PROMPTS, 2, SamplingParams(temperature=0, max_new_tokens=50))
    assert texts(out) == [["<answer>down</answer>"] * 2] * 3


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0, 2.0])
def test_uniform_logits_give_minus_log_vocab(temperature):
    out = FakeLogitsPolicy().generate(PROMPTS, 2, SamplingParams(temperature=temperature, max_new_tokens=5))
    for c in (c for group in out for c in group):
        assert c.logprobs == pytest.approx([-math.log(V)] * len(c.token_ids), abs=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5])
def test_logprobs_are_log_softmax_of_logits_over_temperature(temperature):
    bias = torch.randn(V, generator=torch.Generator().manual_seed(3)) * 3
    out = FakeLogitsPolicy(bias=bias).generate(PROMPTS, 3, SamplingParams(temperature=temperature, max_new_tokens=6))
    expected = (bias / (temperature or 1.0)).log_softmax(-1)
    for c in (c for group in out for c in group):
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.logprobs == pytest.approx(expected[c.token_ids].tolist(), abs=1e-5)


def test_sampling_frequencies_follow_the_distribution():
    bias = torch.full((V,), float("-inf"))
    a, b = CODEC.encode("ab")
    bias[a], bias[b] = math.log(0.8), math.log(0.2)
    out = FakeLogitsPolicy(bias=bias, seed=0).generate(PROMPTS[:1], 2000, SamplingParams(max_new_tokens=1))
    share = sum(c.token_ids == [a] for c in out[0]) / 2000
    assert share == pytest.approx(0.8, abs=0.03)


def test_top_p_keeps_only_the_nucleus():
    bias = torch.full((V,), -20.0)
    a, b = CODEC.encode("ab")
    bias[a], bias[b] = 2.0, 1.0
    out = FakeLogitsPolicy(bias=bias).generate(PROMPTS[:1], 200, SamplingParams(top_p=0.5, max_new_tokens=1))
    assert {tuple(c.token_ids) for c in out[0]} == {(a,)}


def test_top_p_filter_hand_values():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    keep = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert keep(1.0) == [True, True, True]
    assert keep(0.7) == [True, True, False]
    assert keep(0.5) == [True, False, False]
    assert keep(0.01) == [True, False, False]
    # order in the vocabulary does not matter
    shuffled = torch.tensor([[0.2, 0.5, 0.3]]).log()
    assert torch.isfinite(top_p_filter(shuffled, 0.7))[0].tolist() == [False, True, True]


def test_pick_tokens_greedy_takes_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]])
    tokens, logprobs = pick_tokens(logits, SamplingParams(temperature=0), torch.Generator())
    assert tokens.tolist() == [1, 0]
    assert logprobs.tolist() == pytest.approx(logits.log_softmax(-1)[[0, 1], [1, 0]].tolist())


def test_left_pad_aligns_prompts_right():
    ids_, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids_.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bad_arguments_are_rejected():
    policy = FakeLogitsPolicy()
    with pytest.raises(ValueError):
        policy.generate([[]], 1, SamplingParams())
    with pytest.raises(ValueError):
        policy.generate(PROMPTS, 0, SamplingParams())
    with pytest.raises(ValueError):
        FakeLogitsPolicy(bias=[0.0, 1.0])

"""The tiny word-level Llama: tokenizer, chat template, init and generation."""

import sys
import types

import pytest
import torch

from tsr_cli.agent.parse import parse_response
from tsr_cli.policies import sampling
from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.codecs import render_chatml
from tsr_cli.policies.tiny import (
    BASE_WORDS, build_tiny_tokenizer, env_vocabulary, make_tiny_model, make_tiny_policy,
)

WORDS = ["Push the box onto the goal.", "P is you, G is the goal.", "#_P_#\n#_G_#", "up down left right"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(WORDS)


@pytest.fixture(scope="module")
def policy():
    return make_tiny_policy(WORDS, seed=0)


def prompts(codec):
    long = [{"role": "user", "content": "Push the box onto the goal.\nState:\n#_P_#\n#_G_#"}]
    short = [{"role": "user", "content": "up"}]
    return [codec.encode(codec.render(m, True)) for m in (long, short)]


def test_action_text_round_trips_and_parses(tokenizer):
    ids = tokenizer.encode("<think>left up</think><answer>up || left</answer>", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<think>", "left", "up", "</think>", "<answer>", "up", "||", "left", "</answer>"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert text == "<think> left up </think> <answer> up || left </answer>"
    assert parse_response(text, 2).parts == ("up", "left")


def test_grid_symbols_newlines_and_unknown_words(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("#_P_#\nzebra 12", add_special_tokens=False))
    assert tokens == ["#", "_", "P", "_", "#", "\n", "[UNK]", "1", "2"]


def test_chat_template_matches_chatml_and_ends_turns_with_eos(policy):
    codec = policy.codec
    messages = [{"role": "user", "content": "up"}, {"role": "assistant", "content": "<answer>up</answer>"}]
    assert codec.render(messages, True) == render_chatml(messages, True)
    ids = codec.encode(codec.render(messages, False))
    assert codec.eos_token_id == codec.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(codec.eos_token_id) == 2
    # word-level decoding joins tokens with spaces, newlines included
    assert codec.decode(ids) == "user \n up \n assistant \n <answer> up </answer> \n"


def test_init_is_deterministic_in_the_seed_and_leaves_the_global_rng_alone(tokenizer):
    state = torch.random.get_rng_state()
    a, b, c = (make_tiny_model(tokenizer, seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], c["model.layers.0.mlp.up_proj.weight"])


def test_generate_shapes_and_seeded_determinism(policy):
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=5)
    out = policy.generate(prompts(policy.codec), 3, params)
    assert [len(group) for group in out] == [3, 3]
    for c in (c for group in out for c in group):
        assert 1 <= len(c.token_ids) == len(c.logprobs) <= 10
        assert all(lp <= 0 for lp in c.logprobs)
        assert c.text == policy.codec.decode(c.token_ids)
    again = policy.generate(prompts(policy.codec), 3, params)
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in out]


def test_greedy_is_deterministic_and_unaffected_by_padding(policy):
    long, short = prompts(policy.codec)
    params = SamplingParams(temperature=0, max_new_tokens=8, stop=())
    batched = policy.generate([long, short], 2, params)
    alone = policy.generate([short], 1, params)[0][0]
    assert batched[1][0].token_ids == batched[1][1].token_ids == alone.token_ids
    assert batched[1][0].logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_a_row_stopping_early_does_not_change_the_others(policy):
    # plain prompts: an untrained tied-embedding model greedily repeats its last token
    first, second = (policy.codec.encode(t) for t in ("Push the goal", "up down"))
    free = SamplingParams(temperature=0, max_new_tokens=8, stop=())
    ref_first, ref_second = (policy.generate([p], 1, free)[0][0] for p in (first, second))
    stop_word = policy.codec.decode(ref_first.token_ids[:1])
    assert stop_word not in ref_second.text
    out = policy.generate([first, second], 1, SamplingParams(temperature=0, max_new_tokens=8, stop=(stop_word,)))
    assert out[0][0].finish == "stop" and len(out[0][0].token_ids) == 1
    # the first row left the batch (and the KV cache) after one step
    assert out[1][0].token_ids == ref_second.token_ids
    assert out[1][0].logprobs == pytest.approx(ref_second.logprobs, abs=1e-4)


def test_bfloat16_autocast_generates(policy):
    bf16 = make_tiny_policy(WORDS, seed=0, dtype="bfloat16")
    out = bf16.generate(prompts(bf16.codec), 2, SamplingParams(max_new_tokens=4, seed=0))
    assert all(torch.isfinite(torch.tensor(c.logprobs)).all() for g in out for c in g)
    assert next(bf16.model.parameters()).dtype == torch.float32


def test_env_vocabulary_falls_back_without_envs(monkeypatch):
    monkeypatch.setitem(sys.modules, "envs", None)
    assert env_vocabulary() == list(BASE_WORDS)


class _ToyEnv:
    instruction, legend = "Reach the flag.", "F is the flag, P is you."
    action_names = ["north", "south"]
    max_turns, max_actions_per_turn = 3, 1

    def reset(self, seed=None):
        return f"P.{seed}.F", {}

    def vocabulary(self):
        return ["Flag planted."]


def test_env_vocabulary_covers_env_text_and_protocol(monkeypatch):
    toy = types.SimpleNamespace(make=lambda name: _ToyEnv(), registered=lambda: ["toy"])
    monkeypatch.setitem(sys.modules, "envs", toy)
    tokenizer = build_tiny_tokenizer(env_vocabulary(["toy"]))
    text = "Reach the flag. Available actions: north, south\nTurn 1:\nState:\nP.2.F Reward planted"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids


def test_prompts_sharing_a_prefix_generate_as_if_prefilled_alone(policy):
    """Search's look-ahead probes share a long conversation: its prefill is shared
    (sampling.prefill), with a padding gap in the cache, and changes nothing."""
    long, short = prompts(policy.codec)
    endings = [policy.codec.encode(t) for t in ("up up", "down left", "right right right")]
    family = [long + e for e in endings]
    assert sampling.shared_runs(family + [short]) == [(0, 3, len(long)), (3, 4, len(short) - 2)]
    params = SamplingParams(temperature=0, max_new_tokens=6, stop=())
    together = policy.generate(family + [short], 2, params)
    for prompt, group in zip(family + [short], together):
        alone = policy.generate([prompt], 1, params)[0][0]
        assert group[0].token_ids == group[1].token_ids == alone.token_ids
        assert group[0].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=6, stop=(), seed=3)
    plain = sampling.MIN_SHARED_TOKENS
    try:
        sampling.MIN_SHARED_TOKENS = 10**9  # sharing off: one plain left-padded prefill
        unshared = policy.generate(family + [short], 2, sampled)
    finally:
        sampling.MIN_SHARED_TOKENS = plain
    shared = policy.generate(family + [short], 2, sampled)
    assert [[c.token_ids for c in g] for g in shared] == [[c.token_ids for c in g] for g in unshared]

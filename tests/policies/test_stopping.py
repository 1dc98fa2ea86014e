"""Generation stops on every end id the model names (issue 10, point 9)."""

import torch

from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.codecs import ByteCodec, HFCodec
from tsr_cli.policies.fake import FakeLogitsPolicy
from tsr_cli.policies.hf import HFPolicy, generation_stop_ids
from tsr_cli.policies.sampling import sample
from tsr_cli.policies.tiny import build_tiny_tokenizer, make_tiny_model

CODEC = ByteCodec()
WORDS = ["up down left right", "State: P G"]


def test_sample_stops_on_any_of_several_stop_ids():
    fake = FakeLogitsPolicy(script="abcXdef", strength=50.0)
    params = SamplingParams(temperature=0.0, max_new_tokens=20, stop=())
    prompts = [CODEC.encode("hi")]
    run = lambda stop_ids: sample(fake.forward, prompts, 1, params, torch.Generator(), stop_ids,
                                  CODEC.decode)[0][0]
    assert run({CODEC.eos_token_id}).text == "abcXdef"
    second = run({CODEC.eos_token_id, ord("X")})
    assert second.text == "abcX" and second.finish == "stop"


def test_hf_codec_stops_on_the_generation_config_list_and_the_tokenizer_eos():
    tokenizer = build_tiny_tokenizer(WORDS)
    end_of_text = tokenizer.convert_tokens_to_ids("[UNK]")  # stands in for Qwen's <|endoftext|>
    codec = HFCodec(tokenizer, extra_stop_ids=[tokenizer.eos_token_id, end_of_text])
    assert codec.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert codec.stop_token_ids == {codec.eos_token_id, end_of_text}


def test_hf_policy_reads_every_eos_id_of_its_generation_config():
    tokenizer = build_tiny_tokenizer(WORDS)
    model = make_tiny_model(tokenizer, seed=0)
    up = tokenizer.convert_tokens_to_ids("up")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, up]  # a list, as Qwen2.5's
    assert set(generation_stop_ids(model)) == {tokenizer.eos_token_id, up}
    policy = HFPolicy(model, tokenizer, seed=0)
    assert up in policy.codec.stop_token_ids
    # make every id a stop id: each completion is then exactly one token long
    model.generation_config.eos_token_id = list(range(len(tokenizer)))
    policy = HFPolicy(model, tokenizer, seed=0)
    prompt = policy.codec.encode(policy.codec.render([{"role": "user", "content": "up"}], True))
    out = policy.generate([prompt], 4, SamplingParams(max_new_tokens=10, stop=()))
    assert [len(c.token_ids) for c in out[0]] == [1, 1, 1, 1]
    assert all(c.finish == "stop" for c in out[0])


def test_hf_policy_context_length_is_the_models_position_limit():
    tokenizer = build_tiny_tokenizer(WORDS)
    policy = HFPolicy(make_tiny_model(tokenizer, seed=0, context=96), tokenizer)
    assert policy.context_length == 96

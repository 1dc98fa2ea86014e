from hypothesis import given, settings
from hypothesis import strategies as st

from tsr_cli.agent.parse import parse_response


def test_think_and_answer():
    p = parse_response("<think>go up</think><answer>Up || LEFT </answer>", 2)
    assert p.parts == ("up", "left") and p.has_answer and p.has_think and p.dropped == 0


def test_last_answer_block_wins():
    p = parse_response("<answer>down</answer> no wait <answer>right</answer>", 2)
    assert p.parts == ("right",)


def test_keeps_at_most_k_parts():
    p = parse_response("<answer>up || up || left</answer>", 2)
    assert p.parts == ("up", "up") and p.dropped == 1


def test_missing_answer_block_is_a_format_error():
    p = parse_response("<think>hmm</think> up", 2)
    assert p.parts == () and not p.has_answer


def test_unclosed_answer_is_not_an_answer():
    assert not parse_response("<answer>up", 2).has_answer


def test_spaced_tags_from_word_level_tokenizers():
    assert parse_response("< answer > up || left < / answer >", 2).parts == ("up", "left")


def test_empty_answer_has_no_parts():
    p = parse_response("<answer> </answer>", 2)
    assert p.has_answer and p.parts == ()


def test_empty_part_is_kept_so_it_counts_as_unknown():
    assert parse_response("<answer>up ||</answer>", 2).parts == ("up", "")


@settings(max_examples=500, deadline=None)
@given(st.text(), st.integers(min_value=-3, max_value=10))
def test_parser_never_raises(text, k):
    p = parse_response(text, k)
    assert len(p.parts) <= max(k, 0)
    assert all(part == part.strip().lower() for part in p.parts)


tags = st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "||", "up", " ", "\n", "<", ">"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(tags, st.text(max_size=5)), max_size=30))
def test_parser_never_raises_on_tag_soup(pieces):
    p = parse_response("".join(pieces), 2)
    assert len(p.parts) <= 2


def test_open_ended_answer_counts_only_when_prefilled():
    assert parse_response("<answer>up || left", 2, open_ended=True).parts == ("up", "left")
    assert not parse_response("<answer>up || left", 2).has_answer
    assert parse_response("<answer>down</answer> trailing", 2, open_ended=True).parts == ("down",)
    assert parse_response("<answer>down || left\nmore text", 2, open_ended=True).parts == ("down", "left")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=4))
def test_open_ended_parser_never_raises(text, k):
    assert len(parse_response("<answer>" + text, k, open_ended=True).parts) <= k

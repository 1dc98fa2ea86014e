"""The tiny tokenizer knows the words an environment shows after reset (env.vocabulary())."""

import envs
from tsr_cli.policies.tiny import build_tiny_tokenizer, env_vocabulary


def unknown(tokenizer, text):
    return [t for t in tokenizer.tokenize(text) if tokenizer.convert_tokens_to_ids(t) == tokenizer.unk_token_id]


def test_webshop_items_and_controls_are_in_the_vocabulary():
    env = envs.make("webshop")
    tokenizer = build_tiny_tokenizer(env_vocabulary(["webshop"]))
    product = env.catalogue.products[0]
    value = next(iter(product["options"].values()))[0] if product["options"] else "buy now"
    for text in (product["Title"], f"click[{product['asin']}]", f"click[{value}]", "click[buy now]", "click[next >]"):
        assert unknown(tokenizer, text) == [], text


def test_grid_envs_add_nothing_beyond_their_reset_pages():
    assert envs.make("sokoban").vocabulary() == [] and envs.make("frozenlake").vocabulary() == []


def test_a_product_id_is_one_token_and_other_texts_split_as_before(monkeypatch):
    """WebShop's ASINs are words of their own; every other text's pieces are what the pattern
    without the ASIN rule gives, so the grid envs' tokenizers (and their runs) are unchanged."""
    import tsr_cli.policies.tiny as tiny

    env = envs.make("webshop")
    tokenizer = build_tiny_tokenizer(env_vocabulary(["webshop"]))
    asin = env.catalogue.products[0]["asin"]
    assert tokenizer.tokenize(f"click[{asin}]") == ["click", "[", asin, "]"]
    assert tokenizer.tokenize("price 70.00") == ["price", "7", "0", ".", "0", "0"]  # numbers: digit by digit
    texts = [*env_vocabulary(["sokoban"]), *env_vocabulary(["frozenlake"]), envs.make("sokoban").reset(seed=3)[0],
             envs.make("frozenlake").reset(seed=3)[0]]
    with_rule = [tiny._pre_tokenizer().pre_tokenize_str(text) for text in texts]
    monkeypatch.setattr(tiny, "_PIECES", tiny._PIECES.removeprefix(tiny._ASIN + "|"))
    assert [tiny._pre_tokenizer().pre_tokenize_str(text) for text in texts] == with_rule

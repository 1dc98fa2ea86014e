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

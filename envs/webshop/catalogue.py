"""A `Catalogue`: products, prices and shuffled goals, built once and shared read-only.

`load_catalogue()` returns the default generated catalogue (no download);
`load_catalogue(data_dir=...)` reads WebShop's real files. Both are cached at
module level by their arguments, so every environment and every clone made
with the same arguments shares one catalogue (and, through its `key`, one
search index). A catalogue deep-copies to itself: cloning an environment
never copies products.
"""

from __future__ import annotations

import functools
import os
import random
import string
from typing import Sequence

from envs.webshop.data import process_products, product_prices, read_webshop_files
from envs.webshop.goals import human_goals, shuffle_goals, split_indices, synthetic_goals

#: fixed page text that observations may contain besides catalogue text
PAGE_CHARSET = frozenset(string.printable) - frozenset("\t\r\x0b\x0c")


class Catalogue:
    """Products (WebShop's record format), their sampled prices and the shuffled goal list.

    Treat it as read-only: environments and clones share it.
    """

    def __init__(self, key: str, products: list[dict], prices: dict[str, float], goals: list[dict]):
        if not goals:
            raise ValueError(f"catalogue {key} has no goals: no product has an instruction")
        self.key = key
        self.products = products
        self.by_asin = {p["asin"]: p for p in products}
        self.prices = prices
        self.goals = goals
        #: the catalogue's product-type search phrases (its `query` values), sorted
        self.search_phrases = tuple(sorted({p["query"] for p in products}))
        self.charset = frozenset(_catalogue_characters(products, goals)) | PAGE_CHARSET
        self.max_page_length = _max_page_length(products, goals)

    def split(self, name: str) -> range:
        """Goal indices of a split: "test" 0-499, "validation" 500-1499, "train" the rest, or "all"."""
        return split_indices(len(self.goals), name)

    def __deepcopy__(self, memo: dict) -> "Catalogue":
        return self

    def __copy__(self) -> "Catalogue":
        return self

    def __repr__(self) -> str:
        return f"Catalogue({self.key!r}, {len(self.products)} products, {len(self.goals)} goals)"


def build_catalogue(
    key: str,
    raw_records: list[dict],
    attributes: dict,
    human_instructions: dict | None = None,
    goal_source: str = "synthetic",
    seed: int = 0,
) -> Catalogue:
    """Process raw WebShop records into a catalogue with prices and shuffled goals (seeded)."""
    if goal_source not in ("synthetic", "human"):
        raise ValueError(f"goal_source must be 'synthetic' or 'human', got {goal_source!r}")
    if goal_source == "human" and human_instructions is None:
        raise ValueError("human goals need items_human_ins.json in the data folder")
    products = process_products(raw_records, attributes, human_instructions)
    rng = random.Random(seed)
    prices = product_prices(products, rng)
    make_goals = synthetic_goals if goal_source == "synthetic" else human_goals
    return Catalogue(key, products, prices, shuffle_goals(make_goals(products, prices, rng)))


@functools.lru_cache(maxsize=8)
def load_catalogue(
    data_dir: str | None = None,
    goal_source: str = "synthetic",
    num_products: int | None = None,
    seed: int = 0,
) -> Catalogue:
    """The shared catalogue: generated when `data_dir` is None, else read from WebShop's files.

    num_products: keep only the first N products (as WebShop's `num_products`);
    for the generated catalogue it is the number generated (default 594:
    22 of each of 27 product types).
    seed: the RNG for range prices and price bounds (and for generation).
    """
    if data_dir is None:
        from envs.webshop.generated import generate_catalogue_records

        raw, attributes = generate_catalogue_records(num_products=num_products, seed=seed)
        key = f"generated:n={len(raw)}:seed={seed}:goals={goal_source}"
        return build_catalogue(key, raw, attributes, None, goal_source, seed)
    data_dir = os.path.realpath(os.path.expanduser(data_dir))
    raw, attributes, human = read_webshop_files(data_dir)
    raw = raw[:num_products] if num_products is not None else raw
    key = f"files:{data_dir}:n={len(raw)}:seed={seed}:goals={goal_source}"
    return build_catalogue(key, raw, attributes, human, goal_source, seed)


def _catalogue_characters(products: Sequence[dict], goals: Sequence[dict]) -> set[str]:
    """Every character of the catalogue text that pages show."""
    chars: set[str] = set()
    for p in products:
        for field in ("asin", "Title", "Description", "Price", "Rating", "query"):
            chars.update(str(p.get(field, "")))
        for bullet in p["BulletPoints"]:
            chars.update(str(bullet))
        for name, values in p["options"].items():
            chars.update(name)
            for value in values:
                chars.update(value)
        for review in p.get("Reviews") or []:
            chars.update("".join(str(v) for v in review.values()))
    for goal in goals:
        chars.update(goal["instruction_text"])
    return chars


def _max_page_length(products: Sequence[dict], goals: Sequence[dict]) -> int:
    """An upper bound on any page's text: ten products' worth of text, the instruction and actions."""
    longest = max(_product_text_length(p) for p in products)
    instruction = max(len(g["instruction_text"]) for g in goals)
    return 10 * longest + 3 * instruction + 2_000


def _product_text_length(product: dict) -> int:
    """Characters a product can put on a page, with room for separators and action syntax."""
    fields = sum(len(str(product.get(f, ""))) + 10 for f in ("asin", "Title", "Description", "Price", "Rating"))
    bullets = sum(len(b) + 10 for b in product["BulletPoints"])
    options = sum(len(n) + sum(len(v) + 20 for v in vs) for n, vs in product["options"].items())
    reviews = sum(len(str(v)) + 10 for r in product.get("Reviews") or [] for v in r.values())
    return fields + bullets + 2 * options + reviews

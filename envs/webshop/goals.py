"""Goals built the way WebShop builds them (web_agent_site/engine/goal.py), and the splits.

A synthetic goal comes from a product with an instruction: one goal per
combination of its option values, each with the instruction text, the option
text (" with color: black, and size: large") and a price bound. The bound is
drawn from the multiples of 10 just above the product's price: two of the
first four are sampled and the larger kept; above $990 there is no bound.
Human goals (items_human_ins.json) keep their own instruction and options.

The goal list is shuffled with `random.seed(233)` as WebShop's SimServer does,
so for the same goal count the permutation is the original's. Splits are by
index in the shuffled list, as in WebShop's experiments: 0-499 test,
500-1499 validation, the rest train.

Departure: the price bounds come from a seeded `random.Random`, where the
original uses the unseeded global RNG (so its bounds change every run).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
NO_PRICE_BOUND = 1_000_000
SHUFFLE_SEED = 233
SPLITS = {"test": (0, 500), "validation": (500, 1500), "train": (1500, None)}


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """(price_upper, instruction suffix) for a product costing `price`."""
    candidates = [p for p in PRICE_RANGE if p > price][:4]
    if len(candidates) < 2:
        return NO_PRICE_BOUND, ""
    _, upper = sorted(rng.sample(candidates, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def synthetic_goals(products: list[dict], prices: dict[str, float], rng: random.Random) -> list[dict]:
    """WebShop's `get_synthetic_goals`: one goal per option combination of each instructed product."""
    goals, attribute_counts = [], defaultdict(int)
    for product in products:
        if product.get("instruction_text") is None:
            continue
        upper, price_text = price_bound(prices[product["asin"]], rng)
        for goal_options in option_combinations(product["options"]):
            option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
            option_text = " with " + option_text if option_text else ""
            goals.append(_goal(product, f"{product['instruction_text']}{option_text}{price_text}",
                               product["instruction_attributes"], goal_options, upper))
            for attribute in product["instruction_attributes"]:
                attribute_counts[attribute] += 1
    for goal in goals:
        goal["weight"] = sum(1.0 / attribute_counts[a] for a in goal["attributes"]) / len(goal["attributes"])
    return goals


def human_goals(products: list[dict], prices: dict[str, float], rng: random.Random) -> list[dict]:
    """WebShop's `get_human_goals`: one goal per human-written instruction with attributes."""
    goals = []
    for product in products:
        for instruction in product.get("instructions", []):
            if not instruction["instruction_attributes"]:
                continue
            upper, price_text = price_bound(prices[product["asin"]], rng)
            goals.append(_goal(product, instruction["instruction"].strip(".") + price_text,
                               instruction["instruction_attributes"], instruction["instruction_options"], upper))
    for goal in goals:
        goal["weight"] = 1
    return goals


def option_combinations(options: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every choice of one value per option name, names sorted (an empty dict if none)."""
    names = sorted(options)
    return [dict(zip(names, combo)) for combo in itertools.product(*(options[n] for n in names))]


def _goal(product: dict, instruction_text: str, attributes, goal_options, price_upper: float) -> dict:
    return {
        "asin": product["asin"],
        "category": product["category"],
        "query": product["query"],
        "name": product["Title"],
        "product_category": product["product_category"],
        "instruction_text": instruction_text,
        "attributes": attributes,
        "price_upper": price_upper,
        "goal_options": goal_options,
    }


def shuffle_goals(goals: list[dict]) -> list[dict]:
    """The fixed shuffle of WebShop's SimServer (`random.seed(233); random.shuffle(goals)`)."""
    shuffled = list(goals)
    random.Random(SHUFFLE_SEED).shuffle(shuffled)
    return shuffled


def split_indices(num_goals: int, split: str) -> range:
    """Goal indices of `split` ("test", "validation", "train" or "all")."""
    if split == "all":
        return range(num_goals)
    if split not in SPLITS:
        raise ValueError(f"unknown WebShop split {split!r}; choose one of {', '.join([*SPLITS, 'all'])}")
    start, stop = SPLITS[split]
    return range(min(start, num_goals), num_goals if stop is None else min(stop, num_goals))

"""WebShop data: the real-file loader, goal building, splits, the generated catalogue, search."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re

import pytest

from envs.webshop.catalogue import Catalogue, load_catalogue
from envs.webshop.data import find_data_file, parse_options, parse_pricing, process_products
from envs.webshop.generated import TYPES, generate_catalogue_records
from envs.webshop.goals import NO_PRICE_BOUND, PRICE_RANGE, price_bound, shuffle_goals, split_indices
from envs.webshop.reward import get_reward
from envs.webshop.search_engine import SEARCH_RETURN_N, product_document, s_stem, search_engine, tokenize

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "webshop")
needs_data = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="../shared/webshop/ is absent")
PROCESSED_FIELDS = ("Title", "Description", "BulletPoints", "options", "Price", "pricing", "Attributes", "query")


@pytest.fixture(scope="module")
def generated() -> Catalogue:
    return load_catalogue()


# ---------------------------------------------------------------- real files


@needs_data
def test_loader_reproduces_webshops_processed_fields():
    """The shared sample stores WebShop's own load-time fields next to the raw ones."""
    cat = load_catalogue(DATA_DIR)
    with open(os.path.join(DATA_DIR, "items_shuffle_100.json")) as f:
        stored = {r["asin"]: r for r in json.load(f)}
    assert len(cat.products) == 100
    for asin, product in cat.by_asin.items():
        for field in PROCESSED_FIELDS:
            assert product[field] == stored[asin][field], (asin, field)


@needs_data
def test_real_goals_are_built_like_webshops():
    cat = load_catalogue(DATA_DIR)
    with open(os.path.join(DATA_DIR, "items_ins_v2_1000.json")) as f:
        table = json.load(f)
    instructed = [p for p in cat.products if table.get(p["asin"], {}).get("instruction")]
    expected = sum(math.prod(len(v) for v in p["options"].values()) for p in instructed)
    assert len(cat.goals) == expected == 501
    for goal in cat.goals:
        product = cat.by_asin[goal["asin"]]
        options = ", and ".join(f"{k}: {v}" for k, v in goal["goal_options"].items())
        assert goal["instruction_text"].startswith(table[goal["asin"]]["instruction"])
        assert (" with " + options) in goal["instruction_text"] or not options
        assert goal["attributes"] == table[goal["asin"]]["instruction_attributes"]
        assert sorted(goal["goal_options"]) == sorted(product["options"])
        _check_price_bound(cat.prices[goal["asin"]], goal)
    assert [len(cat.split(s)) for s in ("test", "validation", "train")] == [500, 1, 0]


@needs_data
def test_human_goals_need_their_file():
    with pytest.raises(ValueError, match="items_human_ins"):
        load_catalogue(DATA_DIR, goal_source="human")


def test_human_goals_from_a_data_folder(tmp_path, generated):
    raw, table = generate_catalogue_records(num_products=30, seed=1)
    human = {raw[0]["asin"]: [{"instruction": "i want a thing.", "instruction_attributes": ["x"],
                               "instruction_options": ["black"]},
                              {"instruction": "no attributes", "instruction_attributes": [], "instruction_options": []}]}
    for name, data in (("items_shuffle_30.json", raw), ("items_ins_v2_30.json", table),
                       ("items_human_ins.json", human)):
        (tmp_path / name).write_text(json.dumps(data))
    cat = load_catalogue(str(tmp_path), goal_source="human")
    assert len(cat.goals) == 1
    goal = cat.goals[0]
    assert goal["goal_options"] == ["black"] and goal["attributes"] == ["x"]
    assert re.fullmatch(r"i want a thing(, and price lower than \d+\.00 dollars)?", goal["instruction_text"])


def test_ambiguous_or_missing_files_are_explained(tmp_path):
    (tmp_path / "items_shuffle_1.json").write_text("[]")
    (tmp_path / "items_shuffle_2.json").write_text("[]")
    with pytest.raises(ValueError, match="several"):
        find_data_file(str(tmp_path), "items_shuffle*.json")
    assert find_data_file(str(tmp_path), "items_ins_v2*.json") is None
    with pytest.raises(FileNotFoundError):
        load_catalogue(str(tmp_path / "nowhere"))


def test_raw_fields_are_processed_like_webshop():
    assert parse_pricing("$19.99$27.99") == ([19.99, 27.99], "$19.99 to $27.99")
    assert parse_pricing("$5.00 - $7.50") == ([5.0, 7.5], "$5.0 to $7.5")
    assert parse_pricing("$1,299.00") == ([1299.0], "$1299.0")
    assert parse_pricing("") == ([100.0], "$100.0")
    options, images = parse_options({"Color": [{"value": " Black/White ", "image": "u"}], "Size": None})
    assert options == {"color": ["black | white"]} and images == {"black | white": "u"}
    records = [{"asin": "B01", "name": "n", "full_description": "d", "small_description": "one",
                "pricing": "$3", "customization_options": "", "query": " Dresses ", "images": ["i"]},
               {"asin": "B01"}, {"asin": "nan"}, {"asin": "B0123456789"}]
    [product] = process_products(records, {})
    assert product["BulletPoints"] == ["one"] and product["Attributes"] == ["DUMMY_ATTR"]
    assert product["query"] == "dresses" and product["instruction_text"] is None


# ---------------------------------------------------------------- goals and splits


def _check_price_bound(price: float, goal: dict) -> None:
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) < 2:
        assert goal["price_upper"] == NO_PRICE_BOUND and "price lower than" not in goal["instruction_text"]
    else:
        assert goal["price_upper"] in above[1:]
        assert goal["instruction_text"].endswith(f", and price lower than {goal['price_upper']:.2f} dollars")


@pytest.mark.parametrize("price", [0.5, 9.99, 10.0, 19.99, 350.0, 975.0, 985.0, 2000.0])
def test_price_bound_takes_the_larger_of_two_of_the_four_multiples_above(price):
    bounds = {price_bound(price, random.Random(s))[0] for s in range(200)}
    above = [p for p in PRICE_RANGE if p > price][:4]
    assert bounds == (set(above[1:]) if len(above) >= 2 else {NO_PRICE_BOUND})


def test_shuffle_is_webshops_seed_233_permutation():
    goals = [{"i": i} for i in range(50)]
    expected = list(goals)
    random.seed(233)
    random.shuffle(expected)
    assert shuffle_goals(goals) == expected and goals == [{"i": i} for i in range(50)]


def test_splits_by_goal_index():
    assert split_indices(2000, "test") == range(0, 500)
    assert split_indices(2000, "validation") == range(500, 1500)
    assert split_indices(2000, "train") == range(1500, 2000)
    assert split_indices(700, "validation") == range(500, 700) and len(split_indices(700, "train")) == 0
    assert split_indices(10, "all") == range(10)
    with pytest.raises(ValueError, match="split"):
        split_indices(10, "dev")


# ---------------------------------------------------------------- the generated catalogue


def test_generated_catalogue_is_realistic_and_in_webshops_format(generated):
    assert len(generated.products) >= 500
    assert {p["category"] for p in generated.products} == {"beauty", "fashion", "garden", "electronics", "grocery"}
    assert len(generated.split("train")) > 0 and len(generated.split("validation")) == 1000
    per_query = {q: sum(p["query"] == q for p in generated.products) for q in generated.search_phrases}
    assert len(per_query) == len(TYPES) and min(per_query.values()) >= 20  # many look-alikes per type
    for product in generated.products:
        assert re.fullmatch(r"B0[A-Z0-9]{8}", product["asin"])
        assert product["Title"] and product["Description"] and product["BulletPoints"]
        assert set(product["Attributes"]) and " › " in product["product_category"]
        assert all(values for values in product["options"].values())
    with_options = sum(bool(p["options"]) for p in generated.products)
    assert with_options > 0.7 * len(generated.products)


def test_generated_catalogue_is_deterministic():
    assert generate_catalogue_records(seed=0) == generate_catalogue_records(seed=0)
    assert generate_catalogue_records(seed=0) != generate_catalogue_records(seed=1)


def test_generated_instructions_read_like_webshops(generated):
    for goal in generated.goals[:300]:
        assert re.fullmatch(r"Find me .+", goal["instruction_text"])
        assert goal["query"] in goal["instruction_text"]
        for attribute in goal["attributes"]:
            assert attribute in goal["instruction_text"]
        _check_price_bound(generated.prices[goal["asin"]], goal)


def test_buying_the_goal_item_with_the_goal_options_earns_one(generated):
    """No option value trips WebShop's colour normalisation in the generated catalogue."""
    for goal in generated.goals:
        product = generated.by_asin[goal["asin"]]
        assert get_reward(product, goal, generated.prices[goal["asin"]], dict(goal["goal_options"])) == 1.0


def test_option_choice_matters(generated):
    """Most goals have options, and a wrong choice of one costs reward."""
    goal = next(g for g in generated.goals if len(g["goal_options"]) == 2)
    product = generated.by_asin[goal["asin"]]
    combos = [dict(zip(product["options"], c)) for c in itertools.product(*product["options"].values())]
    rewards = {get_reward(product, goal, generated.prices[goal["asin"]], c) for c in combos}
    assert 1.0 in rewards and min(rewards) < 1.0
    assert sum(bool(g["goal_options"]) for g in generated.goals) > 0.9 * len(generated.goals)


def test_catalogues_are_cached_and_never_copied(generated):
    import copy

    assert load_catalogue() is generated
    assert copy.deepcopy(generated) is generated and copy.copy(generated) is generated


# ---------------------------------------------------------------- search


def test_search_finds_the_goal_item_from_its_instruction(generated):
    engine = search_engine(generated)
    ranks = []
    for index in generated.split("validation"):
        goal = generated.goals[index]
        hits = engine.search(goal["instruction_text"])
        assert len(hits) <= SEARCH_RETURN_N and len(set(hits)) == len(hits)
        ranks.append(hits.index(goal["asin"]) if goal["asin"] in hits else SEARCH_RETURN_N)
    assert sum(r < SEARCH_RETURN_N for r in ranks) / len(ranks) > 0.99


def test_search_only_returns_items_sharing_a_term(generated):
    engine = search_engine(generated)
    assert engine.search("the of and") == () and engine.search("qwertyuiop") == ()
    hits = engine.search("garden hoses")
    assert hits and all({"garden", "hose"} & set(tokenize(product_document(generated.by_asin[a]))) for a in hits)
    assert generated.by_asin[hits[0]]["query"] == "garden hoses"
    assert engine.search("Garden   HOSES") == hits  # case and spacing do not matter


def test_search_engine_is_built_once_per_catalogue(generated):
    assert search_engine(generated) is search_engine(load_catalogue())


def test_plural_folding():
    assert [s_stem(w) for w in "dresses shoes batteries watches boxes glass jeans".split()] == [
        "dress", "shoe", "battery", "watch", "box", "glass", "jean"]
    assert tokenize("The Women's Dresses, for a party!") == ["women", "dress", "party"]

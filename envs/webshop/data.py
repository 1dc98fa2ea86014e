"""Products in WebShop's own record format, and the loader for WebShop's real data files.

`process_products` is WebShop's `load_products` (web_agent_site/engine/engine.py)
without its file reading: it turns raw scraped records (`items_shuffle*.json`)
plus the attribute/instruction table (`items_ins_v2*.json`) into the product
records that the pages, the search index and the reward read:
`asin, name, query, category, product_category, Title, Description,
BulletPoints, Attributes, options, pricing, Price, Rating, Reviews, ...`,
plus `instruction_text`/`instruction_attributes` (synthetic goals) or
`instructions` (human goals).

Deliberate departures from the original:
- prices of products with a price range are drawn from a seeded
  `random.Random`, not the global RNG, so a catalogue is reproducible;
- a product missing from the attribute table gets no instruction (the
  original raises a KeyError);
- records that were already processed (a list in `pricing`, as in the
  shared 100-product sample) are accepted as they are.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
from decimal import Decimal

DUMMY_ATTRIBUTE = "DUMMY_ATTR"
DEFAULT_PRICE = 100.0


def process_products(raw_records: list[dict], attributes: dict, human_attributes: dict | None = None) -> list[dict]:
    """WebShop's `load_products` loop: skip bad or repeated ASINs, derive the display fields."""
    products, seen = [], set()
    for raw in raw_records:
        asin = raw["asin"]
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        products.append(process_product(raw, attributes.get(asin, {}), (human_attributes or {}).get(asin)))
    return products


def process_product(raw: dict, attribute_entry: dict, human_instructions: list | None = None) -> dict:
    """One product record as WebShop's `load_products` builds it."""
    product = dict(raw)
    pricing, price_tag = parse_pricing(raw.get("pricing"))
    options, option_to_image = parse_options(raw.get("customization_options"))
    bullets = raw.get("small_description", "")
    product.update(
        Title=raw["name"],
        Description=raw["full_description"],
        Reviews=raw.get("Reviews") or [],
        Rating=raw.get("Rating", "N.A."),
        BulletPoints=bullets if isinstance(bullets, list) else [bullets],
        pricing=pricing,
        Price=price_tag,
        options=options,
        option_to_image=option_to_image,
        Attributes=attribute_entry.get("attributes", [DUMMY_ATTRIBUTE]),
        instruction_text=attribute_entry.get("instruction"),
        instruction_attributes=attribute_entry.get("instruction_attributes"),
        MainImage=(raw.get("images") or [None])[0],
        query=raw["query"].lower().strip(),
    )
    if human_instructions is not None:
        product["instructions"] = human_instructions
    return product


def parse_pricing(pricing) -> tuple[list[float], str]:
    """(`pricing` list, `Price` tag): "$19.99$27.99" -> ([19.99, 27.99], "$19.99 to $27.99")."""
    if not pricing:
        return [DEFAULT_PRICE], f"${DEFAULT_PRICE}"
    if isinstance(pricing, str):
        pricing = [float(Decimal(re.sub(r"[^\d.]", "", p))) for p in pricing.split("$")[1:]]
    pricing = [float(p) for p in pricing]
    if len(pricing) == 1:
        return pricing, f"${pricing[0]}"
    return pricing[:2], f"${pricing[0]} to ${pricing[1]}"


def parse_options(customization_options) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """Option name -> values, lower-cased, with "/" shown as " | " (WebShop's convention)."""
    options, option_to_image = {}, {}
    if not customization_options:
        return options, option_to_image
    for name, contents in customization_options.items():
        if contents is None:
            continue
        values = []
        for content in contents:
            value = content["value"].strip().replace("/", " | ").lower()
            values.append(value)
            option_to_image[value] = content.get("image")
        options[name.lower()] = values
    return options, option_to_image


def product_prices(products: list[dict], rng: random.Random) -> dict[str, float]:
    """WebShop's `generate_product_prices`: the single price, or a uniform draw within the range."""
    prices = {}
    for product in products:
        pricing = product["pricing"]
        if not pricing:
            prices[product["asin"]] = DEFAULT_PRICE
        elif len(pricing) == 1:
            prices[product["asin"]] = pricing[0]
        else:
            prices[product["asin"]] = rng.uniform(*pricing[:2])
    return prices


# ---------------------------------------------------------------- real files


def find_data_file(data_dir: str, pattern: str, explicit: str | None = None) -> str | None:
    """The one file in `data_dir` matching `pattern` (or `explicit`); None if there is none."""
    if explicit is not None:
        path = explicit if os.path.isabs(explicit) else os.path.join(data_dir, explicit)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"WebShop data file {path} does not exist")
        return path
    matches = sorted(glob.glob(os.path.join(data_dir, pattern)))
    if len(matches) > 1:
        names = ", ".join(os.path.basename(m) for m in matches)
        raise ValueError(f"{data_dir} holds several {pattern} files ({names}); choose one by name")
    return matches[0] if matches else None


def read_webshop_files(
    data_dir: str,
    products_file: str | None = None,
    attributes_file: str | None = None,
    human_file: str | None = None,
) -> tuple[list[dict], dict, dict | None]:
    """(raw product records, attribute table, human instructions or None) from a WebShop data folder."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"WebShop data folder {data_dir} does not exist")
    products_path = find_data_file(data_dir, "items_shuffle*.json", products_file)
    attributes_path = find_data_file(data_dir, "items_ins_v2*.json", attributes_file)
    if products_path is None or attributes_path is None:
        raise FileNotFoundError(f"{data_dir} needs an items_shuffle*.json and an items_ins_v2*.json file")
    human_path = find_data_file(data_dir, "items_human_ins*.json", human_file)
    human = _read_json(human_path) if human_path else None
    return _read_json(products_path), _read_json(attributes_path), human


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)

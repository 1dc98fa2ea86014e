"""The default catalogue: deterministically generated products in WebShop's raw record format.

WebShop's real catalogue (1.18M scraped products) needs a download. This
generator writes records shaped like `items_shuffle*.json` (raw fields:
`asin, name, full_description, small_description, pricing,
customization_options, product_category, query, category, ...`) and an
attribute table shaped like `items_ins_v2*.json` (`attributes, instruction,
instruction_attributes`), so they go through the same processing, goal
building and reward as real data.

Product types are realistic (WebShop's five top categories: beauty, fashion,
garden/home, electronics, grocery). Many products share a type, attributes
and option values, so search and option choice matter. Instructions are
written the way WebShop's synthetic ones are: "Find me {adjective
attributes} {query} with {feature attributes} for {use attributes}".

Option values are chosen so that WebShop's colour normalisation never turns a
value into a colour that is not one of its own words (e.g. no "standard",
which normalises to "tan"): buying the goal product with the goal options
then always earns reward 1, as it should.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

PRODUCTS_PER_TYPE = 22
INSTRUCTED_SHARE = 0.75  # share of products with an instruction (real data: about 40%)


@dataclass(frozen=True)
class ProductType:
    """One product type (a WebShop `query`) and the vocabulary its products draw from."""

    query: str
    category: str
    path: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]  # attributes written before the query in instructions
    features: tuple[str, ...]  # attributes written after "with"
    uses: tuple[str, ...]  # attributes written after "for"
    options: dict = field(default_factory=dict)  # option name -> value pool
    price: tuple[float, float] = (10.0, 50.0)

    @property
    def audience(self) -> str:
        """"Women's" or "Men's" for gendered types: real titles say whom they are for."""
        first = self.query.split()[0]
        return first.capitalize() if first in ("women's", "men's") else ""


SIZES_CLOTHES = ("x-small", "small", "medium", "large", "x-large", "xx-large")
SIZES_MEN = ("small", "medium", "large", "x-large", "xx-large", "3x-large")
SHOE_SIZES = ("5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11")
PACKS = ("pack of 2", "pack of 3", "pack of 6", "pack of 12")

TYPES = (
    # ---- fashion
    ProductType("women's dresses", "fashion", "Clothing, Shoes & Jewelry › Women › Clothing › Dresses",
                ("Midi Dress", "Maxi Dress", "Mini Dress", "Wrap Dress", "Shift Dress"),
                ("machine wash", "hand wash", "loose fit", "slim fit"),
                ("polyester spandex", "short sleeve", "long sleeve", "v neck", "elastic waist", "side pockets"),
                ("daily wear", "wedding guest", "beach vacation", "office work"),
                {"size": SIZES_CLOTHES, "color": ("black", "navy blue", "wine red", "light blue", "pink",
                                                  "white", "floral", "green", "yellow")},
                (15, 60)),
    ProductType("men's t-shirts", "fashion", "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
                ("T-Shirt", "Crew Neck Tee", "Graphic Tee", "Pocket Tee"),
                ("machine wash", "slim fit", "regular fit", "moisture wicking"),
                ("cotton jersey", "short sleeve", "long sleeve", "crew neck", "tagless collar"),
                ("gym workout", "everyday wear", "running"),
                {"size": SIZES_MEN, "color": ("black", "white", "heather grey", "navy", "charcoal",
                                              "olive green", "royal blue", "burgundy")},
                (8, 35)),
    ProductType("women's running shoes", "fashion",
                "Clothing, Shoes & Jewelry › Women › Shoes › Athletic › Running",
                ("Running Shoe", "Sneaker", "Trail Runner", "Walking Shoe"),
                ("non slip", "lightweight", "breathable", "slip on"),
                ("rubber sole", "memory foam", "mesh upper", "arch support", "lace closure"),
                ("road running", "gym training", "walking"),
                {"size": SHOE_SIZES, "color": ("black white", "grey", "pink", "all black", "blue", "purple")},
                (30, 120)),
    ProductType("men's jeans", "fashion", "Clothing, Shoes & Jewelry › Men › Clothing › Jeans",
                ("Jeans", "Straight Jeans", "Slim Jeans", "Relaxed Jeans"),
                ("slim fit", "relaxed fit", "straight leg", "machine wash"),
                ("stretch denim", "button fly", "zip fly", "five pocket"),
                ("everyday wear", "work"),
                {"size": ("30w x 30l", "30w x 32l", "32w x 30l", "32w x 32l", "34w x 32l", "36w x 32l",
                          "38w x 34l"),
                 "color": ("dark indigo", "light blue", "black", "medium stone", "rinse")},
                (25, 90)),
    ProductType("women's handbags", "fashion", "Clothing, Shoes & Jewelry › Women › Handbags & Wallets",
                ("Tote Bag", "Crossbody Bag", "Shoulder Bag", "Satchel"),
                ("lightweight", "large capacity", "water resistant"),
                ("vegan leather", "zipper closure", "adjustable strap", "multiple pockets"),
                ("work", "travel", "school"),
                {"color": ("black", "brown", "beige", "burgundy", "khaki", "grey", "white"),
                 "size": ("small", "medium", "large")},
                (20, 90)),
    # ---- beauty
    ProductType("shampoo & conditioner", "beauty",
                "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos",
                ("Shampoo", "Shampoo and Conditioner Set", "Conditioner"),
                ("sulfate free", "paraben free", "cruelty free", "color safe"),
                ("argan oil", "coconut oil", "tea tree", "biotin", "keratin"),
                ("damaged hair", "dry scalp", "hair growth", "curly hair"),
                {"size": ("8 fl oz", "12 fl oz", "16 fl oz", "33.8 fl oz"),
                 "scent": ("unscented", "lavender", "citrus", "eucalyptus", "coconut")},
                (8, 40)),
    ProductType("face moisturizers", "beauty", "Beauty & Personal Care › Skin Care › Face › Creams & Moisturizers",
                ("Face Moisturizer", "Night Cream", "Day Cream", "Gel Moisturizer"),
                ("fragrance free", "oil free", "non comedogenic", "dermatologist tested"),
                ("hyaluronic acid", "vitamin c", "retinol", "niacinamide", "ceramides"),
                ("sensitive skin", "dry skin", "oily skin", "fine lines"),
                {"size": ("1.7 oz", "2.5 oz", "3.4 oz")},
                (10, 60)),
    ProductType("lips makeup", "beauty", "Beauty & Personal Care › Makeup › Lips › Lipstick",
                ("Lipstick", "Liquid Lipstick", "Lip Gloss", "Lip Stain"),
                ("long lasting", "cruelty free", "highly pigmented", "easy apply"),
                ("matte finish", "vitamin e", "shea butter"),
                ("everyday makeup", "party"),
                {"color": ("ruby red", "nude pink", "berry", "coral", "mauve", "plum", "rose", "brick red")},
                (5, 30)),
    ProductType("nail polish", "beauty", "Beauty & Personal Care › Foot, Hand & Nail Care › Nail Polish",
                ("Nail Polish", "Gel Nail Polish", "Nail Polish Set"),
                ("quick dry", "long lasting", "non toxic", "chip resistant"),
                ("glossy finish", "gel formula"),
                ("nail art", "manicure"),
                {"color": ("classic red", "baby pink", "glitter silver", "midnight blue", "clear", "french white"),
                 "size": ("0.5 fl oz", "pack of 3", "pack of 6")},
                (5, 30)),
    ProductType("hair dryers", "beauty", "Beauty & Personal Care › Hair Care › Styling Tools › Hair Dryers",
                ("Hair Dryer", "Blow Dryer", "Travel Hair Dryer"),
                ("lightweight", "foldable", "ionic", "fast drying"),
                ("diffuser", "concentrator nozzle", "ceramic technology", "cool shot"),
                ("curly hair", "travel", "salon"),
                {"color": ("black", "white", "pink", "purple")},
                (20, 120)),
    ProductType("women's fragrance", "beauty", "Beauty & Personal Care › Fragrance › Women's › Eau de Parfum",
                ("Eau de Parfum", "Perfume", "Body Mist"),
                ("long lasting", "travel size", "alcohol free"),
                ("floral notes", "vanilla", "musk", "natural ingredients"),
                ("daily wear", "evening"),
                {"size": ("1 fl oz", "1.7 fl oz", "3.4 fl oz")},
                (15, 90)),
    # ---- garden: home & kitchen
    ProductType("console tables", "garden",
                "Home & Kitchen › Furniture › Living Room Furniture › Tables › Sofa & Console Tables",
                ("Console Table", "Sofa Table", "Entryway Table", "Hallway Table"),
                ("easy assemble", "space saving", "heavy duty"),
                ("solid wood", "metal frame", "storage shelf", "drawers"),
                ("living room", "entryway", "hallway"),
                {"color": ("walnut", "black", "white", "oak", "espresso", "grey"),
                 "size": ("39 inch", "47 inch", "55 inch")},
                (60, 300)),
    ProductType("throw pillow covers", "garden", "Home & Kitchen › Home Décor › Decorative Pillows, Inserts & Covers",
                ("Throw Pillow Cover", "Cushion Cover", "Pillowcase"),
                ("machine washable", "super soft", "decorative"),
                ("hidden zipper", "velvet", "linen blend"),
                ("couch", "bedroom", "living room"),
                {"size": ("16 x 16 inch", "18 x 18 inch", "20 x 20 inch"),
                 "color": ("sage green", "mustard yellow", "navy blue", "blush pink", "cream", "grey")},
                (8, 35)),
    ProductType("bed sheets", "garden", "Home & Kitchen › Bedding › Sheets & Pillowcases › Sheet & Pillowcase Sets",
                ("Sheet Set", "Bed Sheets", "Fitted Sheet"),
                ("deep pocket", "wrinkle free", "breathable", "machine washable"),
                ("egyptian cotton", "microfiber", "bamboo"),
                ("hot sleepers", "guest room"),
                {"size": ("twin", "full", "queen", "king", "california king"),
                 "color": ("white", "grey", "navy", "ivory", "sage", "light blue")},
                (20, 120)),
    ProductType("coffee makers", "garden", "Home & Kitchen › Kitchen & Dining › Coffee, Tea & Espresso › Coffee Makers",
                ("Coffee Maker", "Drip Coffee Machine", "Single Serve Coffee Maker"),
                ("programmable", "compact", "easy clean"),
                ("glass carafe", "stainless steel", "reusable filter", "auto shut off"),
                ("home", "office", "kitchen"),
                {"color": ("black", "silver", "white", "red"), "size": ("5 cup", "8 cup", "12 cup")},
                (25, 150)),
    ProductType("desk lamps", "garden", "Tools & Home Improvement › Lighting & Ceiling Fans › Lamps & Shades › Desk Lamps",
                ("Desk Lamp", "LED Desk Lamp", "Table Lamp"),
                ("dimmable", "eye caring", "touch control", "foldable"),
                ("usb charging port", "adjustable arm", "color temperature modes"),
                ("home office", "reading", "bedroom"),
                {"color": ("black", "white", "silver")},
                (15, 70)),
    ProductType("garden hoses", "garden", "Patio, Lawn & Garden › Watering Equipment › Garden Hoses",
                ("Garden Hose", "Expandable Hose", "Water Hose"),
                ("kink free", "heavy duty", "lightweight", "leak proof"),
                ("brass fittings", "spray nozzle"),
                ("lawn", "car washing", "patio"),
                {"size": ("25 ft", "50 ft", "75 ft", "100 ft"), "color": ("green", "blue", "black")},
                (15, 80)),
    # ---- electronics
    ProductType("bluetooth headphones", "electronics",
                "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear Headphones",
                ("Headphones", "Over-Ear Headphones", "Wireless Headset"),
                ("noise cancelling", "foldable", "lightweight", "hands free"),
                ("bluetooth 5.0", "built in microphone", "soft earmuffs", "40h playtime"),
                ("travel", "work from home", "gaming"),
                {"color": ("black", "white", "blue", "rose gold")},
                (20, 150)),
    ProductType("phone cases", "electronics", "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
                ("Phone Case", "Protective Case", "Wallet Case"),
                ("shockproof", "slim", "anti scratch"),
                ("card holder", "kickstand", "raised edges", "screen protector"),
                ("wireless charging", "drop protection"),
                {"color": ("clear", "black", "navy blue", "purple", "pink", "red"),
                 "style": ("iphone 13", "iphone 13 pro", "iphone 14", "iphone 14 pro max")},
                (8, 30)),
    ProductType("hdmi cables", "electronics", "Electronics › Television & Video › Accessories › Cables › HDMI Cables",
                ("HDMI Cable", "High Speed HDMI Cord", "HDMI 2.1 Cable"),
                ("high speed", "gold plated", "braided"),
                ("ethernet", "4k support", "8k support"),
                ("gaming consoles", "home theater", "monitors"),
                {"size": ("3 ft", "6 ft", "10 ft", "15 ft", "25 ft"), "color": ("black", "grey")},
                (6, 30)),
    ProductType("power banks", "electronics", "Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks",
                ("Portable Charger", "Power Bank", "Battery Pack"),
                ("fast charging", "compact", "high capacity"),
                ("usb c", "led display", "dual output"),
                ("iphone", "camping", "travel"),
                {"size": ("10000mah", "20000mah", "26800mah"), "color": ("black", "white", "blue")},
                (15, 60)),
    ProductType("computer mice", "electronics", "Electronics › Computers & Accessories › Computer Accessories › Mice",
                ("Wireless Mouse", "Ergonomic Mouse", "Gaming Mouse"),
                ("ergonomic", "silent click", "rechargeable", "plug play"),
                ("usb receiver", "adjustable dpi", "side buttons"),
                ("laptop", "office", "gaming"),
                {"color": ("black", "grey", "white", "pink")},
                (10, 60)),
    ProductType("smart watches", "electronics", "Electronics › Wearable Technology › Smartwatches",
                ("Smart Watch", "Fitness Tracker", "Smartwatch"),
                ("waterproof", "long battery life", "lightweight"),
                ("heart rate monitor", "sleep tracking", "gps", "blood oxygen"),
                ("android phones", "iphone", "swimming"),
                {"color": ("black", "silver", "rose gold", "navy"), "size": ("40mm", "44mm")},
                (25, 200)),
    # ---- grocery
    ProductType("coffee beans", "grocery", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Whole Coffee Beans",
                ("Whole Bean Coffee", "Ground Coffee", "Coffee Beans"),
                ("certified organic", "fair trade", "non gmo"),
                ("medium roast", "dark roast", "arabica beans"),
                ("espresso", "cold brew", "french press"),
                {"flavor name": ("original", "vanilla", "hazelnut", "caramel"),
                 "size": ("12 ounce", "2 pound", "pack of 2")},
                (8, 40)),
    ProductType("snack bars", "grocery", "Grocery & Gourmet Food › Snacks & Sweets › Snack Foods › Bars › Protein Bars",
                ("Protein Bars", "Snack Bars", "Granola Bars"),
                ("gluten free", "high protein", "low sugar", "keto friendly", "non gmo"),
                ("whole grains", "dark chocolate", "peanut butter", "almonds"),
                ("breakfast", "post workout", "on the go snacks"),
                {"flavor name": ("chocolate chip", "peanut butter", "cookies & cream", "almond", "strawberry"),
                 "size": ("pack of 6", "pack of 12", "pack of 24")},
                (10, 40)),
    ProductType("herbal tea", "grocery", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Herbal",
                ("Herbal Tea", "Tea Bags", "Loose Leaf Tea"),
                ("caffeine free", "certified organic", "non gmo"),
                ("chamomile", "ginger", "hibiscus", "natural ingredients"),
                ("sleep", "digestion", "relaxation"),
                {"flavor name": ("chamomile", "ginger lemon", "berry hibiscus", "honey vanilla"),
                 "size": ("20 count", "40 count", "pack of 6")},
                (4, 25)),
    ProductType("cooking oils", "grocery", "Grocery & Gourmet Food › Pantry Staples › Cooking Oils",
                ("Extra Virgin Olive Oil", "Avocado Oil", "Cooking Oil"),
                ("cold pressed", "certified organic", "non gmo"),
                ("glass bottle", "polyphenols"),
                ("cooking", "salad dressing", "baking"),
                {"size": ("16.9 fl oz", "25.4 fl oz", "33.8 fl oz", "pack of 2")},
                (8, 35)),
)

BRANDS = (
    "Lumera", "Northvale", "Okira", "Bellwood", "Trevio", "Aldana", "Kestrel", "Marlowe", "Quenby", "Sorrel",
    "Veyra", "Halden", "Corvina", "Pelham", "Tamsin", "Orrin", "Brisa", "Calloway", "Denholm", "Evora",
    "Fennick", "Garrow", "Ishani", "Juniper", "Kaito", "Lindqvist", "Mirabel", "Nolan", "Ostrava", "Prisma",
)

REVIEW_TEMPLATES = (
    ("Exactly as described", 5, "Great {noun}. The {attr} really shows and it arrived quickly."),
    ("Good value", 4, "Nice {noun} for the price. I like the {attr}."),
    ("Not bad", 3, "The {noun} is fine, but the {attr} is not as good as I hoped."),
    ("Would buy again", 5, "Second time buying this {noun}; love the {attr}."),
)


def generate_catalogue_records(num_products: int | None = None, seed: int = 0) -> tuple[list[dict], dict]:
    """(raw product records, attribute table) in WebShop's file formats, deterministic in `seed`."""
    count = num_products if num_products is not None else PRODUCTS_PER_TYPE * len(TYPES)
    rng = random.Random(f"webshop-catalogue-{seed}")
    asins: set[str] = set()
    records, attributes = [], {}
    for i in range(count):
        kind = TYPES[i % len(TYPES)]
        asin = _new_asin(rng, asins)
        record, entry = _product(kind, asin, rng)
        records.append(record)
        attributes[asin] = entry
    rng.shuffle(records)  # like items_shuffle: types interleaved in random order
    return records, attributes


def _new_asin(rng: random.Random, taken: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _product(kind: ProductType, asin: str, rng: random.Random) -> tuple[dict, dict]:
    """One raw record and its attribute-table entry."""
    brand, noun = rng.choice(BRANDS), rng.choice(kind.nouns)
    roles = {"adjectives": _pick(rng, kind.adjectives, 1, 2), "features": _pick(rng, kind.features, 1, 3),
             "uses": _pick(rng, kind.uses, 0, 1)}
    attributes = roles["adjectives"] + roles["features"] + roles["uses"]
    record = {
        "asin": asin,
        "name": _title(brand, noun, kind, roles),
        "full_description": _description(brand, noun, roles),
        "small_description": [f"{a.title()}: {_bullet(a, noun)}" for a in attributes],
        "pricing": _pricing(kind, rng),
        "customization_options": _options(kind, rng),
        "product_category": kind.path,
        "query": kind.query,
        "category": kind.category,
        "images": [f"https://example.invalid/{asin}.jpg"],
        "average_rating": "",
        "Rating": f"{rng.uniform(3.2, 5.0):.1f}" if rng.random() < 0.7 else "N.A.",
        "Reviews": _reviews(noun, attributes, rng),
    }
    entry = {"attributes": attributes}
    if rng.random() < INSTRUCTED_SHARE:
        chosen = [a for a in attributes if rng.random() < 0.8] or attributes[:1]
        entry["instruction_attributes"] = chosen
        entry["instruction"] = _instruction(kind.query, roles, chosen)
    return record, entry


def _pick(rng: random.Random, pool: tuple[str, ...], low: int, high: int) -> list[str]:
    return rng.sample(pool, min(len(pool), rng.randint(low, high)))


def _title(brand: str, noun: str, kind: ProductType, roles: dict) -> str:
    words = [brand, kind.audience, " ".join(a.title() for a in roles["adjectives"]), noun]
    if roles["features"]:
        words.append("with " + ", ".join(a.title() for a in roles["features"]))
    if roles["uses"]:
        words.append("for " + roles["uses"][0].title())
    return " ".join(w for w in words if w)


def _description(brand: str, noun: str, roles: dict) -> str:
    text = f"The {brand} {noun.lower()} is {_join(roles['adjectives'])}."
    if roles["features"]:
        text += f" It comes with {_join(roles['features'])}."
    if roles["uses"]:
        text += f" Made for {_join(roles['uses'])}."
    return text + " Backed by our 30-day satisfaction guarantee."


def _bullet(attribute: str, noun: str) -> str:
    return f"our {noun.lower()} is designed around {attribute}, tested for quality and comfort."


def _join(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pricing(kind: ProductType, rng: random.Random) -> str:
    low = round(rng.uniform(*kind.price), 0) - 0.01
    if rng.random() < 0.3:
        high = round(low * rng.uniform(1.1, 1.6), 0) - 0.01
        return f"${low:.2f} - ${high:.2f}"
    return f"${low:.2f}"


def _options(kind: ProductType, rng: random.Random) -> dict | str:
    """Raw `customization_options`: name -> [{"value", "image"}], or "" for no options."""
    if not kind.options or rng.random() < 0.15:
        return ""
    out = {}
    for name, pool in kind.options.items():
        if len(out) and rng.random() < 0.3:
            continue
        count = rng.randint(2, min(len(pool), 5))
        picked = sorted(rng.sample(range(len(pool)), count))
        out[name.title()] = [{"value": pool[i].title() if name == "color" else pool[i], "image": None}
                             for i in picked]
    return out


def _reviews(noun: str, attributes: list[str], rng: random.Random) -> list[dict]:
    reviews = []
    for title, score, body in rng.sample(REVIEW_TEMPLATES, rng.randint(0, 2)):
        attr = rng.choice(attributes)
        reviews.append({"title": title, "score": score, "body": body.format(noun=noun.lower(), attr=attr)})
    return reviews


def _instruction(query: str, roles: dict, chosen: list[str]) -> str:
    """WebShop's synthetic instruction shape: "Find me {adj} {query} with {features} for {uses}"."""
    adjectives = [a for a in roles["adjectives"] if a in chosen]
    features = [a for a in roles["features"] if a in chosen]
    uses = [a for a in roles["uses"] if a in chosen]
    text = "Find me " + (", ".join(adjectives) + " " if adjectives else "") + query
    if features:
        text += " with " + ", ".join(features)
    if uses:
        text += " for " + ", ".join(uses)
    return text

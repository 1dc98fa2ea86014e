"""WebShop's pages as immutable states, their clickable elements and their text.

Pages and transitions follow WebShop's SimServer and its text mode:
- search: the search bar; `search[query]` opens results page 1;
- results: 10 of the (at most 50) hits per page with `back to search`,
  `< prev` (page > 1) and `next >` (more hits), and each hit's ASIN;
- item: `back to search`, `< prev` (back to the results page), the option
  values, `description`, `features`, `reviews` and `buy now`;
- description / features / reviews: `back to search` and `< prev` (to the item);
- done: after `buy now`; nothing is clickable.
Entering a results page clears the open item and the selected options, as
the original's `search_results` does. Clicking an option value sets its
option (when two options share a value, the later option wins, as in the
original's `text_to_clickable`).

Text: the visible elements joined with " [SEP] ", WebShop's "simple" text
mode, with whitespace inside an element collapsed so the page is one line.
Departures from the original text: the item page says which options are
selected ("You have clicked x." as WebShop's rich text mode does), and every
page but done ends with its own line `Available actions: ...` listing the
actions legal now, lower-cased, separated by ", " (a ", " inside an element
is shown as ","; clicks match ignoring whitespace, so either works).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SEP = " [SEP] "
RESULTS_PER_PAGE = 10
ACTIONS_PREFIX = "Available actions: "
SUB_PAGES = ("description", "features", "reviews")

BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE, BUY_NOW = "Back to Search", "Next >", "< Prev", "Buy Now"


@dataclass(frozen=True)
class Page:
    """Where the shopper is. Immutable: a step makes a new Page, so clones share pages safely.

    kind:        "search", "results", "item", "description", "features", "reviews" or "done"
    query:       the last search's keywords
    hits:        ASINs the last search returned, best first (at most 50)
    page_num:    results page, from 1
    asin:        the open item (item and sub-pages)
    options:     selected (option name, value) pairs, one per name, in first-selection order
    suggestions: search queries listed as actions on the search page (see WebShopEnv)
    reward:      the purchase reward (done page)
    """

    kind: str = "search"
    query: str = ""
    hits: tuple[str, ...] = ()
    page_num: int = 1
    asin: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    suggestions: tuple[str, ...] = ()
    reward: float | None = None

    @property
    def selected(self) -> dict[str, str]:
        return dict(self.options)

    def with_option(self, name: str, value: str) -> "Page":
        chosen = self.selected
        chosen[name] = value
        return replace(self, options=tuple(chosen.items()))

    def page_hits(self) -> tuple[str, ...]:
        start = (self.page_num - 1) * RESULTS_PER_PAGE
        return self.hits[start:start + RESULTS_PER_PAGE]


def click_key(text: str) -> str:
    """How clicks are matched: lower-case, all whitespace removed."""
    return re.sub(r"\s+", "", text.lower())


def clickables(page: Page, product: dict | None) -> dict[str, tuple]:
    """Displayed text (lower-case) -> target, for every element clickable on `page`.

    Targets: ("search",), ("prev",), ("next",), ("item", asin),
    ("option", name, value), ("sub", name), ("buy",).
    """
    out: dict[str, tuple] = {}
    if page.kind in ("search", "done"):
        return out
    out[BACK_TO_SEARCH.lower()] = ("search",)
    if page.kind == "results":
        if page.page_num > 1:
            out[PREV_PAGE.lower()] = ("prev",)
        if page.page_num * RESULTS_PER_PAGE < len(page.hits):
            out[NEXT_PAGE.lower()] = ("next",)
        for asin in page.page_hits():
            out[asin.lower()] = ("item", asin)
        return out
    out[PREV_PAGE.lower()] = ("prev",)
    if page.kind == "item":
        for name, values in product["options"].items():
            for value in values:
                out.pop(value, None)  # the later option wins, and moves to its place
                out[value] = ("option", name, value)
        for sub in SUB_PAGES:
            out[sub] = ("sub", sub)
        out[BUY_NOW.lower()] = ("buy",)
    return out


def action_list(page: Page, product: dict | None) -> list[str]:
    """The actions legal on `page`, as the `Available actions` line lists them."""
    if page.kind == "search":
        return [f"search[{q}]" for q in page.suggestions]
    return [f"click[{text.replace(', ', ',')}]" for text in clickables(page, product)]


def render(page: Page, catalogue, instruction_text: str) -> str:
    """The page's text observation, ending with its `Available actions` line (except done)."""
    product = catalogue.by_asin.get(page.asin) if page.asin else None
    elements = _elements(page, catalogue, product, instruction_text)
    text = SEP.join(e for e in (" ".join(str(x).split()) for x in elements) if e)
    if page.kind == "done":
        return text
    return text + "\n" + ACTIONS_PREFIX + ", ".join(action_list(page, product))


def _elements(page: Page, catalogue, product: dict | None, instruction_text: str) -> list:
    head = ["Instruction:", instruction_text]
    if page.kind == "search":
        return ["WebShop", *head, "Search"]
    if page.kind == "done":
        return ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", f"{page.reward:.4g}"]
    if page.kind == "results":
        return [*head, BACK_TO_SEARCH, *_results(page, catalogue)]
    head = [*head, BACK_TO_SEARCH, PREV_PAGE]
    if page.kind == "item":
        return [*head, *_item(page, product)]
    return [*head, *_sub_page(page.kind, product)]


def _results(page: Page, catalogue) -> list:
    out = [f"Page {page.page_num} (Total results: {len(page.hits)})"]
    if page.page_num > 1:
        out.append(PREV_PAGE)
    if page.page_num * RESULTS_PER_PAGE < len(page.hits):
        out.append(NEXT_PAGE)
    for asin in page.page_hits():
        product = catalogue.by_asin[asin]
        out += [asin, product["Title"], product["Price"]]
    return out


def _item(page: Page, product: dict) -> list:
    out = [f"You have clicked {value}." for _, value in page.options]
    for name, values in product["options"].items():
        out += [name, *values]
    out += [product["Title"], f"Price: {product['Price']}", f"Rating: {product['Rating']}",
            "Description", "Features", "Reviews", BUY_NOW]
    return out


def _sub_page(kind: str, product: dict) -> list:
    if kind == "description":
        return [product["Description"]]
    if kind == "features":
        return list(product["BulletPoints"])
    return [part for r in product.get("Reviews") or [] for part in (r.get("title", ""), r.get("score", ""),
                                                                   r.get("body", ""))]

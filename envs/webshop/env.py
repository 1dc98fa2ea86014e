"""WebShop (Yao et al. 2022) as a text environment: search, browse, choose options, buy.

Actions are WebShop's `search[keywords]` and `click[element]`, lower-cased
before parsing. An action that is not legal on the current page (a search
away from the search page, a click on something the page does not show) is
a no-op with reward 0 and `action_is_valid=False`. The episode ends on
`click[buy now]` with WebShop's reward (see `reward.py`); success means
reward == 1. `info` then carries the reward's components.

Goals: `reset(seed=s)` picks a goal from the split (`split=`):
- "auto" (default): seeds from HELD_OUT_SEED_START (1,000,000, where `tsr`'s
  held-out evaluation seeds begin) take the test goals in order, other seeds
  the train goals (seed modulo their count), so training never sees a test goal;
- "test", "validation", "train" or "all": seed modulo the split's size;
- `reset(options={"goal_index": i})` takes goal i of the whole shuffled list.
Without a seed the goal is drawn with `np_random`.

The search page's `Available actions` line lists concrete queries so that a
policy that picks from the list (the `random` policy) can shop at all. They
use only what the shopper can already see, never hidden goal fields: two
word windows of the displayed instruction (3 and 5 words from random
positions) and three of the catalogue's product-type phrases, drawn with
`np_random` each time the search page opens. Any `search[...]` is legal there.

Deliberate departures from WebShop's text environment:
- search is only legal on the search page (the original accepts it
  anywhere, though only the search page shows a search bar);
- clicks match ignoring whitespace, so word-level tokenizers that decode
  "x - large" still hit "x-large";
- no step limit: the agent protocol's turn budget (9 turns of 1 action,
  WebShop's default in the TSR code) ends episodes.
"""

from __future__ import annotations

import copy
import re

import numpy as np
from gymnasium import spaces

from envs.base import TextEnv
from envs.webshop.catalogue import load_catalogue
from envs.webshop.heuristic import purchase_info, purchase_reward, state_value
from envs.webshop.pages import Page, click_key, clickables, render
from envs.webshop.search_engine import search_engine

HELD_OUT_SEED_START = 1_000_000
MAX_ACTION_LENGTH = 500
_ACTION = re.compile(r"\s*(search|click)\s*\[(.*)\]\s*", re.S)
WINDOW_SIZES = (3, 5)
CATALOGUE_SUGGESTIONS = 3


class WebShopEnv(TextEnv):
    """Shop for the product the instruction describes.

    Args:
        data_dir: a folder with WebShop's real files (items_shuffle*.json,
            items_ins_v2*.json, optionally items_human_ins.json); None uses the
            generated default catalogue.
        split: "auto", "test", "validation", "train" or "all" (see the module docstring).
        goal_source: "synthetic" (WebShop's generated goals) or "human" (needs items_human_ins.json).
        num_products: keep the first N products (or generate N).
        catalogue_seed: seeds range prices, price bounds and the generated catalogue.
        render_mode: only "ansi" (text).
    """

    action_names = ["search[<query>]", "click[<element>]"]
    instruction = (
        "You are web shopping. The page shows an instruction that describes a product to buy. "
        "Search for it, open a matching item from the results, select the options the "
        "instruction asks for, and click buy now; buying ends the episode. Your reward says "
        "how well the purchase matches the instruction, its options and its price limit."
    )
    legend = (
        "Pages list their elements separated by [SEP]. Use search[<query>] on the search page and "
        "click[<element>] for an element the page lists, for example click[buy now]. The last line "
        "of each page lists the actions available now."
    )
    max_turns = 9
    max_actions_per_turn = 1

    def __init__(
        self,
        data_dir: str | None = None,
        split: str = "auto",
        goal_source: str = "synthetic",
        num_products: int | None = None,
        catalogue_seed: int = 0,
        render_mode: str | None = "ansi",
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be 'ansi' or None, got {render_mode!r}")
        if num_products is not None and (isinstance(num_products, bool) or not isinstance(num_products, int)
                                         or num_products < 1):
            raise ValueError(f"num_products must be a whole number >= 1 (or None for all), got {num_products!r}")
        self.render_mode = render_mode
        self.catalogue = load_catalogue(data_dir, goal_source, num_products, catalogue_seed)
        self.engine = search_engine(self.catalogue)
        if split != "auto" and not self.catalogue.split(split):  # fail now, not at the first reset
            raise self._empty(split)
        self.split = split
        charset = self.catalogue.charset
        self.observation_space = spaces.Text(max_length=self.catalogue.max_page_length, charset=charset)
        self.action_space = spaces.Text(max_length=MAX_ACTION_LENGTH, charset=charset)
        self.goal_index = 0
        self.page = Page()

    # -- gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self.goal_index = self._choose_goal(seed, options or {})
        self.page = Page("search", suggestions=self._suggestions())
        return self.render(), self._info(valid=True, effective=False)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if not isinstance(action, str):
            raise ValueError(f"a WebShop action is a string such as 'click[buy now]', got {action!r}")
        before = self.page
        target = self._target(action)
        if target is not None:
            self.page = self._follow(target)
        reward = self.page.reward if self.page.kind == "done" and before.kind != "done" else 0.0
        info = self._info(valid=target is not None, effective=self.page != before)
        if self.page.kind == "done" and before.kind != "done":
            info.update(purchase_info(self.catalogue, self.goal_index, self.page.asin, self.page.options))
        return self.render(), float(reward), self.page.kind == "done", False, info

    def render(self) -> str:
        return render(self.page, self.catalogue, self.goal["instruction_text"])

    @property
    def goal(self) -> dict:
        return self.catalogue.goals[self.goal_index]

    # -- actions

    def parse_action(self, text: str) -> str | None:
        """The action, lower-cased and stripped, if it is legal on the current page; else None."""
        action = text.strip().lower()
        return action if self._target(action) is not None else None

    def _target(self, action: str) -> tuple | None:
        """What `action` does on the current page, or None if it is not legal here."""
        match = _ACTION.fullmatch(action.lower())
        if match is None or self.page.kind == "done":
            return None
        verb, arg = match.group(1), " ".join(match.group(2).split())
        if verb == "search":
            return ("search_for", arg) if self.page.kind == "search" and arg else None
        by_key = {click_key(text): target for text, target in clickables(self.page, self._product()).items()}
        return by_key.get(click_key(arg)) if arg else None

    def _follow(self, target: tuple) -> Page:
        """The page a legal action leads to (WebShop's SimServer transitions)."""
        page, kind = self.page, target[0]
        if kind == "search_for":
            return Page("results", query=target[1], hits=self.engine.search(target[1]))
        if kind == "search":
            return Page("search", suggestions=self._suggestions())
        if kind == "next":
            return Page("results", query=page.query, hits=page.hits, page_num=page.page_num + 1)
        if kind == "prev":
            if page.kind == "results":
                return Page("results", query=page.query, hits=page.hits, page_num=page.page_num - 1)
            if page.kind == "item":
                return Page("results", query=page.query, hits=page.hits, page_num=page.page_num)
            return _at(page, "item")
        if kind == "item":
            return Page("item", query=page.query, hits=page.hits, page_num=page.page_num, asin=target[1])
        if kind == "option":
            return page.with_option(target[1], target[2])
        if kind == "sub":
            return _at(page, target[1])
        reward = purchase_reward(self.catalogue, self.goal_index, page.asin, page.options)
        return Page("done", asin=page.asin, options=page.options, reward=reward)

    def _product(self) -> dict | None:
        return self.catalogue.by_asin.get(self.page.asin) if self.page.asin else None

    # -- goals and suggestions

    def _choose_goal(self, seed: int | None, options: dict) -> int:
        if "goal_index" in options:
            index = int(options["goal_index"])
            if not 0 <= index < len(self.catalogue.goals):
                raise ValueError(f"goal_index must be in [0, {len(self.catalogue.goals)}), got {index}")
            return index
        split, offset = self.split, 0
        if split == "auto":
            held_out = seed is not None and seed >= HELD_OUT_SEED_START
            split, offset = ("test", HELD_OUT_SEED_START) if held_out else ("train", 0)
        indices = self.catalogue.split(split)
        if not indices:
            raise self._empty(split)
        if seed is None:
            return indices[int(self.np_random.integers(len(indices)))]
        return indices[(seed - offset) % len(indices)]

    def _empty(self, split: str) -> ValueError:
        return ValueError(f"the {split!r} split of {self.catalogue} is empty; choose split= "
                          "'test', 'validation', 'train' or 'all', or more products")

    def _suggestions(self) -> tuple[str, ...]:
        """Queries for the search page's action list (see the module docstring)."""
        words = self.goal["instruction_text"].lower().replace(",", " ").split()
        out = []
        for size in WINDOW_SIZES:
            start = int(self.np_random.integers(max(len(words) - size, 0) + 1))
            out.append(" ".join(words[start:start + size]))
        phrases = self.catalogue.search_phrases
        picks = self.np_random.choice(len(phrases), size=min(CATALOGUE_SUGGESTIONS, len(phrases)), replace=False)
        out += [" ".join(phrases[int(i)].replace(",", " ").split()) for i in picks]  # ", " separates actions
        return tuple(dict.fromkeys(q for q in out if q))

    # -- info and search support

    def _info(self, valid: bool, effective: bool) -> dict:
        return {
            "success": self.page.kind == "done" and self.page.reward == 1.0,
            "action_is_valid": bool(valid),
            "action_is_effective": bool(effective),
            "page": self.page.kind,
            "goal_index": self.goal_index,
        }

    def vocabulary(self) -> list[str]:
        """Every product's title, option values and ASIN, every goal's instruction, and the controls."""
        texts = ["click[back to search] click[< prev] click[next >] click[description] "
                 "click[features] click[reviews] click[buy now] search[]"]
        texts += [product["asin"] for product in self.catalogue.products]
        texts += [goal["instruction_text"] for goal in self.catalogue.goals]
        for product in self.catalogue.products:
            texts.append(product.get("Title", product.get("name", "")))
            for values in product.get("options", {}).values():
                texts.extend(values)
        return texts

    def heuristic(self) -> float:
        """Page progress plus how well the open item and options match the goal (see heuristic.py)."""
        return state_value(self.page, self.catalogue, self.goal_index)

    def clone(self, fresh_rng: bool = False, seed: int | None = None) -> "WebShopEnv":
        """An independent copy in microseconds: pages are immutable, and the catalogue, search
        engine and spaces are shared read-only, so only the RNG is copied."""
        twin = copy.copy(self)
        twin._np_random = np.random.default_rng(seed) if fresh_rng else copy.deepcopy(self._np_random)
        return twin


def _at(page: Page, kind: str) -> Page:
    """The same item with the same options, on another of its pages."""
    return Page(kind, query=page.query, hits=page.hits, page_num=page.page_num, asin=page.asin,
                options=page.options)

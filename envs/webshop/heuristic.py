"""WebShop's task heuristic for the `heuristic` scorer: page progress plus goal match.

The reward only arrives on purchase, so beam search and lookahead need a
signal before it. The value of a state (higher is better, in [0, 1]):

- search page:  0
- results page: 0.1 + 0.3 * the best reward reachable from a listed item
- item page:    0.2 + 0.3 * reachable(item) + 0.3 * reward(item, selected options)
- sub-page:     the item page's value - 0.01 (reading moves nothing forward)
- done:         0.2 + 0.3 * reachable(item) + 0.3 * reward + 0.02

`reward(item, options)` is WebShop's reward for buying the item now with the
options selected so far; `reachable(item)` is its reward with the options
that best match the goal (one value per option name, by the reward's own
fuzzy score). So selecting a goal option raises the value, a better item
beats a worse one, and buying beats waiting only by 0.02: a candidate that
fixes an option (worth at least 0.3 / (attributes + options + 1)) wins over
buying early, and buying wins over moves that change nothing.

Rewards are cached per (catalogue, goal, item, options): search revisits the
same few states constantly.
"""

from __future__ import annotations

import functools

from envs.webshop.reward import normalize_color, reward_info, token_set_ratio

RESULTS_BASE, ITEM_BASE = 0.1, 0.2
WEIGHT = 0.3
SUB_PAGE_PENALTY = 0.01
BUY_BONUS = 0.02


def state_value(page, catalogue, goal_index: int) -> float:
    """The heuristic value of `page` for goal `goal_index` (see the module docstring)."""
    if page.kind == "search":
        return 0.0
    if page.kind == "results":
        best = max((reachable_reward(catalogue, goal_index, a) for a in page.page_hits()), default=0.0)
        return RESULTS_BASE + WEIGHT * best
    value = ITEM_BASE + WEIGHT * reachable_reward(catalogue, goal_index, page.asin)
    if page.kind == "done":
        return value + WEIGHT * page.reward + BUY_BONUS
    value += WEIGHT * purchase_reward(catalogue, goal_index, page.asin, page.options)
    return value - (SUB_PAGE_PENALTY if page.kind != "item" else 0.0)


@functools.lru_cache(maxsize=200_000)
def purchase_reward(catalogue, goal_index: int, asin: str, options: tuple[tuple[str, str], ...]) -> float:
    """WebShop's reward for buying `asin` now with `options` selected."""
    return purchase_info(catalogue, goal_index, asin, options)["reward"]


def purchase_info(catalogue, goal_index: int, asin: str, options: tuple[tuple[str, str], ...]) -> dict:
    """The reward and its components for buying `asin` with `options`, at its sampled price."""
    return reward_info(catalogue.by_asin[asin], catalogue.goals[goal_index], catalogue.prices[asin], dict(options))


@functools.lru_cache(maxsize=200_000)
def reachable_reward(catalogue, goal_index: int, asin: str) -> float:
    """The reward for buying `asin` with the options that best match the goal."""
    return purchase_reward(catalogue, goal_index, asin, best_options(catalogue, goal_index, asin))


def best_options(catalogue, goal_index: int, asin: str) -> tuple[tuple[str, str], ...]:
    """Per option name, the value whose best fuzzy score against a goal option is highest."""
    goal_options = catalogue.goals[goal_index]["goal_options"]
    targets = [normalize_color(o) for o in (goal_options.items() if isinstance(goal_options, dict) else goal_options)]
    chosen = []
    for name, values in catalogue.by_asin[asin]["options"].items():
        if targets:
            score = {v: max(token_set_ratio(normalize_color(v), t) for t in targets) for v in values}
            chosen.append((name, max(values, key=score.get)))
    return tuple(chosen)

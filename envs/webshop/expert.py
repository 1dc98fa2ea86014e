"""A scripted expert shopper: it knows the goal and takes the shortest sensible path.

Search the instruction text, page through the results to the goal's item,
open it, click each goal option, buy. It reads the goal from the
environment, so it is an upper bound for the pages and search engine, not a
fair opponent; tests use it to check that goals are reachable in the turn
budget and that buying the goal item with the goal options earns reward 1.
"""

from __future__ import annotations

from envs.webshop.pages import BUY_NOW, NEXT_PAGE, PREV_PAGE


def expert_action(env) -> str:
    """The expert's next action in `env` (a reset `WebShopEnv`)."""
    page, goal = env.page, env.goal
    if page.kind == "search":
        return f"search[{goal['instruction_text']}]"
    if page.kind == "results":
        return _results_action(page, goal["asin"])
    if page.kind != "item" or page.asin != goal["asin"]:
        return f"click[{PREV_PAGE.lower()}]"
    for value in _goal_option_values(env.catalogue.by_asin[page.asin], goal):
        if value not in page.selected.values():
            return f"click[{value}]"
    return f"click[{BUY_NOW.lower()}]"


def _results_action(page, asin: str) -> str:
    # ASINs as the results page shows them (clicks match ignoring case): a word-level
    # tokenizer built from the pages can spell "B0EQNYV051", not "b0eqnyv051"
    if asin in page.page_hits():
        return f"click[{asin}]"
    if asin in page.hits[page.page_num * 10:]:
        return f"click[{NEXT_PAGE.lower()}]"
    if asin in page.hits:
        return f"click[{PREV_PAGE.lower()}]"
    hits = page.page_hits()  # the goal item was not found: take the top hit
    return f"click[{hits[0]}]" if hits else "click[back to search]"


def _goal_option_values(product: dict, goal: dict) -> list[str]:
    """The product's option values that the goal asks for."""
    wanted = goal["goal_options"]
    wanted = list(wanted.values()) if isinstance(wanted, dict) else list(wanted)
    offered = {v for values in product["options"].values() for v in values}
    return [v for v in wanted if v in offered]


def run_expert(env, *, seed: int | None = None, options: dict | None = None,
               max_steps: int | None = None) -> tuple[float, dict, int]:
    """Reset `env` and let the expert shop: (reward, last info, steps taken).

    max_steps defaults to the environment's turn budget (`max_turns`).
    """
    env.reset(seed=seed, options=options)
    limit = env.max_turns if max_steps is None else max_steps
    reward, info = 0.0, {}
    for step in range(1, limit + 1):
        _, reward, terminated, _, info = env.step(expert_action(env))
        if terminated:
            return reward, info, step
    return 0.0, info, limit

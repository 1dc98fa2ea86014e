"""The WebShop environment: pages, actions, goals, clones, the expert and the heuristic."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import envs
from envs.checker import check_clone, check_gymnasium_api, check_reset_determinism, check_step_determinism
from envs.webshop import WebShopEnv, expert_action, get_reward, run_expert, search_engine
from envs.webshop.env import HELD_OUT_SEED_START
from envs.webshop.pages import SEP
from tsr_cli.policies.random import available_actions

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "webshop")
needs_data = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="../shared/webshop/ is absent")


@pytest.fixture
def env() -> WebShopEnv:
    return envs.make("webshop")


def expert_actions(seed: int, **kwargs) -> list[str]:
    """The expert's actions from `seed`, then a few detours that exercise other pages."""
    shop = envs.make("webshop", **kwargs)
    shop.reset(seed=seed)
    actions = []
    while shop.page.kind != "done":
        actions.append(expert_action(shop))
        shop.step(actions[-1])
    detours = ["click[description]", "click[< prev]", "click[features]", "click[< prev]", "click[reviews]"]
    return actions[:2] + detours + ["click[< prev]", "click[next >]", "click[< prev]", "click[back to search]"] + actions


def open_goal_item(env: WebShopEnv, seed: int = 0) -> None:
    env.reset(seed=seed)
    env.step(expert_action(env))  # search
    while env.page.kind == "results":
        env.step(expert_action(env))


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("kwargs", [{}, {"split": "validation"}])
def test_passes_the_checker_with_real_shopping(kwargs):
    factory = lambda: envs.make("webshop", **kwargs)  # noqa: E731
    check_gymnasium_api(factory())
    check_reset_determinism(factory, range(6), expect_variety=True)
    for seed in range(3):
        actions = expert_actions(seed, **kwargs)
        check_step_determinism(factory, [seed], actions)
        check_clone(factory, seed, actions)


@needs_data
def test_passes_the_checker_on_real_data():
    factory = lambda: envs.make("webshop", data_dir=DATA_DIR, split="test")  # noqa: E731
    check_gymnasium_api(factory())
    check_reset_determinism(factory, range(4), expect_variety=True)
    check_clone(factory, 1, expert_actions(1, data_dir=DATA_DIR, split="test"))


def test_stepping_a_clone_leaves_the_original_untouched(env):
    open_goal_item(env, seed=4)
    before = (env.render(), env.page, env.goal_index, repr(env.np_random.bit_generator.state))
    twin = env.clone()
    for action in ("click[description]", "click[< prev]", "click[< prev]", "click[back to search]", "search[tea]"):
        twin.step(action)
    assert twin.page.kind == "results"
    assert (env.render(), env.page, env.goal_index, repr(env.np_random.bit_generator.state)) == before


def test_seeded_reset_is_deterministic_and_covers_the_splits():
    a, b = envs.make("webshop"), envs.make("webshop")
    assert a.reset(seed=11) == b.reset(seed=11)
    assert a.goal_index in a.catalogue.split("train")
    a.reset(seed=HELD_OUT_SEED_START + 3)
    assert a.goal_index == 3  # held-out seeds take the test goals in order
    v = envs.make("webshop", split="validation")
    v.reset(seed=2)
    assert v.goal_index == 502
    v.reset(options={"goal_index": 7})
    assert v.goal_index == 7
    with pytest.raises(ValueError, match="split"):
        envs.make("webshop", split="dev")


@needs_data
def test_empty_split_is_explained():
    env = envs.make("webshop", data_dir=DATA_DIR)  # 501 goals: no train split
    with pytest.raises(ValueError, match="empty"):
        env.reset(seed=0)
    assert env.reset(seed=HELD_OUT_SEED_START)[1]["goal_index"] == 0


def test_catalogue_and_index_are_shared_by_every_env_and_clone():
    a, b = envs.make("webshop"), envs.make("webshop")
    a.reset(seed=0)
    assert a.catalogue is b.catalogue and a.engine is b.engine is search_engine(a.catalogue)
    twin = a.clone()
    assert twin.catalogue is a.catalogue and twin.engine is a.engine


def test_clone_costs_well_under_a_millisecond(env):
    open_goal_item(env)
    start = time.perf_counter()
    for _ in range(1000):
        env.clone()
    assert (time.perf_counter() - start) / 1000 < 1e-3


# ---------------------------------------------------------------- pages and actions


def test_search_page_text_and_actions(env):
    obs, info = env.reset(seed=0)
    first, actions_line = obs.split("\n")
    assert first.startswith("WebShop [SEP] Instruction: [SEP] ") and first.endswith(" [SEP] Search")
    assert env.goal["instruction_text"] in first
    assert info == {"success": False, "action_is_valid": True, "action_is_effective": False,
                    "page": "search", "goal_index": env.goal_index}
    listed = available_actions(obs)
    assert 3 <= len(listed) <= 5 and all(a.startswith("search[") for a in listed)
    assert env.goal["asin"].lower() not in obs.lower()


def test_results_pages(env):
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("search[women's dresses]")
    assert (reward, terminated, info["page"], info["action_is_effective"]) == (0.0, False, "results", True)
    hits = env.page.hits
    assert len(hits) == 50 and "Page 1 (Total results: 50)" in obs
    assert f"{SEP}Next >{SEP}" in obs and "< Prev" not in obs
    for asin in hits[:10]:
        assert f"{SEP}{asin}{SEP}" in obs
    assert hits[10] not in obs
    obs = env.step("click[next >]")[0]
    assert "Page 2 (Total results: 50)" in obs and f"{SEP}< Prev{SEP}" in obs and hits[10] in obs
    for _ in range(3):
        env.step("click[next >]")
    assert env.page.page_num == 5 and "click[next >]" not in env.render()
    assert env.step("click[next >]")[4]["action_is_valid"] is False
    env.step("click[< prev]")
    assert env.page.page_num == 4
    obs = env.step("click[back to search]")[0]
    assert env.page.kind == "search" and obs.startswith("WebShop")


def test_item_options_sub_pages_and_buy(env):
    open_goal_item(env, seed=5)
    product, goal = env.catalogue.by_asin[env.page.asin], env.goal
    obs = env.render()
    assert f"{SEP}Price: {product['Price']}{SEP}" in obs and obs.split("\n")[0].endswith(f"{SEP}Buy Now")
    for name, values in product["options"].items():
        assert f"{SEP}{name}{SEP}{SEP.join(values)}" in obs
    name, value = next(iter(goal["goal_options"].items()))
    obs = env.step(f"click[{value}]")[0]
    assert env.page.selected == {name: value} and f"You have clicked {value}." in obs
    assert env.step(f"click[{value}]")[4]["action_is_effective"] is False  # already selected
    obs = env.step("click[description]")[0]
    assert env.page.kind == "description" and product["Description"].split()[0] in obs
    assert "click[buy now]" not in obs
    env.step("click[< prev]")
    assert env.page.kind == "item" and env.page.selected == {name: value}  # options survive sub-pages
    env.step("click[features]")
    assert all(" ".join(b.split()) in env.render() for b in product["BulletPoints"])
    env.step("click[< prev]")
    for other_value in list(goal["goal_options"].values())[1:]:
        env.step(f"click[{other_value}]")
    obs, reward, terminated, truncated, info = env.step("click[buy now]")
    assert terminated and not truncated and reward == 1.0 and info["success"]
    assert info["reward"] == 1.0 and {"r_type", "r_att", "query_match", "category_match", "title_score"} <= set(info)
    assert obs.startswith("Thank you for shopping with us!") and "Available actions" not in obs
    assert env.step("click[buy now]")[1:3] == (0.0, True)  # nothing after the purchase


def test_leaving_an_item_returns_to_its_results_page_and_clears_options(env):
    env.reset(seed=0)
    env.step("search[women's dresses]")
    env.step("click[next >]")
    asin = env.page.page_hits()[0]
    env.step(f"click[{asin}]")
    product = env.catalogue.by_asin[asin]
    if product["options"]:
        env.step(f"click[{next(iter(product['options'].values()))[0]}]")
    env.step("click[< prev]")
    assert (env.page.kind, env.page.page_num, env.page.options, env.page.asin) == ("results", 2, (), None)


def test_buying_another_item_earns_webshops_reward(env):
    env.reset(seed=3)
    env.step("search[coffee maker]")
    asin = next(a for a in env.page.page_hits() if a != env.goal["asin"])
    env.step(f"click[{asin}]")
    reward, info = env.step("click[buy now]")[1::3]
    product = env.catalogue.by_asin[asin]
    assert reward == get_reward(product, env.goal, env.catalogue.prices[asin], {}) == info["reward"]
    assert info["success"] is (reward == 1.0)


@pytest.mark.parametrize("action", [
    "click[buy now]",  # not on this page
    "click[nonexistent]",
    "search[]",
    "jump[somewhere]",
    "buy the dress",
    "",
])
def test_invalid_actions_are_no_ops(env, action):
    env.reset(seed=0)
    env.step("search[women's dresses]")
    before = env.render()
    obs, reward, terminated, truncated, info = env.step(action)
    assert (obs, reward, terminated, truncated) == (before, 0.0, False, False)
    assert info["action_is_valid"] is False and info["action_is_effective"] is False
    assert env.parse_action(action) is None


def test_search_is_only_legal_on_the_search_page(env):
    env.reset(seed=0)
    env.step("search[tea]")
    assert env.parse_action("search[coffee]") is None
    assert env.step("search[coffee]")[4]["action_is_valid"] is False


def test_actions_are_case_and_space_tolerant(env):
    env.reset(seed=0)
    assert env.parse_action("  SEARCH[Women's Dresses]  ") == "search[women's dresses]"
    env.step("Search[WOMEN'S DRESSES]")
    asin = env.page.page_hits()[0]
    env.step(f"CLICK[{asin.upper()}]")
    assert env.page.kind == "item"
    product = env.catalogue.by_asin[asin]
    value = next((v for vs in product["options"].values() for v in vs if "-" in v or " " in v), None)
    if value is not None:  # word-level tokenizers decode "x-large" as "x - large"
        env.step("click [ " + " ".join(value.replace("-", " - ").split()) + " ]")
        assert value in env.page.selected.values()
    assert env.step("Click[Buy Now]")[2] is True


@pytest.mark.parametrize("kwargs", [{}, pytest.param({"data_dir": DATA_DIR, "split": "test"}, marks=needs_data)])
def test_every_listed_action_is_legal_and_observations_fit_the_space(kwargs):
    env = envs.make("webshop", **kwargs)
    rng = np.random.default_rng(0)
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        for _ in range(12):
            assert env.observation_space.contains(obs)
            listed = available_actions(obs)
            assert listed and all(env.parse_action(a) is not None for a in listed)
            obs, _, terminated, _, info = env.step(listed[int(rng.integers(len(listed)))])
            assert info["action_is_valid"]
            if terminated:
                assert env.observation_space.contains(obs)
                break


# ---------------------------------------------------------------- expert and heuristic


def test_expert_succeeds_on_validation_goals_within_the_turn_budget():
    env = envs.make("webshop", split="validation")
    goals = env.catalogue.split("validation")
    results = [run_expert(env, seed=i) for i in range(len(goals))]
    success = sum(reward == 1.0 for reward, _, _ in results) / len(goals)
    assert success >= 0.95
    assert max(steps for _, _, steps in results) <= WebShopEnv.max_turns


@needs_data
def test_expert_on_real_data_is_capped_only_by_webshops_quirks():
    env = envs.make("webshop", data_dir=DATA_DIR, split="test")
    rewards = [run_expert(env, seed=i)[0] for i in range(0, 500, 5)]
    assert sum(r == 1.0 for r in rewards) >= 90 and min(rewards) > 0.6


def test_heuristic_rises_along_the_expert_path(env):
    env.reset(seed=6)
    values = [env.heuristic()]
    while env.page.kind != "done":
        env.step(expert_action(env))
        values.append(env.heuristic())
    assert values == sorted(values) and len(set(values)) == len(values)
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.2 + 0.3 + 0.3 + 0.02)


def test_heuristic_prefers_the_goal_item_and_its_options(env):
    open_goal_item(env, seed=8)
    goal_item = env.heuristic()
    reading = env.clone()
    reading.step("click[description]")
    assert reading.heuristic() < goal_item
    name, value = next(iter(env.goal["goal_options"].items()))
    product = env.catalogue.by_asin[env.page.asin]
    wrong = next(v for v in product["options"][name] if v != value)
    right_option, wrong_option = env.clone(), env.clone()
    right_option.step(f"click[{value}]")
    wrong_option.step(f"click[{wrong}]")
    assert right_option.heuristic() > goal_item >= wrong_option.heuristic()
    buy_now = env.clone()
    buy_now.step("click[buy now]")
    assert right_option.heuristic() > buy_now.heuristic() > goal_item  # fix an option before buying
    other = env.clone()
    other.step("click[back to search]")
    other.step(f"search[{next(q for q in env.catalogue.search_phrases if q != env.goal['query'])}]")
    other.step(f"click[{other.page.page_hits()[0]}]")
    assert other.heuristic() < goal_item

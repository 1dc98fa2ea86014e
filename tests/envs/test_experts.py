"""The experts: FrozenLake's value iteration against hand-worked values and a plain loop,
Sokoban's shortest solutions from the render, WebShop's replay of the agent's page."""

import itertools

import numpy as np
import pytest
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv as GymFrozenLake

import envs
from envs.experts import ExpertView, make_expert, plan_lake, read_lake
from envs.frozenlake import build_lake
from envs.sokoban import parse_render, render_rooms
from envs.sokoban_solver import solve
from envs.webshop import expert_action


def start_value(desc, turns, k, success_rate=0.8):
    lake = build_lake(tuple(desc), True, success_rate)
    return plan_lake(lake, turns, k).q[turns - 1, :, lake.start].max()


# ------------------------------------------------------------------ FrozenLake


@pytest.mark.parametrize("turns,k,expected", [
    (1, 1, 0.0),                        # two moves needed, one allowed
    (2, 1, 0.8 ** 2),                   # both moves must hold (up/down bump the edge: stay)
    (3, 1, 0.8 ** 2 + 2 * 0.8 ** 2 * 0.2),  # two successes in three tries
    (1, 2, 0.8 ** 2),                   # one turn of two blind moves
    (2, 2, 0.8 ** 2 + 0.32 * 0.96 + 0.04 * 0.8 ** 2),  # worked in the module's terms
])
def test_corridor_values_by_hand(turns, k, expected):
    assert start_value(["SFG"], turns, k) == pytest.approx(expected)


def per_move_values(desc, horizon, success_rate):
    """Plain finite-horizon value iteration over single moves on gymnasium's own P."""
    gym = GymFrozenLake(desc=desc, is_slippery=True, success_rate=success_rate)
    value = [0.0] * len(gym.P)
    for _ in range(horizon):
        value = [max(sum(p * (r if done else value[s2]) for p, s2, r, done in gym.P[s][a]) for a in range(4))
                 if "".join(desc)[s] not in "HG" else 0.0 for s in range(len(gym.P))]
    return value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_move_per_turn_is_plain_value_iteration(seed):
    desc = list(envs.frozenlake.random_map(np.random.default_rng(seed), 4, 0.8))
    lake = build_lake(tuple(desc), True, 0.8)
    plan = plan_lake(lake, 10, 1)
    expected = per_move_values(desc, 10, 0.8)
    live = [s for s in range(16) if "".join(desc)[s] not in "HG"]
    assert np.allclose(plan.q[9].max(0)[live], np.array(expected)[live])


def test_blind_moves_never_beat_seeing_each_one():
    desc = ["SFFF", "FHFH", "FFFH", "HFFG"]
    # two blind moves per turn for 5 turns vs 10 moves each seen before the next
    assert start_value(desc, 5, 2) <= start_value(desc, 10, 1) + 1e-12


def test_read_lake_recovers_the_map_and_player():
    env = envs.make("frozenlake", desc=["SFFF", "FHFH", "FFFH", "HFFG"])
    env.reset(seed=0)
    env.s = 5  # in the hole
    desc, player = read_lake(env.render())
    assert desc == ("FFFF", "FHFH", "FFFH", "HFFG") and player == 5
    env.s = 6
    assert read_lake(env.render()) == (("FFFF", "FHSH", "FFFH", "HFFG"), 6)


def test_frozenlake_expert_success_matches_its_own_value():
    """Played from prompts, the expert wins as often as value iteration says it should."""
    env = envs.make("frozenlake")
    expert = make_expert("frozenlake", env)
    wins, values = [], []
    for seed in range(300):
        obs, _ = env.reset(seed=seed)
        values.append(start_value(env.lake.desc, 10, 1))
        for turn in range(10):
            move = expert.act(ExpertView(obs, 10 - turn, 1))
            obs, reward, done, _, _ = env.step(env.parse_action(move.actions[0]))
            if done:
                break
        wins.append(reward)
    spread = 3 * np.sqrt(np.mean(values) * (1 - np.mean(values)) / len(wins))
    assert abs(np.mean(wins) - np.mean(values)) < spread


# --------------------------------------------------------------------- Sokoban


@pytest.mark.parametrize("seed", range(5))
def test_sokoban_render_is_the_whole_state(seed):
    env = envs.make("sokoban")
    env.reset(seed=seed)
    fixed, state = parse_render(env.render())
    assert np.array_equal(fixed, env.room_fixed) and np.array_equal(state, env.room_state)
    assert render_rooms(fixed, state) == env.render()


@pytest.mark.parametrize("k", [1, 3])
def test_sokoban_expert_plays_the_shortest_solution(k):
    env = envs.make("sokoban")
    obs, _ = env.reset(seed=4)
    path = solve(env)
    move = make_expert("sokoban", env).act(ExpertView(obs, 5, k))
    assert list(move.actions) == path[:k]


# --------------------------------------------------------------------- WebShop


def test_webshop_expert_replays_the_agents_page():
    """After off-path clicks, the expert's replayed shop is where the live one is."""
    env = envs.make("webshop")
    obs, _ = env.reset(seed=7)
    expert = make_expert("webshop", env)
    history = []
    rng = np.random.default_rng(0)
    for _ in range(6):
        live = expert_action(env)
        assert expert.act(ExpertView(obs, 9, 1, tuple(history))).actions == (live,)
        # an off-path action half the time, from the page's own action list
        legal = obs.splitlines()[-1].removeprefix("Available actions: ").split(", ")
        action = legal[rng.integers(len(legal))] if rng.random() < 0.5 else live
        assert env.parse_action(action) is not None
        obs, _, done, _, _ = env.step(env.parse_action(action))
        history.append((action,))
        if done:
            break


def test_every_env_has_an_expert():
    for name in envs.registered():
        make_expert(name, envs.make(name))
    with pytest.raises(ValueError, match="no expert"):
        make_expert("chess", None)


def test_macro_order_puts_full_turns_first():
    plan = plan_lake(build_lake(("SFG",), True, 0.8), 1, 2)
    assert plan.macros[:16] == tuple(itertools.product(range(4), repeat=2))
    assert len(plan.macros) == 20

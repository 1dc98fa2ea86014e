"""Sokoban: gym-sokoban's rules and rewards, RAGEN's symbols, XSB levels, the solver."""

import importlib
import importlib.util
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import envs
from envs.sokoban import ACTIONS, parse_xsb
from envs.sokoban_solver import Puzzle, live_cells, solution_length, solve

UP, DOWN, LEFT, RIGHT = range(4)

ONE_PUSH = "#####\n#@$.#\n#####"
# player, box, target, floor, box, target: push on, push off, then blocked by the second box
TWO_BOXES = "########\n#@$. $.#\n########"


def level_env(level):
    env = envs.make("sokoban", level=level)
    env.reset(seed=0)
    return env


def step_rewards(env, actions):
    return [env.step(a)[1] for a in actions]


# ---------------------------------------------------------------- rewards and rules


def test_solving_push_pays_step_box_and_finish():
    env = level_env(ONE_PUSH)
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert reward == pytest.approx(-0.1 + 1 + 10)
    assert terminated and not truncated
    assert info == {"success": True, "action_is_valid": True, "action_is_effective": True, "moved_box": True,
                    "boxes_on_target": 1}
    assert obs == "#####\n#_P√#\n#####"


def test_push_on_then_off_target_then_blocked_by_second_box():
    env = level_env(TWO_BOXES)
    assert step_rewards(env, [RIGHT, RIGHT]) == pytest.approx([-0.1 + 1, -0.1 - 1])
    before = env.render()
    _, reward, terminated, _, info = env.step(RIGHT)  # box-box: neither moves
    assert reward == pytest.approx(-0.1) and not terminated
    assert env.render() == before and not info["action_is_effective"]


def test_push_blocked_by_wall_and_walking_into_wall_are_noops():
    env = level_env("#####\n#.@$#\n#####")
    for action in (RIGHT, UP, DOWN):
        before = env.render()
        _, reward, terminated, _, info = env.step(action)
        assert (env.render(), reward, terminated) == (before, pytest.approx(-0.1), False)
        assert info["action_is_valid"] and not info["action_is_effective"]


def test_walking_onto_a_target_shows_player_on_target():
    env = level_env("#####\n#.@$#\n#####")
    _, reward, _, _, info = env.step(LEFT)
    assert env.render() == "#####\n#S_X#\n#####"
    assert reward == pytest.approx(-0.1) and info["action_is_effective"] and not info["success"]


def test_truncated_is_never_set():
    env = envs.make("sokoban")
    env.reset(seed=3)
    assert not any(env.step(a % 4)[3] for a in range(50))


# ---------------------------------------------------------------- render and XSB


def test_render_uses_ragen_symbols():
    assert level_env("######\n#@$.*#\n######").render() == "######\n#PXO√#\n######"
    assert level_env("######\n#+$$.#\n######").render() == "######\n#SXXO#\n######"


def test_xsb_outside_cells_become_walls_and_ragged_lines_are_padded():
    level = "  ####\n###  #\n#@$ .#\n######"
    assert level_env(level).render() == "######\n###__#\n#PX_O#\n######"
    assert level_env("####\n#@$.#\n####").render() == "#####\n#PXO#\n#####"
    assert level_env("#####\n#@$-.#\n######").render() == "######\n#PX_O#\n######"


def test_xsb_level_sets_dims_and_boxes_and_every_seed_returns_it():
    env = envs.make("sokoban", level=TWO_BOXES)
    assert env.dim_room == (3, 8) and env.num_boxes == 2
    assert {env.reset(seed=s)[0] for s in range(5)} == {"########\n#PXO_XO#\n########"}


@pytest.mark.parametrize(
    "level,problem",
    [("#####\n#@$$.#\n#####", "as many boxes"), ("#####\n#@@$.#\n######", "one player"), ("#@$.x#", "unknown")],
)
def test_bad_xsb_is_rejected(level, problem):
    with pytest.raises(ValueError, match=problem):
        envs.make("sokoban", level=level)


def test_xsb_starting_box_on_target_is_not_paid_again():
    env = level_env("#######\n#@$.*##\n#######")
    assert env.step(LEFT)[1] == pytest.approx(-0.1)


# ---------------------------------------------------------------- generation


def test_generation_does_not_touch_global_rngs():
    env = envs.make("sokoban", dim_room=(7, 7), num_boxes=2)
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    for seed in range(5):
        env.reset(seed=seed)
    assert (random.random(), np.random.rand()) == expected


def test_generation_depends_only_on_the_env_seed():
    levels = []
    for global_seed in (1, 2):
        random.seed(global_seed)
        np.random.seed(global_seed)
        levels.append([envs.make("sokoban").reset(seed=s)[0] for s in range(5)])
    assert levels[0] == levels[1]


def test_default_room_is_6x6_with_one_box_and_a_player():
    obs, _ = envs.make("sokoban").reset(seed=0)
    rows = obs.split("\n")
    assert [len(r) for r in rows] == [6] * 6
    assert obs.count("X") == 1 and obs.count("O") == 1 and obs.count("P") == 1


def test_size_is_shorthand_for_a_square_room():
    assert envs.make("sokoban", size=7).dim_room == (7, 7)


def test_larger_room_with_two_boxes_is_solvable():
    env = envs.make("sokoban", dim_room=(8, 8), num_boxes=2)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        assert [len(r) for r in obs.split("\n")] == [8] * 8
        assert obs.count("X") == 2 and obs.count("O") == 2
        assert_solution_solves(env)


def test_generator_retries_when_gym_sokoban_gives_up(monkeypatch):
    from envs import sokoban

    real, calls = sokoban.room_utils().generate_room, []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeWarning("Generated Model with score == 0")
        return real(**kwargs)

    monkeypatch.setattr(sokoban.room_utils(), "generate_room", flaky)
    obs, _ = envs.make("sokoban").reset(seed=0)
    assert len(calls) == 3 and obs.count("X") == 1


# ---------------------------------------------------------------- heuristic


def test_heuristic_orders_solved_close_far_and_deadlocked():
    solved = level_env("#####\n#_@*#\n#####").heuristic()
    close = level_env("######\n#@$_.#\n######").heuristic()
    far = level_env("#######\n#@$__.#\n#######").heuristic()
    deadlocked = level_env("#####\n#$_.#\n#@__#\n#####").heuristic()
    assert solved > close > far > deadlocked


def test_heuristic_rewards_approaching_the_box():
    near = level_env("#######\n#__@$.#\n#######").heuristic()
    away = level_env("#######\n#@__$.#\n#######").heuristic()
    assert near > away


# ---------------------------------------------------------------- cross-check with gym-sokoban


def load_gym_sokoban_env_class():
    """gym-sokoban's own SokobanEnv, loaded without the package `__init__` (needs pkg_resources).

    Its render_utils needs pkg_resources and imageio for RGB frames we never
    look at, so a stub stands in for it.
    """
    try:
        location = Path(list(importlib.util.find_spec("gym_sokoban").submodule_search_locations)[0])
        package = types.ModuleType("_gym_sokoban_envs")
        package.__path__ = [str(location / "envs")]
        stub = types.ModuleType("_gym_sokoban_envs.render_utils")
        stub.room_to_rgb = stub.room_to_tiny_world_rgb = lambda *args, **kwargs: None
        sys.modules.setdefault(package.__name__, package)
        sys.modules.setdefault(stub.__name__, stub)
        return importlib.import_module("_gym_sokoban_envs.sokoban_env").SokobanEnv
    except Exception as err:  # old gym missing or broken: the hand-written cases above still run
        pytest.skip(f"cannot import gym-sokoban's SokobanEnv: {err}")


def gym_twin(ours):
    """A gym-sokoban env placed in the same room as `ours`."""
    twin = load_gym_sokoban_env_class()(dim_room=ours.dim_room, num_boxes=ours.num_boxes, max_steps=10**6, reset=False)
    twin.room_fixed, twin.room_state = ours.room_fixed.copy(), ours.room_state.copy()
    twin.player_position = np.array(ours.player_position)
    twin.num_env_steps, twin.boxes_on_target = 0, 0
    return twin


@pytest.mark.parametrize("dim_room,num_boxes", [((6, 6), 1), ((7, 7), 2)])
def test_steps_match_gym_sokoban_exactly(dim_room, num_boxes):
    rng = np.random.default_rng(0)
    for seed in range(6):
        ours = envs.make("sokoban", dim_room=dim_room, num_boxes=num_boxes)
        ours.reset(seed=seed)
        theirs = gym_twin(ours)
        for action in rng.integers(4, size=80):
            _, reward, terminated, _, info = ours.step(int(action))
            _, their_reward, done, their_info = theirs.step(int(action) + 1)  # their 1..4: push up..right
            assert reward == their_reward and terminated == done
            assert info["action_is_effective"] == their_info["action.moved_player"]
            assert info["moved_box"] == their_info["action.moved_box"]
            np.testing.assert_array_equal(ours.room_state, theirs.room_state)
            if terminated:
                break


# ---------------------------------------------------------------- solver


def assert_solution_solves(env):
    path = solve(env)
    assert path is not None
    outcomes = [env.step(ACTIONS.index(word)) for word in path]
    assert outcomes[-1][2] and outcomes[-1][4]["success"]
    assert not any(o[2] for o in outcomes[:-1])


@pytest.mark.parametrize(
    "kwargs,seeds",
    [
        ({}, range(1000)),  # about 2 s
        pytest.param({"dim_room": (8, 8), "num_boxes": 2}, range(200), marks=pytest.mark.slow),
    ],
)
def test_generated_levels_are_solvable(kwargs, seeds):
    env = envs.make("sokoban", **kwargs)
    for seed in seeds:
        env.reset(seed=seed)
        assert_solution_solves(env)


def test_solver_finds_shortest_solution():
    assert solve(level_env(ONE_PUSH)) == ["right"]
    # the player must get above the box to push it down
    assert solve(level_env("#####\n#@__#\n#_$_#\n#_._#\n#####")) == ["right", "down"]
    assert solution_length(level_env("#######\n#@$__.#\n#######")) == 3


def test_solver_reports_unsolvable_levels():
    assert solve(level_env("#####\n#$_.#\n#@__#\n#####")) is None
    assert solve(level_env("#######\n#@$$..#\n#######")) is None


def test_live_cells_exclude_corners_and_dead_walls():
    fixed, state = parse_xsb("######\n#@_$_#\n#__.##\n######")
    puzzle = Puzzle.from_rooms(fixed, state)
    corner, target = 1 * puzzle.stride + 1, 2 * puzzle.stride + 3
    assert target in live_cells(puzzle) and corner not in live_cells(puzzle)


def test_solver_does_not_change_the_env():
    env = envs.make("sokoban")
    env.reset(seed=4)
    before = env.render()
    solve(env)
    assert env.render() == before

"""FrozenLake: gymnasium's dynamics through our RNG, generated maps, symbols, heuristic."""

from collections import Counter

import pytest
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv as GymFrozenLake
from gymnasium.envs.toy_text.frozen_lake import is_valid

import envs

LEFT, DOWN, RIGHT, UP = range(4)
DESC = ["SFFF", "FHFH", "FFFH", "HFFG"]
SAMPLES = 3000


def next_state_frequencies(step, n):
    """Frequencies of the next state over `n` calls of `step()`, which returns the next state."""
    counts = Counter(step() for _ in range(n))
    return {s: c / n for s, c in counts.items()}


def ours_from(state, action, success_rate):
    env = envs.make("frozenlake", desc=DESC, success_rate=success_rate)
    env.reset(seed=0)

    def step():
        env.s = state
        env.step(action)
        return env.s

    return step


def gymnasium_from(state, action, success_rate):
    env = GymFrozenLake(desc=DESC, is_slippery=True, success_rate=success_rate)
    env.reset(seed=1)

    def step():
        env.s = state
        return env.step(action)[0]

    return step


@pytest.mark.parametrize("success_rate", [0.8, 1 / 3])
@pytest.mark.parametrize("state,action", [(0, LEFT), (0, UP), (6, DOWN), (10, RIGHT), (14, RIGHT), (2, UP)])
def test_next_state_frequencies_match_gymnasium(state, action, success_rate):
    ours = next_state_frequencies(ours_from(state, action, success_rate), SAMPLES)
    theirs = next_state_frequencies(gymnasium_from(state, action, success_rate), SAMPLES)
    for s in set(ours) | set(theirs):
        assert abs(ours.get(s, 0) - theirs.get(s, 0)) < 0.03, (s, ours, theirs)


def test_intended_move_happens_at_success_rate():
    freq = next_state_frequencies(ours_from(6, DOWN, 0.8), SAMPLES)
    assert freq[10] == pytest.approx(0.8, abs=0.03)
    assert freq[5] == pytest.approx(0.1, abs=0.03) and freq[7] == pytest.approx(0.1, abs=0.03)


def play(env, actions):
    return [env.step(a) for a in actions]


def test_explicit_desc_goal_hole_and_border():
    env = envs.make("frozenlake", desc=["SH", "FG"], is_slippery=False)
    obs, info = env.reset(seed=0)
    assert obs == "PO\n_G" and not info["success"]
    obs, reward, terminated, _, info = env.step(LEFT)  # into the border: stays put
    assert (obs, reward, terminated, info["action_is_effective"]) == ("PO\n_G", 0.0, False, False)
    (_, r1, t1, _, _), (obs, r2, t2, _, info) = play(env, [DOWN, RIGHT])
    assert (r1, t1) == (0.0, False) and (obs, r2, t2) == ("_O\n_√", 1.0, True)
    assert info["success"] and info["action_is_valid"] and info["action_is_effective"]


def test_hole_ends_the_episode_with_nothing():
    env = envs.make("frozenlake", desc=["SH", "FG"], is_slippery=False)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (obs, reward, terminated, truncated, info["success"]) == ("_X\n_G", 0.0, True, False, False)


@pytest.mark.parametrize("size", [4, 6])
def test_generated_maps_always_have_a_path(size):
    env = envs.make("frozenlake", size=size)
    maps = set()
    for seed in range(200):
        env.reset(seed=seed)
        desc = env.lake.desc
        assert desc[0][0] == "S" and desc[-1][-1] == "G" and len(desc) == size
        assert is_valid([list(row) for row in desc], size)  # gymnasium's own path check
        maps.add(desc)
    assert len(maps) > 50


def test_holes_appear_at_rate_one_minus_p():
    env = envs.make("frozenlake", size=8, p=0.9)
    tiles = "".join("".join(env.reset(seed=s)[0].split("\n")[1:-1]) for s in range(100))
    assert tiles.count("O") / len(tiles) == pytest.approx(0.1, abs=0.03)


def test_render_symbols():
    env = envs.make("frozenlake", desc=DESC)
    assert env.reset(seed=0)[0] == "P___\n_O_O\n___O\nO__G"


@pytest.mark.parametrize("kwargs", [{"p": 0}, {"success_rate": 1.5}, {"desc": ["SF", "FF"]}, {"desc": ["SFG", "FF"]}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        envs.make("frozenlake", **kwargs)


def heuristic_at(state, desc=DESC):
    env = envs.make("frozenlake", desc=desc)
    env.reset(seed=0)
    env.s = state
    value = env.heuristic()
    assert type(value) is float
    return value


def test_heuristic_prefers_progress_safety_and_goal():
    goal, near_goal, start, hole = 15, 14, 0, 5
    assert heuristic_at(goal) > heuristic_at(near_goal) > heuristic_at(start) > heuristic_at(hole)
    # both 4 steps from the goal, but state 8 borders a hole
    assert heuristic_at(2) > heuristic_at(8)
    assert heuristic_at(hole) < min(heuristic_at(s) for s in range(16) if DESC[s // 4][s % 4] != "H")

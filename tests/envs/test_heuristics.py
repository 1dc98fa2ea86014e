"""The env heuristics guide search: a greedy one-step lookahead beats random play.

Search scores candidates by `heuristic()` on clones; if the heuristic did not
point towards success, search could not help. The lookahead uses fresh-RNG
clones so on FrozenLake it cannot peek at the real episode's slips.
"""

import numpy as np
import pytest

import envs

STEPS = 10
SEEDS = range(100)


def greedy_action(env, rng):
    """The action whose (one sampled) outcome has the best heuristic; ties broken at random."""
    scores = []
    for action in range(env.action_space.n):
        twin = env.clone(fresh_rng=True, seed=int(rng.integers(2**31)))
        twin.step(action)
        scores.append(twin.heuristic())
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    return int(rng.choice(best))


def random_action(env, rng):
    return int(rng.integers(env.action_space.n))


def success_rate(name, choose):
    rng, wins = np.random.default_rng(0), 0
    for seed in SEEDS:
        env = envs.make(name)
        env.reset(seed=seed)
        for _ in range(STEPS):
            _, _, terminated, _, info = env.step(choose(env, rng))
            if terminated:
                break
        wins += info["success"]
    return wins / len(SEEDS)


@pytest.mark.parametrize("name", ["sokoban", "frozenlake"])
def test_greedy_heuristic_beats_random_play(name):
    assert success_rate(name, greedy_action) >= success_rate(name, random_action) + 0.2

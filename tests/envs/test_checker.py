"""Every registered environment (and a few non-default settings) passes the generic checker."""

import random

import numpy as np
import pytest

import envs
from envs.checker import check_text_env
from envs.sokoban import SokobanEnv


@pytest.mark.parametrize("name", envs.registered())
def test_registered_env_passes_checker(name):
    check_text_env(lambda: envs.make(name))


@pytest.mark.parametrize(
    "name,kwargs,variety",
    [
        ("sokoban", {"dim_room": (8, 8), "num_boxes": 2}, True),
        ("sokoban", {"level": "#######\n#@$. .#\n#  $  #\n#######"}, False),
        ("frozenlake", {"desc": ["SFFF", "FHFH", "FFFH", "HFFG"]}, False),
        ("frozenlake", {"size": 6, "success_rate": 1 / 3}, True),
        ("frozenlake", {"is_slippery": False}, True),
    ],
)
def test_settings_pass_checker(name, kwargs, variety):
    check_text_env(lambda: envs.make(name, **kwargs), expect_seed_variety=variety)


class SharedStateClone(SokobanEnv):
    """Broken on purpose: its clone shares the room arrays with the original."""

    def clone(self, fresh_rng=False, seed=None):
        twin = super().clone(fresh_rng, seed)
        twin.room_state = self.room_state
        return twin


class GlobalRandomLevel(SokobanEnv):
    """Broken on purpose: its level comes from the global RNG, though `np_random` looks seeded."""

    def reset(self, *, seed=None, options=None):
        result = super().reset(seed=random.randrange(10**6), options=options)
        self._np_random = np.random.default_rng(seed)
        return result


@pytest.mark.parametrize("broken,problem", [(SharedStateClone, "clone"), (GlobalRandomLevel, "not equivalent|reset")])
def test_checker_catches_broken_envs(broken, problem):
    with pytest.raises(AssertionError, match=problem):
        check_text_env(broken)


def test_make_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="sokoban"):
        envs.make("no-such-env")

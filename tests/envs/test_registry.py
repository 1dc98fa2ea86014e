"""envs.make / envs.factory: the registry's entry points."""

import pytest

import envs


def test_factory_freezes_list_arguments_and_builds_fresh_envs():
    desc = ["SF", "GG"]
    make = envs.factory("frozenlake", desc=desc, is_slippery=False)
    first, second = make(), make()
    assert first is not second
    desc[0] = "GG"  # the caller's list is not shared with the envs
    assert first.reset(seed=0)[0] == make().reset(seed=0)[0]


def test_factory_fails_fast_on_a_bad_name_or_argument():
    with pytest.raises(KeyError, match="unknown environment"):
        envs.factory("chess")
    with pytest.raises(TypeError):
        envs.factory("frozenlake", no_such_argument=1)

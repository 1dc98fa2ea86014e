"""One generic checker for every `TextEnv`: gymnasium's API plus what search relies on.

Trajectory search replays candidate actions on clones and compares outcomes
across seeds, so beyond `gymnasium.utils.env_checker.check_env` an
environment must have

- seeded-reset determinism: the same seed gives the same first observation;
- step determinism: the same seed and actions give the same outcomes;
- clone independence: stepping a clone never changes its original; a clone
  with the copied RNG reproduces the original's outcomes; a clone with a
  fresh RNG is reproducible from its seed.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Sequence

import numpy as np
from gymnasium.utils.env_checker import check_env

from envs.base import TextEnv

#: check_env warnings that say nothing about the env itself
HARMLESS_WARNINGS = (
    # our envs are not made through gymnasium.make; their only render mode
    # ("ansi") is checked on the env itself
    "Not able to test alternative render modes",
)

Outcome = tuple  # (obs, reward, terminated, truncated, info) of one step


def check_text_env(
    env_factory: Callable[[], TextEnv],
    seeds: Sequence[int] = tuple(range(8)),
    num_steps: int = 12,
    expect_seed_variety: bool = True,
) -> None:
    """Raise AssertionError if the env made by `env_factory` breaks the TextEnv contract.

    `expect_seed_variety=False` is for envs with one fixed level, where
    different seeds rightly give the same first observation.
    """
    check_gymnasium_api(env_factory())
    actions = _sample_actions(env_factory(), num_steps)
    check_reset_determinism(env_factory, seeds, expect_seed_variety)
    check_step_determinism(env_factory, seeds, actions)
    for seed in seeds[:3]:
        check_clone(env_factory, seed, actions)


def check_gymnasium_api(env: TextEnv) -> None:
    """gymnasium's own checker, with every warning it gives turned into a failure."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)
    problems = [str(w.message) for w in caught if not any(h in str(w.message) for h in HARMLESS_WARNINGS)]
    _require(not problems, f"gymnasium's check_env warned: {problems}")
    _require(isinstance(env.render(), str), "render() must return the text observation")
    for key in ("success", "action_is_valid", "action_is_effective"):
        _require(key in env.reset(seed=0)[1], f"reset info lacks {key!r}")


def check_reset_determinism(env_factory: Callable[[], TextEnv], seeds: Sequence[int], expect_variety: bool) -> None:
    """Same seed -> same first observation, across fresh envs; different seeds usually differ."""
    first = [env_factory().reset(seed=s)[0] for s in seeds]
    again = [env_factory().reset(seed=s)[0] for s in seeds]
    _require(first == again, "reset(seed=s) gave different observations for the same seed")
    if expect_variety and len(seeds) > 1:
        _require(len(set(first)) > 1, f"reset gave the same observation for every seed in {list(seeds)}")


def check_step_determinism(env_factory: Callable[[], TextEnv], seeds: Sequence[int], actions: Sequence[Any]) -> None:
    """Same seed and actions -> same observations, rewards, flags and infos."""
    for seed in seeds:
        a, b = env_factory(), env_factory()
        a.reset(seed=seed)
        b.reset(seed=seed)
        _require_same(_play(a, actions), _play(b, actions), f"stepping from seed {seed} is not deterministic")


def check_clone(env_factory: Callable[[], TextEnv], seed: int, actions: Sequence[Any]) -> None:
    """Clones are independent of their original and reproduce it (copied RNG) or their seed (fresh RNG)."""
    original = env_factory()
    original.reset(seed=seed)
    _play(original, actions[: len(actions) // 3])
    before = (original.render(), _rng_state(original))

    _play(original.clone(), actions)
    _require((original.render(), _rng_state(original)) == before, "stepping a clone changed the original")

    fresh = [original.clone(fresh_rng=True, seed=7) for _ in range(2)]
    _require_same(_play(fresh[0], actions), _play(fresh[1], actions),
                  "clones with fresh_rng and the same seed diverged")
    _require((original.render(), _rng_state(original)) == before, "a fresh-RNG clone changed the original")

    twin = original.clone()
    _require_same(_play(twin, actions), _play(original, actions),
                  "a clone with the copied RNG did not reproduce the original")


def _play(env: TextEnv, actions: Sequence[Any]) -> list[Outcome]:
    """Step through `actions`, stopping after the episode ends."""
    outcomes = []
    for action in actions:
        outcomes.append(env.step(action))
        if outcomes[-1][2] or outcomes[-1][3]:
            break
    return outcomes


def _sample_actions(env: TextEnv, n: int) -> list[Any]:
    """`n` actions from a seeded copy of the action space, so the env's own RNGs stay untouched."""
    space = copy.deepcopy(env.action_space)
    space.seed(0)
    return [space.sample() for _ in range(n)]


def _rng_state(env: TextEnv) -> str:
    return repr(env.np_random.bit_generator.state)


def _require(condition: bool, message: str) -> None:
    """`assert` that survives `python -O`."""
    if not condition:
        raise AssertionError(message)


def _require_same(a: list[Outcome], b: list[Outcome], message: str) -> None:
    try:
        np.testing.assert_equal(a, b)
    except AssertionError as err:
        raise AssertionError(f"{message}: {err}") from None

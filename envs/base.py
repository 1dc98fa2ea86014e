"""The text-environment contract shared by every `tsr` environment, and the registry.

A `TextEnv` is a plain `gymnasium.Env` whose observations are text, plus what
trajectory search needs on top of gymnasium:

- `clone()`: an independent deep copy, RNG state included. Search scores
  candidate actions on clones, so a clone must never share mutable state with
  its original. `clone(fresh_rng=True, seed=s)` gives the copy a new RNG
  instead, for scoring a candidate by sampled outcomes (SPEC section 3).
- `action_names`: the legal action words (or, for grammar-based envs, a
  description of the grammar).
- `instruction` and `legend`: the task text and the symbol legend for the
  prompt.
- `parse_action(text)`: maps one action word to what `step` takes, or None.
- `heuristic()`: the environment's own task heuristic (higher is better),
  used by the `heuristic` scorer.
- every `info` carries `success`, `action_is_valid` and `action_is_effective`.

Time limits are not part of an environment (gymnasium's convention): the
agent protocol's turn and action budget ends episodes.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import gymnasium as gym
import numpy as np

# Every character a text observation of the built-in grid envs may contain.
GRID_CHARSET = frozenset("#_OXP√SG.$*@+- \n")


class TextEnv(gym.Env):
    """Base class: a gymnasium env with text observations and a faithful clone."""

    # render_fps means nothing for text, but gymnasium's checker warns without it
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    #: legal action words, in action-index order for discrete envs
    action_names: list[str] = []
    #: task description placed at the start of the first prompt
    instruction: str = ""
    #: symbol legend placed after the instruction
    legend: str = ""
    #: the agent protocol's default budget for this env (SPEC section 2)
    max_turns: int = 5
    max_actions_per_turn: int = 2

    def parse_action(self, text: str) -> Any | None:
        """Map one lower-cased action word to a `step` argument, or None if illegal."""
        try:
            return self.action_names.index(text.strip().lower())
        except ValueError:
            return None

    def vocabulary(self) -> list[str]:
        """Text this env can show beyond its reset pages (item names, options, ...).

        A from-scratch tokenizer (the `tiny` policy) is built from the words the
        model may read and must write; reset observations alone miss what only
        appears after a few steps. Grid worlds show everything at reset.
        """
        return []

    def heuristic(self) -> float:
        """Task-specific value of the current state; higher is closer to success."""
        raise NotImplementedError

    def render(self) -> str:
        raise NotImplementedError

    def clone(self, fresh_rng: bool = False, seed: int | None = None) -> "TextEnv":
        """An independent deep copy. With `fresh_rng`, the copy gets a new RNG seeded by `seed`."""
        twin = copy.deepcopy(self)
        if fresh_rng:
            twin._np_random = np.random.default_rng(seed)
        return twin


_REGISTRY: dict[str, Callable[..., TextEnv]] = {}


def register(name: str, factory: Callable[..., TextEnv]) -> None:
    """Register an environment factory under `name` (overwrites an existing entry)."""
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """Names of every registered environment, sorted."""
    return sorted(_REGISTRY)


def make(name: str, **kwargs: Any) -> TextEnv:
    """Build a registered environment. Raises KeyError with the known names if unknown."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown environment {name!r}; known: {', '.join(registered())}")
    return _REGISTRY[name](**kwargs)


def factory(name: str, **kwargs: Any) -> Callable[[], TextEnv]:
    """A zero-argument maker of `name` with `kwargs`, checked by building one env now.

    Lists (as YAML and `--env-arg` give them, e.g. a FrozenLake `desc`) become
    tuples, so every env built shares immutable arguments.
    """
    frozen = {key: tuple(value) if isinstance(value, list) else value for key, value in kwargs.items()}
    make(name, **frozen)  # fail fast on a bad name or argument
    return lambda: make(name, **frozen)

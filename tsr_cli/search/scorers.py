"""Scorers: how search ranks a candidate (SPEC section 3).

A scorer maps (environment before, candidate actions, environment after,
rewards of those actions) to a number; higher is better. Search itself puts
every invalid response below every valid one, so scorers need not.
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence


class Scorer(Protocol):
    def __call__(self, before, actions: Sequence[str], after, rewards: Sequence[float]) -> float: ...


def env_reward(before, actions, after, rewards) -> float:
    """The summed immediate reward of the candidate's actions (what the TSR code uses)."""
    return float(sum(rewards))


def heuristic(before, actions, after, rewards) -> float:
    """The environment's own task heuristic of the state the candidate reached."""
    return float(after.heuristic())


SCORERS: dict[str, Callable] = {"env_reward": env_reward, "heuristic": heuristic}


def register_scorer(name: str, fn: Callable) -> None:
    SCORERS[name] = fn


def resolve_scorer(spec: str | Callable) -> Callable:
    """A registered scorer name, a `module:function` path, or a callable."""
    if callable(spec):
        return spec
    if spec in SCORERS:
        return SCORERS[spec]
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load scorer {spec!r}: {exc}") from None
        if not callable(fn):
            raise ValueError(f"scorer {spec!r} is not callable")
        return fn
    raise ValueError(
        f"unknown scorer {spec!r}; choose one of {', '.join(sorted(SCORERS))} or module:function"
    )

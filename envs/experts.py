"""An expert per environment, deciding from what the agent itself sees.

An expert gets an `ExpertView`: the current state text, the turn budget and
the actions asked for in earlier turns, which is all the agent's prompt
holds. It never reads the live environment, so the `expert` policy can play
from prompts alone, under search as well as alone. Each expert is built with
one instance of the environment it plays (`make_expert(name, env)`): that
gives it the environment's arguments (FrozenLake's slip model, WebShop's
catalogue), never the hidden state of an episode.

- Sokoban: the shortest solution (`sokoban_solver.solve`) from the rendered
  room, which is the whole state.
- FrozenLake: optimal for the rendered map under the slip model and the
  remaining turns (finite-horizon value iteration on gymnasium's transition
  table). With K > 1 actions per turn, the K moves are chosen before any of
  them is seen to land, so the iteration is over open-loop sequences of
  1..K moves per turn: the best a policy answering in turns can do.
- WebShop: the scripted expert (`webshop/expert.py`). It finds the goal by
  the instruction text the page shows, and replays the earlier actions on a
  fresh copy of the shop to know which page it is on (pages are deterministic
  given the actions).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

#: the response a finished or hopeless position gets when nothing is better
FALLBACK_REASON = "no move helps"


@dataclass(frozen=True)
class ExpertView:
    """What the agent has seen before it answers a turn.

    observation:     the current state text (the last `State:` block)
    turns_left:      turns left including this one (>= 1)
    actions_per_turn: K, the most actions one answer may hold
    history:         per earlier turn, the action strings its answer asked for
    """

    observation: str
    turns_left: int
    actions_per_turn: int
    history: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class ExpertMove:
    """The expert's answer: 1..K actions and a one-line reason (its `<think>` text)."""

    actions: tuple[str, ...]
    reason: str


class Expert(Protocol):
    def act(self, view: ExpertView) -> ExpertMove: ...


_EXPERTS: dict[str, Callable[[object], Expert]] = {}


def register_expert(name: str, factory: Callable[[object], Expert]) -> None:
    """Give environment `name` an expert: `factory(env) -> Expert`."""
    _EXPERTS[name] = factory


def has_expert(name: str) -> bool:
    return name in _EXPERTS


def make_expert(name: str, env) -> Expert:
    """The expert of environment `name`, for instances like `env`. ValueError if it has none."""
    if name not in _EXPERTS:
        raise ValueError(f"environment {name!r} has no expert; experts exist for {', '.join(sorted(_EXPERTS))}")
    return _EXPERTS[name](env)


# ---------------------------------------------------------------- Sokoban


class SokobanExpert:
    """The first K moves of a shortest solution from the rendered room."""

    def __init__(self, env) -> None:
        self.env = env

    def act(self, view: ExpertView) -> ExpertMove:
        from envs.sokoban import parse_render
        from envs.sokoban_solver import Puzzle, solve

        path = solve(Puzzle.from_rooms(*parse_render(view.observation)))
        if not path:  # solved already, or a box is stuck: no move helps
            return ExpertMove((self.env.action_names[0],), FALLBACK_REASON)
        reason = f"shortest solution: {len(path)} moves"
        return ExpertMove(tuple(path[:view.actions_per_turn]), reason)


# ---------------------------------------------------------------- FrozenLake

_PLAYER_TILES = {"P": "F", "X": "H", "√": "G"}
_TILES = {"_": "F", "O": "H", "G": "G", **_PLAYER_TILES}


def read_lake(text: str) -> tuple[tuple[str, ...], int]:
    """(map rows of S/F/H/G, player state index) from FrozenLake's render.

    The start tile renders like frozen ice and behaves like it, so the player's
    tile is marked S (the transition table needs one start; it does not care where).
    """
    rows = text.strip("\n").split("\n")
    if set("".join(rows)) - set(_TILES) or len({len(r) for r in rows}) != 1:
        raise ValueError(f"not a rendered FrozenLake map: {text!r}")
    flat = "".join(rows)
    players = [i for i, ch in enumerate(flat) if ch in _PLAYER_TILES]
    if len(players) != 1:
        raise ValueError(f"a FrozenLake render shows one player, found {len(players)}")
    player = players[0]
    letters = [_TILES[ch] for ch in flat]
    if letters[player] == "F":
        letters[player] = "S"
    width = len(rows[0])
    return tuple("".join(letters[r * width:(r + 1) * width]) for r in range(len(rows))), player


@dataclass(frozen=True)
class Plan:
    """Open-loop move sequences and their value over the remaining turns.

    macros:  every sequence of 1..K actions, K-long ones first
    q:       [T, M, S] success probability of playing macro m in state s with t+1 turns left,
             then playing optimally
    """

    macros: tuple[tuple[int, ...], ...]
    q: np.ndarray


def macro_kernels(transitions, goal_states: set[int], macro: tuple[int, ...]):
    """(M [S, S], g [S]) of a move sequence: M[s, s'] = P(land on live s' after all moves),
    g[s] = P(reach a goal on the way). A hole or goal ends the sequence (and the episode)."""
    n = len(transitions)
    move = np.zeros((n, n))
    goal = np.zeros(n)
    for s in range(n):
        for prob, nxt, _, terminated in transitions[s][macro[0]]:
            if not terminated:
                move[s, nxt] += prob
            elif nxt in goal_states:
                goal[s] += prob
    if len(macro) == 1:
        return move, goal
    rest_move, rest_goal = macro_kernels(transitions, goal_states, macro[1:])
    return move @ rest_move, goal + move @ rest_goal


@functools.lru_cache(maxsize=256)
def plan_lake(lake, turns: int, k: int) -> Plan:
    """Finite-horizon value iteration over turns: V_t = max_m g_m + M_m V_{t-1}, V_0 = 0."""
    goals = {s for s in range(len(lake.transitions)) if lake.letter(s) == "G"}
    macros = tuple(m for length in range(k, 0, -1) for m in itertools.product(range(4), repeat=length))
    kernels = [macro_kernels(lake.transitions, goals, m) for m in macros]
    value = np.zeros(len(lake.transitions))
    q = np.zeros((turns, len(macros), len(value)))
    for t in range(turns):
        q[t] = np.stack([g + move @ value for move, g in kernels])
        value = q[t].max(0)
    return Plan(macros, q)


class FrozenLakeExpert:
    """The best open-loop K-move answer for the remaining turns, under the env's slip model."""

    def __init__(self, env) -> None:
        self.env = env

    def act(self, view: ExpertView) -> ExpertMove:
        from envs.frozenlake import ACTIONS, build_lake

        desc, player = read_lake(view.observation)
        if desc[player // len(desc[0])][player % len(desc[0])] in "HG":
            return ExpertMove((ACTIONS[0],), FALLBACK_REASON)
        lake = build_lake(desc, self.env.is_slippery, self.env.success_rate)
        plan = plan_lake(lake, view.turns_left, view.actions_per_turn)
        q = plan.q[view.turns_left - 1, :, player]
        # rounding makes float-noise ties exact, so argmax takes the first (longest) best
        best = int(np.argmax(np.round(q, 12)))
        reason = f"success chance {q[best]:.2f} in {view.turns_left} turns"
        return ExpertMove(tuple(ACTIONS[a] for a in plan.macros[best]), reason)


# ---------------------------------------------------------------- WebShop


class WebShopExpert:
    """The scripted shopper, on a copy of the shop replayed to the agent's page."""

    def __init__(self, env) -> None:
        self.env = env
        self.goal_by_text = {}
        for index, goal in enumerate(env.catalogue.goals):
            # the first goal wins when texts repeat: the agent cannot tell them apart either
            self.goal_by_text.setdefault(_squash(goal["instruction_text"]), index)

    def act(self, view: ExpertView) -> ExpertMove:
        from envs.webshop import expert_action

        shop = self._replay(view)
        actions = []
        for _ in range(view.actions_per_turn):
            action = expert_action(shop)
            actions.append(action)
            if shop.step(action)[2]:
                break
        return ExpertMove(tuple(actions), f"on the {shop.page.kind} page; goal item {shop.goal['asin']}")

    def _replay(self, view: ExpertView):
        """A copy of the shop at the agent's page: same goal, earlier actions re-run."""
        shop = self.env.clone()
        shop.reset(options={"goal_index": self._goal_index(view.observation)})
        for parts in view.history:
            for part in parts:
                action = shop.parse_action(part)
                if action is not None and shop.step(action)[2]:
                    break
        return shop

    def _goal_index(self, observation: str) -> int:
        from envs.webshop.pages import SEP

        fields = observation.split(SEP.strip())
        for before, text in zip(fields, fields[1:]):
            if before.strip() == "Instruction:" and _squash(text) in self.goal_by_text:
                return self.goal_by_text[_squash(text)]
        raise ValueError("webshop expert: the page shows no known instruction")


def _squash(text: str) -> str:
    return " ".join(text.split())


register_expert("sokoban", SokobanExpert)
register_expert("frozenlake", FrozenLakeExpert)
register_expert("webshop", WebShopExpert)

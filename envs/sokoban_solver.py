"""Shortest-solution breadth-first search for Sokoban.

Used to check that every generated level is solvable, and as an oracle for
scorers (`solution_length`: how many moves are left from a state). States are
(player cell, box cells); a move is one of the env's actions, so the solution
is the shortest action sequence, not the fewest pushes. Pushes onto "dead"
cells, from which no box can ever reach a target, are pruned; that never
removes a solution.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass

import numpy as np

from envs.sokoban import ACTIONS, BOX, BOX_ON_TARGET, PLAYER, TARGET, WALL

DEFAULT_MAX_STATES = 500_000


@dataclass(frozen=True)
class Puzzle:
    """A Sokoban position as hashable cell sets.

    Cells are `row * stride + column` with `stride = columns + 1`: the spare
    column is never floor, so a step left or right can never wrap onto the
    next row, and a step off the top or bottom lands on a negative or too
    large index, which is not floor either.
    """

    stride: int
    floor: frozenset[int]
    targets: frozenset[int]
    player: int
    boxes: frozenset[int]

    @classmethod
    def from_rooms(cls, room_fixed: np.ndarray, room_state: np.ndarray) -> "Puzzle":
        stride = room_fixed.shape[1] + 1

        def cells(mask: np.ndarray) -> frozenset[int]:
            return frozenset(int(r) * stride + int(c) for r, c in np.argwhere(mask))

        (player,) = cells(room_state == PLAYER)
        return cls(stride, cells(room_fixed != WALL), cells(room_fixed == TARGET), player,
                   cells(np.isin(room_state, (BOX, BOX_ON_TARGET))))

    @classmethod
    def from_env(cls, env) -> "Puzzle":
        """The current position of a `SokobanEnv` (after reset)."""
        return cls.from_rooms(env.room_fixed, env.room_state)

    def deltas(self) -> tuple[int, ...]:
        """Cell offsets of the env's actions, in action order (up, down, left, right)."""
        return (-self.stride, self.stride, -1, 1)


def solve(env_or_puzzle, max_states: int = DEFAULT_MAX_STATES) -> list[str] | None:
    """The shortest list of action words that solves the position, or None.

    None means no solution exists, or none was found within `max_states`
    explored states. Accepts a `SokobanEnv` (its current state) or a `Puzzle`.
    """
    puzzle = env_or_puzzle if isinstance(env_or_puzzle, Puzzle) else Puzzle.from_env(env_or_puzzle)
    path = _bfs(puzzle, max_states)
    return None if path is None else [ACTIONS[a] for a in path]


def solution_length(env_or_puzzle, max_states: int = DEFAULT_MAX_STATES) -> int | None:
    """Moves left to solve from the current state (None if unsolvable): an oracle for scorers.

    Cached per position, so scoring many candidates that reach the same state is cheap.
    """
    path = solve(env_or_puzzle, max_states)
    return None if path is None else len(path)


@functools.lru_cache(maxsize=4096)
def _bfs(puzzle: Puzzle, max_states: int) -> tuple[int, ...] | None:
    """Action indices of a shortest solution, or None."""
    live = live_cells(puzzle)
    start = (puzzle.player, puzzle.boxes)
    parents: dict = {start: None}
    queue = deque([start])
    while queue and len(parents) <= max_states:
        state = queue.popleft()
        if state[1] <= puzzle.targets:
            return _actions_to(state, parents)
        for action, nxt in _successors(puzzle, live, state):
            if nxt not in parents:
                parents[nxt] = (state, action)
                queue.append(nxt)
    return None


def _successors(puzzle: Puzzle, live: frozenset[int], state: tuple[int, frozenset[int]]):
    """(action, next state) for every action that moves the player without killing a box."""
    player, boxes = state
    for action, delta in enumerate(puzzle.deltas()):
        ahead = player + delta
        if ahead not in puzzle.floor:
            continue
        if ahead not in boxes:
            yield action, (ahead, boxes)
            continue
        beyond = ahead + delta
        if beyond in live and beyond not in boxes:
            yield action, (ahead, boxes - {ahead} | {beyond})


def _actions_to(state, parents: dict) -> tuple[int, ...]:
    actions = []
    while parents[state] is not None:
        state, action = parents[state]
        actions.append(action)
    return tuple(reversed(actions))


def live_cells(puzzle: Puzzle) -> frozenset[int]:
    """Cells from which a lone box can still be pushed onto some target.

    Found backwards from the targets: a box at `cell` can have come from
    `cell - d` if the player stood at `cell - 2d` to push it, so both must be
    floor.
    """
    live = set(puzzle.targets)
    frontier = list(puzzle.targets)
    while frontier:
        cell = frontier.pop()
        for delta in puzzle.deltas():
            source, stand = cell - delta, cell - 2 * delta
            if source in puzzle.floor and stand in puzzle.floor and source not in live:
                live.add(source)
                frontier.append(source)
    return frozenset(live)

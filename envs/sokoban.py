"""Sokoban as a text environment: gym-sokoban's levels and step rules, RAGEN's symbols.

Levels come from gym-sokoban's own generator (`room_utils.generate_room`: a
random-walk room, then reverse play that pulls the boxes off their targets, so
every generated level is solvable), or from standard XSB text. Stepping,
rewards and termination follow gym-sokoban's `SokobanEnv._push/_move/
_calc_reward` for its push actions 1..4 (our `up, down, left, right`); the
text render uses RAGEN's symbols so success rates are comparable with the
paper's SimpleSokoban.

Room encoding (as in gym-sokoban):
- `room_fixed`: 0 wall, 1 floor, 2 target;
- `room_state`: 0 wall, 1 floor, 2 empty target, 3 box on target,
  4 box off target, 5 player.

Deliberate departures from gym-sokoban:
- no step limit (`truncated` is always False): the agent protocol's turn
  budget ends episodes;
- cells outside the grid count as walls (gym-sokoban indexes out of range on
  unenclosed rooms, which its generator never makes but XSB text can);
- an XSB level that starts with boxes on targets counts them from the start,
  where gym-sokoban's reset would pay +1 for them on the first step.
"""

from __future__ import annotations

import functools
import importlib.util
import random
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
from gymnasium import spaces

from envs.base import GRID_CHARSET, TextEnv, register

WALL, FLOOR, TARGET, BOX_ON_TARGET, BOX, PLAYER = range(6)

ACTIONS = ["up", "down", "left", "right"]
#: row/column change per action: gym-sokoban's CHANGE_COORDINATES
DELTAS = ((-1, 0), (1, 0), (0, -1), (0, 1))

# gym-sokoban's rewards
STEP_PENALTY = -0.1
BOX_ON_TARGET_REWARD = 1
BOX_OFF_TARGET_PENALTY = -1
SOLVED_REWARD = 10

# heuristic weights (our own; see SokobanEnv.heuristic)
PLAYER_DISTANCE_WEIGHT = 0.1
DEADLOCK_PENALTY = 5.0
SOLVED_BONUS = 10.0

#: RAGEN's text symbols per room_state value; a player on a target is "S"
SYMBOLS = {WALL: "#", FLOOR: "_", TARGET: "O", BOX_ON_TARGET: "√", BOX: "X", PLAYER: "P"}
PLAYER_ON_TARGET_SYMBOL = "S"

#: XSB character -> (room_fixed, room_state)
XSB = {
    "#": (WALL, WALL),
    " ": (FLOOR, FLOOR),
    "-": (FLOOR, FLOOR),
    "_": (FLOOR, FLOOR),
    ".": (TARGET, TARGET),
    "$": (FLOOR, BOX),
    "*": (TARGET, BOX_ON_TARGET),
    "@": (FLOOR, PLAYER),
    "+": (TARGET, PLAYER),
}

MAX_GENERATION_TRIES = 100


# ---------------------------------------------------------------- level generation


@functools.cache
def room_utils() -> ModuleType:
    """gym-sokoban's `room_utils`, loaded from its file.

    `import gym_sokoban` runs the package `__init__`, which needs
    `pkg_resources` (gone from recent setuptools) and the old `gym`; the
    generator itself needs only numpy, so we load that one file directly.
    """
    package = importlib.util.find_spec("gym_sokoban")
    if package is None or not package.submodule_search_locations:
        raise ImportError("gym-sokoban is not installed: pip install gym-sokoban")
    path = Path(list(package.submodule_search_locations)[0]) / "envs" / "room_utils.py"
    spec = importlib.util.spec_from_file_location("tsr_gym_sokoban_room_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed the global `random` and `np.random` for the generator, then restore them.

    gym-sokoban's generator draws from both global RNGs; restoring them keeps
    the environment from leaking its randomness into (or taking it from) the
    caller's program.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def generate_level(
    rng: np.random.Generator, dim_room: tuple[int, int], num_boxes: int, num_gen_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """A solvable (room_fixed, room_state) from gym-sokoban's generator, seeded from `rng`.

    The generator gives up (RuntimeError/RuntimeWarning) when its reverse play
    scores 0; like gym-sokoban's reset we retry, with the next seed from `rng`.
    """
    for _ in range(MAX_GENERATION_TRIES):
        seed = int(rng.integers(2**31 - 1))
        try:
            with seeded_global_rngs(seed):
                fixed, state, _ = room_utils().generate_room(
                    dim=tuple(dim_room), num_steps=num_gen_steps, num_boxes=num_boxes
                )
        except (RuntimeError, RuntimeWarning):
            continue
        return fixed.astype(np.int8), state.astype(np.int8)
    raise RuntimeError(
        f"gym-sokoban could not generate a {dim_room} room with {num_boxes} boxes in "
        f"{MAX_GENERATION_TRIES} tries; use a larger dim_room or fewer boxes"
    )


@functools.lru_cache(maxsize=64)
def check_generator_args(dim_room: tuple[int, int], num_boxes: int, num_gen_steps: int) -> None:
    """Fail at make time, not at the first reset, when gym-sokoban cannot fill such rooms.

    A trial generation with a fixed seed settles it (a few ms for the usual
    rooms); cached, since search and rollouts make many envs with the same
    arguments.
    """
    for name, value, least in (("rows and columns of dim_room", min(dim_room), 3), ("num_boxes", num_boxes, 1),
                               ("num_gen_steps", num_gen_steps, 1)):
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    if (dim_room[0] - 2) * (dim_room[1] - 2) <= num_boxes:
        raise ValueError(f"a {dim_room} room has {(dim_room[0] - 2) * (dim_room[1] - 2)} cells inside its "
                         f"walls, too few for {num_boxes} boxes and the player; use a larger dim_room")
    try:
        generate_level(np.random.default_rng(0), dim_room, num_boxes, num_gen_steps)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def _int_pair(value, name: str) -> tuple[int, int]:
    try:
        rows, cols = value
        if int(rows) == rows and int(cols) == cols:
            return int(rows), int(cols)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{name} must be two integers [rows, columns], got {value!r}")


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- XSB text


def parse_xsb(level: str) -> tuple[np.ndarray, np.ndarray]:
    """(room_fixed, room_state) of an XSB level; short lines are padded, outside cells become walls."""
    lines = [line.rstrip("\r") for line in level.strip("\n").split("\n")]
    width = max(len(line) for line in lines)
    unknown = set("".join(lines)) - set(XSB)
    if unknown:
        raise ValueError(f"XSB level has unknown characters {sorted(unknown)}; use {''.join(XSB)}")
    cells = [[XSB[ch] for ch in line.ljust(width, "#")] for line in lines]
    fixed = np.array([[f for f, _ in row] for row in cells], dtype=np.int8)
    state = np.array([[s for _, s in row] for row in cells], dtype=np.int8)
    _check_xsb(state, fixed)
    # plain floor the player can never reach (XSB's padding around the walls) is outside
    outside = ~_reachable_ignoring_boxes(fixed, _player_position(state)) & (state == FLOOR)
    fixed[outside] = WALL
    state[outside] = WALL
    return fixed, state


def _check_xsb(state: np.ndarray, fixed: np.ndarray) -> None:
    """Reject levels gym-sokoban's reward rules cannot score: one player, as many boxes as targets."""
    players = int((state == PLAYER).sum())
    boxes = int(np.isin(state, (BOX, BOX_ON_TARGET)).sum())
    targets = int((fixed == TARGET).sum())
    if players != 1:
        raise ValueError(f"an XSB level needs exactly one player (@ or +), found {players}")
    if boxes == 0 or boxes != targets:
        raise ValueError(f"an XSB level needs as many boxes as goals (at least one); found {boxes} and {targets}")


def _reachable_ignoring_boxes(fixed: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Mask of the non-wall cells connected to `start`: the inside of the level."""
    inside = np.zeros(fixed.shape, dtype=bool)
    frontier = [start]
    while frontier:
        r, c = frontier.pop()
        if not _in_grid(fixed, (r, c)) or inside[r, c] or fixed[r, c] == WALL:
            continue
        inside[r, c] = True
        frontier.extend((r + dr, c + dc) for dr, dc in DELTAS)
    return inside


# ---------------------------------------------------------------- grid helpers


def _in_grid(grid: np.ndarray, cell: tuple[int, int]) -> bool:
    return 0 <= cell[0] < grid.shape[0] and 0 <= cell[1] < grid.shape[1]


def _player_position(state: np.ndarray) -> tuple[int, int]:
    r, c = np.argwhere(state == PLAYER)[0]
    return int(r), int(c)


def _cells(mask: np.ndarray) -> list[tuple[int, int]]:
    return [(int(r), int(c)) for r, c in np.argwhere(mask)]


def _manhattan(a: tuple[int, int], b: tuple[int, int]) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def render_rooms(fixed: np.ndarray, state: np.ndarray) -> str:
    """RAGEN's text picture of a room: one row per line, no separators."""
    rows = []
    for fixed_row, state_row in zip(fixed, state):
        rows.append("".join(_symbol(f, s) for f, s in zip(fixed_row, state_row)))
    return "\n".join(rows)


#: rendered symbol -> (room_fixed, room_state): the inverse of `render_rooms`
RENDERED = {
    SYMBOLS[WALL]: (WALL, WALL),
    SYMBOLS[FLOOR]: (FLOOR, FLOOR),
    SYMBOLS[TARGET]: (TARGET, TARGET),
    SYMBOLS[BOX_ON_TARGET]: (TARGET, BOX_ON_TARGET),
    SYMBOLS[BOX]: (FLOOR, BOX),
    SYMBOLS[PLAYER]: (FLOOR, PLAYER),
    PLAYER_ON_TARGET_SYMBOL: (TARGET, PLAYER),
}


def parse_render(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(room_fixed, room_state) from `render_rooms` text: the render is the whole state."""
    rows = text.strip("\n").split("\n")
    unknown = set("".join(rows)) - set(RENDERED)
    if unknown or len({len(row) for row in rows}) != 1:
        raise ValueError(f"not a rendered Sokoban room: {text!r}")
    fixed = np.array([[RENDERED[ch][0] for ch in row] for row in rows], dtype=np.int8)
    state = np.array([[RENDERED[ch][1] for ch in row] for row in rows], dtype=np.int8)
    return fixed, state


def _symbol(fixed: int, state: int) -> str:
    if state == PLAYER and fixed == TARGET:
        return PLAYER_ON_TARGET_SYMBOL
    return SYMBOLS[int(state)]


# ---------------------------------------------------------------- the environment


class SokobanEnv(TextEnv):
    """Push every box onto a target. gym-sokoban's rules and rewards, text observations.

    Args:
        dim_room: (rows, columns) of generated rooms, walls included.
        num_boxes: boxes (and targets) in generated rooms.
        num_gen_steps: random-walk steps of the room generator; gym-sokoban's
            default `int(1.7 * (rows + columns))` when None.
        level: an XSB level; when given, every reset returns this level and
            `dim_room`/`num_boxes` are taken from it.
        render_mode: only "ansi" (text).
        size: shorthand for `dim_room=(size, size)`, matching FrozenLake's argument.
    """

    action_names = ACTIONS
    instruction = (
        "You are solving the Sokoban puzzle. You are the player and you need to push every box "
        "onto a target. When you stand right next to a box, moving towards it pushes it one cell "
        "in that direction. You cannot push a box into a wall or into another box, and you "
        "cannot pull a box. Moving into a wall does nothing."
    )
    legend = (
        "The meaning of each symbol in the state is:\n"
        "#: wall, _: floor, O: target, X: box, √: box on target, P: player, S: player on target"
    )

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        num_gen_steps: int | None = None,
        level: str | None = None,
        render_mode: str | None = "ansi",
        size: int | None = None,
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be 'ansi' or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.level = level
        if size is not None:
            dim_room = (_integer(size, "size"),) * 2
        self._level_rooms = parse_xsb(level) if level is not None else None
        if self._level_rooms is not None:
            fixed, state = self._level_rooms
            dim_room = fixed.shape
            num_boxes = int(np.isin(state, (BOX, BOX_ON_TARGET)).sum())
        self.dim_room = _int_pair(dim_room, "dim_room")
        self.num_boxes = _integer(num_boxes, "num_boxes")
        self.num_gen_steps = int(1.7 * sum(self.dim_room)) if num_gen_steps is None else \
            _integer(num_gen_steps, "num_gen_steps")
        if self._level_rooms is None:
            check_generator_args(self.dim_room, self.num_boxes, self.num_gen_steps)
        self.action_space = spaces.Discrete(len(ACTIONS))
        rows, cols = self.dim_room
        self.observation_space = spaces.Text(max_length=rows * (cols + 1), charset=GRID_CHARSET)

    # -- gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        if self._level_rooms is not None:
            fixed, state = (room.copy() for room in self._level_rooms)
        else:
            fixed, state = generate_level(self.np_random, self.dim_room, self.num_boxes, self.num_gen_steps)
        self.room_fixed, self.room_state = fixed, state
        self.player_position = _player_position(state)
        self.boxes_on_target = self._count_boxes_on_target()
        return self.render(), self._info(moved_player=False, moved_box=False)

    def step(self, action: int) -> tuple[str, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {len(ACTIONS)}), got {action!r}")
        moved_player, moved_box = self._push_or_move(DELTAS[int(action)])
        reward = self._reward()
        return self.render(), reward, self._solved(), False, self._info(moved_player, moved_box)

    def render(self) -> str:
        return render_rooms(self.room_fixed, self.room_state)

    # -- gym-sokoban's step rules

    def _push_or_move(self, delta: tuple[int, int]) -> tuple[bool, bool]:
        """gym-sokoban's `_push`, which falls back to `_move`: (player moved, box moved)."""
        r, c = self.player_position
        ahead, beyond = (r + delta[0], c + delta[1]), (r + 2 * delta[0], c + 2 * delta[1])
        if self._cell(ahead) in (BOX, BOX_ON_TARGET) and self._cell(beyond) in (FLOOR, TARGET):
            self.room_state[beyond] = BOX_ON_TARGET if self.room_fixed[beyond] == TARGET else BOX
            self._walk_to(ahead)
            return True, True
        if self._cell(ahead) in (FLOOR, TARGET):
            self._walk_to(ahead)
            return True, False
        return False, False

    def _cell(self, cell: tuple[int, int]) -> int:
        """room_state at `cell`; outside the grid is wall."""
        return int(self.room_state[cell]) if _in_grid(self.room_state, cell) else WALL

    def _walk_to(self, cell: tuple[int, int]) -> None:
        self.room_state[self.player_position] = self.room_fixed[self.player_position]
        self.room_state[cell] = PLAYER
        self.player_position = cell

    def _reward(self) -> float:
        """gym-sokoban's `_calc_reward`, summed in the same order so the floats match exactly."""
        reward = STEP_PENALTY
        on_target = self._count_boxes_on_target()
        if on_target > self.boxes_on_target:
            reward += BOX_ON_TARGET_REWARD
        elif on_target < self.boxes_on_target:
            reward += BOX_OFF_TARGET_PENALTY
        if self._solved():
            reward += SOLVED_REWARD
        self.boxes_on_target = on_target
        return float(reward)

    def _count_boxes_on_target(self) -> int:
        return int((self.room_state == BOX_ON_TARGET).sum())

    def _solved(self) -> bool:
        return self._count_boxes_on_target() == self.num_boxes

    def _info(self, moved_player: bool, moved_box: bool) -> dict:
        return {
            "success": self._solved(),
            "action_is_valid": True,
            "action_is_effective": bool(moved_player),
            "moved_box": bool(moved_box),
            "boxes_on_target": self.boxes_on_target,
        }

    # -- search support

    def heuristic(self) -> float:
        """Progress towards the solution (higher is better), for the `heuristic` scorer.

        boxes on targets
        - sum over off-target boxes of the Manhattan distance to the nearest free target
        - PLAYER_DISTANCE_WEIGHT * the player's distance to the nearest off-target box
        - DEADLOCK_PENALTY if an off-target box sits in a corner (two orthogonal walls)
        + SOLVED_BONUS when solved.
        The corner-deadlock term is our addition: such a box can never move
        again, so the state is lost however close the box looks.
        """
        boxes = _cells(self.room_state == BOX)
        value = float(self.boxes_on_target)
        if not boxes:
            return value + SOLVED_BONUS
        free_targets = _cells((self.room_fixed == TARGET) & (self.room_state != BOX_ON_TARGET))
        value -= sum(min(_manhattan(b, t) for t in free_targets) for b in boxes)
        value -= PLAYER_DISTANCE_WEIGHT * min(_manhattan(self.player_position, b) for b in boxes)
        if any(self._in_corner(b) for b in boxes):
            value -= DEADLOCK_PENALTY
        return value

    def _in_corner(self, cell: tuple[int, int]) -> bool:
        """True when walls block `cell` both vertically and horizontally: a box there is stuck."""
        def wall(dr: int, dc: int) -> bool:
            neighbour = (cell[0] + dr, cell[1] + dc)
            return not _in_grid(self.room_fixed, neighbour) or self.room_fixed[neighbour] == WALL

        return (wall(-1, 0) or wall(1, 0)) and (wall(0, -1) or wall(0, 1))


register("sokoban", SokobanEnv)

"""FrozenLake as a text environment, on gymnasium's transition table.

The dynamics are gymnasium's `FrozenLakeEnv` by construction: we build its
transition table `P` for the map and sample from it with gymnasium's own
`categorical_sample`, but through this environment's `np_random`. With
`is_slippery`, the intended move succeeds with probability `success_rate` and
each perpendicular move happens with `(1 - success_rate) / 2`. RAGEN keeps
gymnasium's 1/3; the TSR code (and our default) uses 0.8.

Maps are generated per seed like gymnasium's `generate_random_map` (each tile
frozen with probability `p`, redrawn until the goal is reachable), but from
the environment's RNG instead of a separately seeded one.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv as GymFrozenLake
from gymnasium.envs.toy_text.utils import categorical_sample

from envs.base import GRID_CHARSET, TextEnv, register

#: gymnasium's action order: LEFT=0, DOWN=1, RIGHT=2, UP=3
ACTIONS = ["left", "down", "right", "up"]
NEIGHBOURS = ((0, -1), (1, 0), (0, 1), (-1, 0))
#: draws of a random map before giving up on finding one with a path (see random_map)
MAX_MAP_TRIES = 10_000

#: map letter -> text symbol, without and with the player on it
TILE_SYMBOLS = {"S": "_", "F": "_", "H": "O", "G": "G"}
PLAYER_SYMBOLS = {"S": "P", "F": "P", "H": "X", "G": "√"}

# heuristic weights (our own; see FrozenLakeEnv.heuristic)
GOAL_VALUE = 10.0
HOLE_NEIGHBOUR_PENALTY = 0.5
HOLE_MARGIN = 10.0


@dataclass(frozen=True)
class Lake:
    """Everything fixed about one map: its letters, gymnasium's transitions, distances to the goal.

    Immutable, so clones share it instead of deep-copying the table.
    """

    desc: tuple[str, ...]
    #: transitions[s][a] = ((prob, next_state, reward, terminated), ...), gymnasium's P
    transitions: tuple
    #: BFS steps from each state to the nearest goal over non-hole tiles (inf if none)
    goal_distance: tuple[float, ...]
    start: int

    @property
    def ncol(self) -> int:
        return len(self.desc[0])

    def letter(self, s: int) -> str:
        return self.desc[s // self.ncol][s % self.ncol]

    def __deepcopy__(self, memo: dict) -> "Lake":
        return self


@functools.lru_cache(maxsize=1024)
def build_lake(desc: tuple[str, ...], is_slippery: bool, success_rate: float) -> Lake:
    """The `Lake` for a map (cached: search makes many envs on the same few maps)."""
    _check_desc(desc)
    gym_env = GymFrozenLake(desc=list(desc), is_slippery=is_slippery, success_rate=success_rate)
    transitions = tuple(
        tuple(tuple(gym_env.P[s][a]) for a in range(len(ACTIONS))) for s in range(len(gym_env.P))
    )
    start = "".join(desc).index("S")
    return Lake(desc, transitions, tuple(float(d) for d in goal_distances(desc).ravel()), start)


def _check_desc(desc: tuple[str, ...]) -> None:
    if not desc or len({len(row) for row in desc}) != 1 or set("".join(desc)) - set("SFHG"):
        raise ValueError(f"desc must be equal-length rows of S, F, H, G; got {list(desc)}")
    if "".join(desc).count("S") != 1 or "G" not in "".join(desc):
        raise ValueError(f"desc needs exactly one start S and at least one goal G; got {list(desc)}")
    start = "".join(desc).index("S")
    if goal_distances(desc).ravel()[start] == np.inf:
        raise ValueError(f"desc has no path from S to a goal G around the holes; got {list(desc)}")


def goal_distances(desc) -> np.ndarray:
    """BFS steps from every tile to the nearest goal, moving over non-hole tiles (inf if cut off)."""
    rows, cols = len(desc), len(desc[0])
    dist = np.full((rows, cols), np.inf)
    queue = deque((r, c) for r in range(rows) for c in range(cols) if desc[r][c] == "G")
    for r, c in queue:
        dist[r, c] = 0
    while queue:
        r, c = queue.popleft()
        for dr, dc in NEIGHBOURS:
            nr, nc = r + dr, c + dc
            if 0 <= nr < rows and 0 <= nc < cols and desc[nr][nc] != "H" and dist[nr, nc] == np.inf:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def random_map(rng: np.random.Generator, size: int, p: float) -> tuple[str, ...]:
    """gymnasium's `generate_random_map`, drawn from `rng`: S top-left, G bottom-right, a path between.

    gymnasium redraws until a path exists; with few frozen tiles that can be
    forever, so after MAX_MAP_TRIES draws this gives up with a RuntimeError.
    """
    for _ in range(MAX_MAP_TRIES):
        board = rng.choice(["F", "H"], (size, size), p=[p, 1 - p])
        board[0][0], board[-1][-1] = "S", "G"
        if goal_distances(board)[0, 0] < np.inf:
            return tuple("".join(row) for row in board)
    raise RuntimeError(f"no {size}x{size} map with a path from S to G in {MAX_MAP_TRIES} draws at p={p}; "
                       "raise p (the share of frozen tiles) or lower size")


@functools.lru_cache(maxsize=64)
def check_map_args(size: int, p: float) -> None:
    """Fail at make time, not at the first reset, when no map with a path is likely (cached)."""
    if size < 2:
        raise ValueError(f"size must be at least 2 (the start and the goal are distinct tiles), got {size}")
    try:
        random_map(np.random.default_rng(0), size, p)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


class FrozenLakeEnv(TextEnv):
    """Cross the lake from the start to the goal without falling into a hole.

    Args:
        size: side of generated maps.
        p: probability that a generated tile is frozen (else a hole).
        desc: an explicit map, rows of S (start), F (frozen), H (hole), G (goal);
            when given, every reset uses it.
        is_slippery: whether moves may slip to a perpendicular direction.
        success_rate: probability that a slippery move goes the intended way.
        render_mode: only "ansi" (text).
    """

    action_names = ACTIONS
    instruction = (
        "You are solving the FrozenLake puzzle. Walk from your position to the goal without "
        "falling into a hole. The ice is slippery: a move may take you in a perpendicular "
        "direction instead of the one you chose. Moving into the edge keeps you in place."
    )
    legend = (
        "The meaning of each symbol in the state is:\n"
        "P: player, _: frozen ice, O: hole, G: goal, X: player in a hole, √: player on the goal"
    )

    def __init__(
        self,
        size: int = 4,
        p: float = 0.8,
        desc: list[str] | None = None,
        is_slippery: bool = True,
        success_rate: float = 0.8,
        render_mode: str | None = "ansi",
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be 'ansi' or None, got {render_mode!r}")
        if not _is_number(p) or not 0 < p <= 1:
            raise ValueError(f"p (probability of a frozen tile) must be in (0, 1], got {p!r}")
        if not _is_number(success_rate) or not 0 <= success_rate <= 1:
            raise ValueError(f"success_rate must be in [0, 1], got {success_rate!r}")
        if desc is not None and (isinstance(desc, str) or not all(isinstance(row, str) for row in desc)):
            raise ValueError(f"desc must be a list of rows (strings of S, F, H, G), got {desc!r}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"size must be an integer, got {size!r}")
        self.render_mode = render_mode
        self.desc = tuple(desc) if desc is not None else None
        if self.desc is not None:
            build_lake(self.desc, bool(is_slippery), float(success_rate))  # fail fast on a bad map
        self.size, self.p = int(size), float(p)
        if self.desc is None:
            check_map_args(self.size, self.p)
        self.is_slippery, self.success_rate = bool(is_slippery), float(success_rate)
        rows, cols = (len(self.desc), len(self.desc[0])) if self.desc else (self.size, self.size)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Text(max_length=rows * (cols + 1), charset=GRID_CHARSET)

    # -- gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        desc = self.desc or random_map(self.np_random, self.size, self.p)
        self.lake = build_lake(desc, self.is_slippery, self.success_rate)
        self.s = self.lake.start
        return self.render(), self._info(moved=False, prob=1.0)

    def step(self, action: int) -> tuple[str, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {len(ACTIONS)}), got {action!r}")
        transitions = self.lake.transitions[self.s][int(action)]
        i = categorical_sample([t[0] for t in transitions], self.np_random)
        prob, s, reward, terminated = transitions[i]
        moved, self.s = s != self.s, int(s)
        return self.render(), float(reward), bool(terminated), False, self._info(moved, prob)

    def render(self) -> str:
        ncol = self.lake.ncol
        rows = []
        for r, row in enumerate(self.lake.desc):
            rows.append("".join(
                (PLAYER_SYMBOLS if r * ncol + c == self.s else TILE_SYMBOLS)[letter]
                for c, letter in enumerate(row)
            ))
        return "\n".join(rows)

    def _info(self, moved: bool, prob: float) -> dict:
        return {
            "success": self.lake.letter(self.s) == "G",
            "action_is_valid": True,
            "action_is_effective": bool(moved),
            "prob": float(prob),
        }

    # -- search support

    def heuristic(self) -> float:
        """Risk-aware progress (higher is better), for the `heuristic` scorer.

        GOAL_VALUE at the goal; in a hole, below every other state; otherwise
        minus the BFS distance to the goal over non-hole tiles, minus
        HOLE_NEIGHBOUR_PENALTY per neighbouring hole (each one is a chance to
        slip in).
        """
        n_tiles = len(self.lake.goal_distance)
        letter = self.lake.letter(self.s)
        if letter == "G":
            return GOAL_VALUE
        if letter == "H":
            return -(n_tiles + 4 * HOLE_NEIGHBOUR_PENALTY + HOLE_MARGIN)
        distance = min(self.lake.goal_distance[self.s], n_tiles)
        return float(-distance - HOLE_NEIGHBOUR_PENALTY * self._neighbouring_holes())

    def _neighbouring_holes(self) -> int:
        rows, cols = len(self.lake.desc), self.lake.ncol
        r, c = divmod(self.s, cols)
        return sum(
            self.lake.desc[r + dr][c + dc] == "H"
            for dr, dc in NEIGHBOURS
            if 0 <= r + dr < rows and 0 <= c + dc < cols
        )


register("frozenlake", FrozenLakeEnv)

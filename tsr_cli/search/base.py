"""What every search strategy shares: config, cost accounting and the batched turn.

A strategy finishes a list of *real* episodes in place. It may fork them as
often as it likes to try candidates; forks step cloned environments, whose
steps count as simulated. When a strategy has chosen a trajectory it replays
that trajectory's responses on the real episode, so the real environment is
stepped exactly once per action of the returned trajectory and never by a
discarded candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from statistics import fmean
from typing import Callable, Sequence

from tsr_cli.agent.episode import Episode, StepMeter
from tsr_cli.policies.base import GenerationStats, Policy, SamplingParams
from tsr_cli.policies.sampling import derive_seed, stream_generator


#: `search.learn_from` values: the paper's TSR, or sibling credit
LEARN_FROM = ("chosen", "siblings")


@dataclass(frozen=True)
class SearchConfig:
    """Which strategy, and its knobs."""

    strategy: str = "none"
    #: M: candidates per beam and turn (beam, lookahead); N samples per episode (best-of-n)
    candidates: int = 4
    #: B: beams kept per episode (beam)
    beam_width: int = 1
    #: D: extra turns rolled out to score a candidate (lookahead)
    depth: int = 2
    #: lookahead roll-outs decode greedily instead of sampling
    lookahead_greedy: bool = False
    #: score by expected outcome: each candidate's response is re-run on `fresh_samples`
    #: clones with new RNGs and the scores averaged (beam, lookahead; best-of-n re-runs each
    #: whole sample; `none` ignores it). false (the default) is the paper's TSR: clones copy
    #: the RNG, so the outcome scored is the one that will happen. That is exact at test
    #: time, but in training on a slippery env it keeps moves that only worked by a lucky
    #: slip; true scores the move, not the draw, at fresh_samples x the simulated steps.
    #: Deterministic envs (Sokoban, WebShop) get the same ranking either way.
    fresh_rng: bool = False
    fresh_samples: int = 4
    #: scorer name (`env_reward`, `heuristic`) or `module:function`
    scorer: str = "env_reward"
    #: what training learns from. `chosen` (the paper's TSR): only the kept trajectory.
    #: `siblings`: also every candidate the search scored, each trained as its own row
    #: (the conversation up to its turn + its response) with advantage (score - mean) /
    #: std within its turn's group; invalid candidates rank lowest, so get a negative
    #: advantage, and all-tied turns add nothing (beam, lookahead). For best-of-n the
    #: siblings are the pool's whole samples: plain GRPO over the pool. Training only;
    #: evaluation never records siblings (search/siblings.py).
    learn_from: str = "chosen"
    #: loss weight of every sibling-row token, against 1 for the chosen trajectory's tokens
    sibling_weight: float = 1.0
    #: seed for the fresh-RNG clones
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown search strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        for name in ("candidates", "beam_width", "fresh_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"search.{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 0:
            raise ValueError(f"search.depth must be >= 0, got {self.depth}")
        if self.learn_from not in LEARN_FROM:
            raise ValueError(f"search.learn_from must be one of {', '.join(LEARN_FROM)}, got {self.learn_from!r}")
        if self.sibling_weight < 0:
            raise ValueError(f"search.sibling_weight must be >= 0, got {self.sibling_weight}")

    @property
    def records_siblings(self) -> bool:
        """Whether the strategy keeps the candidate groups it scored (`learn_from: siblings`)."""
        return self.learn_from == "siblings"


@dataclass
class SearchCost:
    """What a rollout spent."""

    generation: GenerationStats = field(default_factory=GenerationStats)
    meter: StepMeter = field(default_factory=StepMeter)
    wall_seconds: float = 0.0

    @property
    def tokens_generated(self) -> int:
        return self.generation.tokens

    @property
    def generate_calls(self) -> int:
        return self.generation.calls

    @property
    def env_steps(self) -> int:
        return self.meter.env_steps

    @property
    def sim_env_steps(self) -> int:
        return self.meter.sim_env_steps

    def as_dict(self) -> dict:
        return {
            "tokens_generated": self.tokens_generated,
            "generate_calls": self.generate_calls,
            "env_steps": self.env_steps,
            "sim_env_steps": self.sim_env_steps,
            "wall_seconds": round(self.wall_seconds, 3),
        }


class GroupStreams:
    """One random stream per instance group: its sampler draws and its fresh-RNG seeds.

    Group g's draws come from a generator seeded from (root..., g) and its
    fresh-RNG clones get seeds from a counter of its own, so what a group
    samples depends on the root and its group id alone: not on which other
    groups share its batch, nor on which process rolls it out. The trainer's
    root is (run seed, kind, step) and its group ids are global, which makes
    a data-parallel step sample what a single process samples, and a resumed
    run sample what an uninterrupted one did, with no RNG state saved.
    """

    #: key tag of the fresh-RNG seeds, beside the sampler's generator
    FRESH = 1

    def __init__(self, root: Sequence[int]):
        self.root = tuple(int(k) for k in root)
        self._generators: dict[int, object] = {}
        self._fresh: dict[int, int] = {}

    def generator(self, group: int):
        """The sampler stream of `group` (created on first use, then continued)."""
        if group not in self._generators:
            self._generators[group] = stream_generator(*self.root, group)
        return self._generators[group]

    def fresh_seed(self, group: int) -> int:
        """The next seed for a fresh-RNG clone of one of `group`'s episodes."""
        count = self._fresh[group] = self._fresh.get(group, 0) + 1
        return derive_seed(*self.root, group, self.FRESH, count)


class SearchContext:
    """The policy, sampling params, scorer and cost counters one rollout shares.

    streams: per-group random streams (the trainer's rollouts); None draws
    from the policy's own generator and one fresh-seed counter (`tsr eval`).
    """

    def __init__(self, policy: Policy, params: SamplingParams, cfg: SearchConfig,
                 scorer: Callable, cost: SearchCost, streams: GroupStreams | None = None):
        self.policy = policy
        self.params = params
        self.cfg = cfg
        self.scorer = scorer
        self.cost = cost
        self.streams = streams
        #: the policy's context window in tokens (None: unbounded, e.g. the random policy)
        self.context_length = getattr(policy, "context_length", None)
        self._fresh_seed = cfg.seed * 1_000_003

    def playable(self, ep: Episode) -> bool:
        """Whether `ep` plays another turn. An episode whose next prompt plus
        `max_new_tokens` would overflow the model's context ends here, truncated."""
        if not ep.done and not ep.fits(self.params.max_new_tokens, self.context_length):
            ep.truncate()
        return not ep.done

    def generate(self, episodes: Sequence[Episode], n: int, greedy: bool = False):
        """One batched policy call for every episode's prompt, `n` samples each."""
        params = self.params
        if greedy:
            params = replace(params, temperature=0.0, top_p=1.0)
        prompts = [ep.prompt() for ep in episodes]
        if self.streams is None:
            out = self.policy.generate(prompts, n, params)
        else:
            streams = [self.streams.generator(ep.traj.group) for ep in episodes]
            out = self.policy.generate(prompts, n, params, streams=streams)
        self.cost.generation.add(out)
        return out

    def advance(self, episodes: Sequence[Episode], greedy: bool = False) -> None:
        """Play one turn of every unfinished episode with one sample each."""
        live = [ep for ep in episodes if self.playable(ep)]
        if live:
            for ep, (completion,) in zip(live, self.generate(live, 1, greedy)):
                ep.apply(completion)

    def play_out(self, episodes: Sequence[Episode], greedy: bool = False) -> None:
        while any(not ep.done for ep in episodes):
            self.advance(episodes, greedy)

    def outcomes(self, parent: Episode, path: Episode, fork: bool = False) -> list[Episode]:
        """Where the responses `path` played since `parent` lead, as episodes to score.

        Copied RNG (the paper's TSR): `path` itself, whose outcome is the one the
        real environment will produce on replay (a fork of it when the caller
        plays on, as look-ahead does). With `fresh_rng`: `fresh_samples` forks of
        `parent` with new RNGs that re-run the same responses, so a candidate is
        judged by its expected outcome rather than by the one draw that will
        happen (SPEC section 3). The chosen candidate itself still stepped the
        copied RNG, so replay meets exactly its outcome.
        """
        if not self.cfg.fresh_rng:
            return [path.fork() if fork else path]
        sims = []
        for _ in range(self.cfg.fresh_samples):
            sim = parent.fork(fresh_rng=True, seed=self._next_fresh_seed(parent))
            for turn in path.traj.turns[parent.turn:]:
                if sim.done:
                    break
                sim.apply(turn.completion)
            sims.append(sim)
        return sims

    def _next_fresh_seed(self, parent: Episode) -> int:
        if self.streams is not None:
            return self.streams.fresh_seed(parent.traj.group)
        self._fresh_seed += 1
        return self._fresh_seed

    def estimate(self, parent: Episode, outcomes: Sequence[Episode]) -> tuple[float, float, float]:
        """Mean (success, return, score) over `outcomes`; each is scored from
        `parent`'s state through every action and reward since, to its own state."""
        rows = [(float(ep.traj.success), ep.traj.total_return, self._score(parent, ep)) for ep in outcomes]
        return tuple(fmean(column) for column in zip(*rows))

    def _score(self, parent: Episode, ep: Episode) -> float:
        turns = ep.traj.turns[parent.turn:]
        actions = [a for t in turns for a in t.executed]
        rewards = [r for t in turns for r in t.rewards]
        return float(self.scorer(parent.env, actions, ep.env, rewards))


def rank_key(turn_ok: bool, score: float, ret: float) -> tuple:
    """Candidates sort by this, descending: valid first, then score, then return so far."""
    return (bool(turn_ok), float(score), float(ret))


def top(items: list, key: Callable, k: int) -> list:
    """The k best items, highest key first; ties keep their original order."""
    order = sorted(range(len(items)), key=lambda i: (key(items[i]), -i), reverse=True)
    return [items[i] for i in order[:k]]


class CloneMismatch(RuntimeError):
    """Replaying a chosen trajectory on the real env gave another outcome than on its clone."""


def replay(real: Episode, chosen: Episode) -> None:
    """Apply the chosen trajectory's responses to the real episode, turn by turn."""
    for turn in chosen.traj.turns[real.turn:]:
        real.apply(turn.completion)
    if chosen.traj.truncated and not real.done:
        real.truncate()
    if real.env.render() != chosen.env.render() or real.done != chosen.done:
        raise CloneMismatch(
            f"{real.traj.env_name} seed {real.traj.seed}: the real environment diverged from "
            "its clone on replay; clone() must copy the whole state, RNG included"
        )


Strategy = Callable[[SearchContext, list], None]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, fn: Strategy) -> None:
    STRATEGIES[name] = fn

"""The four search strategies (SPEC section 3).

Each is a plain function `(ctx, episodes) -> None` that finishes the real
episodes in place. Every policy call of a turn is batched across all episodes
and candidates: `none` and `best-of-n` make one call per turn, `beam` one,
and `lookahead` one plus one per look-ahead turn.
"""

from __future__ import annotations

from collections import defaultdict

from tsr_cli.agent.episode import Episode
from tsr_cli.search.base import (
    SearchContext,
    rank_key,
    register_strategy,
    replay,
    top,
)
from tsr_cli.search.siblings import pool_group, turn_group


def run_none(ctx: SearchContext, episodes: list[Episode]) -> None:
    """Plain sampling: one response per turn, straight on the real environment."""
    ctx.play_out(episodes)


def run_best_of_n(ctx: SearchContext, episodes: list[Episode]) -> None:
    """Sample N whole trajectories per episode and keep the best.

    Samples rank by success, then return, then the scorer over the whole
    trajectory: with `env_reward` that is the TSR code's ranking by return;
    `heuristic` separates samples of equal return by how far they got. With
    `fresh_rng` all three are means over the sample's responses re-run with
    new RNGs, so a sample that only succeeded by a lucky slip ranks by how
    often those responses succeed. Members of one instance group (same
    `traj.group`) pool their samples: a group of G keeps its top G of G*N, so
    G=16 with N=2 is the TSR code's "keep 16 of 32".
    """
    n = ctx.cfg.candidates
    samples = [[ep.fork() for _ in range(n)] for ep in episodes]
    ctx.play_out([s for per_ep in samples for s in per_ep])
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        groups[ep.traj.group].append(i)
    for members in groups.values():
        pool = [(episodes[i], s) for i in members for s in samples[i]]
        for i, best in zip(members, best_finished(ctx, pool, len(members))):
            replay(episodes[i], best)
        if ctx.cfg.records_siblings:  # the whole pool, once per instance group
            episodes[members[0]].traj.siblings = [pool_group([s.traj for _, s in pool])]


def best_finished(ctx: SearchContext, pool: list[tuple[Episode, Episode]], k: int) -> list[Episode]:
    """The k best of (start, finished episode) pairs, ranked by `ctx.estimate`
    of where each went from its start: success, return, then the scorer."""
    if len(pool) <= k:
        return [ep for _, ep in pool]
    ranked = [(ctx.estimate(start, ctx.outcomes(start, ep)), ep) for start, ep in pool]
    return [ep for _, ep in top(ranked, lambda r: r[0], k)]


class _Beam:
    __slots__ = ("ep", "key")

    def __init__(self, ep: Episode, key: tuple):
        self.ep = ep
        self.key = key

    def rank(self) -> tuple:
        """Beams sort by this, descending: their rank key, then live before finished.

        A finished beam (fell into a hole, or out of context) keeps competing
        for a slot, but on a tie a live candidate, which can still improve,
        takes it.
        """
        return (*self.key, not self.ep.done)


def run_beam(ctx: SearchContext, episodes: list[Episode]) -> None:
    """Each turn, every live beam samples M candidates; the best B of all continue.

    A candidate runs on a clone of its beam and is scored there (or, with
    `fresh_rng`, on `fresh_samples` clones with new RNGs). Finished
    beams keep their place in the pool and compete with new candidates. At the
    end, the beam with the best outcome (success, return, then the scorer over
    the whole trajectory; expected values with `fresh_rng`) is replayed.
    """
    cfg = ctx.cfg
    beams = [[_Beam(ep.fork(), rank_key(True, 0.0, 0.0))] for ep in episodes]
    siblings = [[] for _ in episodes]
    while True:
        live = [(i, b) for i, per_ep in enumerate(beams) for b in per_ep if ctx.playable(b.ep)]
        if not live:
            break
        pools = [[b for b in per_ep if b.ep.done] for per_ep in beams]
        outs = ctx.generate([b.ep for _, b in live], cfg.candidates)
        for (i, beam), completions in zip(live, outs):
            scored = []
            for completion in completions:
                child = beam.ep.fork()
                turn = child.apply(completion)
                _, ret, score = ctx.estimate(beam.ep, ctx.outcomes(beam.ep, child))
                pools[i].append(_Beam(child, rank_key(turn.format_ok, score, ret)))
                scored.append((turn, score))
            if cfg.records_siblings:
                siblings[i].append(turn_group(beam.ep.prompt(), scored))
        beams = [top(pool, _Beam.rank, cfg.beam_width) for pool in pools]
    for ep, per_ep, groups in zip(episodes, beams, siblings):
        replay(ep, best_finished(ctx, [(ep, b.ep) for b in per_ep], 1)[0])
        ep.traj.siblings = groups


def run_lookahead(ctx: SearchContext, episodes: list[Episode]) -> None:
    """Each turn, sample M candidates and roll each D turns further to score it.

    The candidate is scored by what its look-ahead reached: the scorer sees
    the state before the candidate, every action and reward of the candidate
    and its look-ahead turns, and the state at the end. With `fresh_rng` the
    candidate is re-run on `fresh_samples` clones with new RNGs, each rolled
    D turns, and the scores are averaged. The look-ahead turns are thrown
    away; only the best candidate's own turn is kept.
    """
    cfg = ctx.cfg
    current = [ep.fork() for ep in episodes]
    siblings = [[] for _ in episodes]
    while True:
        live = [i for i, ep in enumerate(current) if ctx.playable(ep)]
        if not live:
            break
        outs = ctx.generate([current[i] for i in live], cfg.candidates)
        cands = []  # (episode index, child, candidate turn, its look-ahead probes)
        for i, completions in zip(live, outs):
            for completion in completions:
                child = current[i].fork()
                turn = child.apply(completion)
                cands.append((i, child, turn, ctx.outcomes(current[i], child, fork=True)))
        probes = [p for *_, per_cand in cands for p in per_cand]
        for _ in range(cfg.depth):
            ctx.advance(probes, greedy=cfg.lookahead_greedy)
        best: dict[int, tuple] = {}
        scored = defaultdict(list)
        for i, child, turn, per_cand in cands:
            _, ret, score = ctx.estimate(current[i], per_cand)
            key = rank_key(turn.format_ok, score, ret)
            if i not in best or key > best[i][0]:
                best[i] = (key, child)
            scored[i].append((turn, score))
        for i, (_, child) in best.items():
            if cfg.records_siblings:
                siblings[i].append(turn_group(current[i].prompt(), scored[i]))
            current[i] = child
    for ep, chosen, groups in zip(episodes, current, siblings):
        replay(ep, chosen)
        ep.traj.siblings = groups


register_strategy("none", run_none)
register_strategy("best-of-n", run_best_of_n)
register_strategy("beam", run_beam)
register_strategy("lookahead", run_lookahead)

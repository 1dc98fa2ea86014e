"""Search strategies: determinism, batching, no leaks into the real env, ranking rules."""

import pytest

import envs
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.random import RandomPolicy
from tsr_cli.rollout import rollout
from tsr_cli.search import SearchConfig

STRATEGIES = ["none", "best-of-n", "beam", "lookahead"]
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=32)


def run(env="sokoban", strategy="beam", seeds=range(6), policy=None, group_size=1, **search):
    policy = policy or RandomPolicy(seed=0)
    cfg = SearchConfig(strategy, **search)
    return rollout(policy, lambda: envs.make(env), list(seeds), cfg, PARAMS, ProtocolConfig(),
                   env_name=env, group_size=group_size)


def fingerprint(result):
    return [(t.seed, t.actions(), [turn.rewards for turn in t.turns], t.token_ids()) for t in result.trajectories]


@pytest.mark.parametrize("env", ["sokoban", "frozenlake"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_rollouts(env, strategy):
    a = run(env, strategy, scorer="heuristic")
    b = run(env, strategy, scorer="heuristic")
    assert fingerprint(a) == fingerprint(b)
    assert a.cost.env_steps == b.cost.env_steps and a.cost.sim_env_steps == b.cost.sim_env_steps
    c = run(env, strategy, policy=RandomPolicy(seed=1), scorer="heuristic")
    assert fingerprint(a) != fingerprint(c)


@pytest.mark.parametrize("env", ["sokoban", "frozenlake"])
@pytest.mark.parametrize("strategy", ["best-of-n", "beam", "lookahead"])
def test_simulated_steps_never_reach_the_real_env(env, strategy, monkeypatch):
    made = []

    def make():
        made.append(envs.make(env))
        return made[-1]

    cfg = SearchConfig(strategy, scorer="heuristic", beam_width=2)
    result = rollout(RandomPolicy(seed=3), make, list(range(8)), cfg, PARAMS, ProtocolConfig(), env_name=env)
    executed = 0
    for real, traj in zip(made, result.trajectories):
        replica = envs.make(env)
        replica.reset(seed=traj.seed)
        for action in traj.actions():
            parsed = replica.parse_action(action)
            if parsed is not None:
                replica.step(parsed)
                executed += 1
        assert replica.render() == real.render()
    assert result.cost.env_steps == executed
    assert result.cost.sim_env_steps > 0


def test_none_uses_no_simulation():
    assert run("sokoban", "none").cost.sim_env_steps == 0


class CountingRandom(RandomPolicy):
    """A random policy that records how many prompts and samples each call had."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def generate(self, prompts, n, params):
        self.calls.append((len(prompts), n))
        return super().generate(prompts, n, params)


@pytest.mark.parametrize("strategy,per_turn", [("none", 1), ("best-of-n", 1), ("beam", 1), ("lookahead", 3)])
def test_one_batched_call_per_turn(strategy, per_turn):
    policy = CountingRandom(seed=0)
    result = run("sokoban", strategy, seeds=range(5), policy=policy, candidates=4, depth=2)
    max_turns = envs.make("sokoban").max_turns
    assert len(policy.calls) <= max_turns * per_turn
    assert len(policy.calls) >= max(len(t.turns) for t in result.trajectories)
    first_prompts, first_n = policy.calls[0]
    expected = {"none": (5, 1), "best-of-n": (20, 1), "beam": (5, 4), "lookahead": (5, 4)}[strategy]
    assert (first_prompts, first_n) == expected


class Scripted:
    """A policy whose i-th sample of every prompt is `texts[i]`."""

    name = "scripted"

    def __init__(self, texts):
        self.codec = ByteCodec()
        self.texts = texts
        self.stats = GenerationStats()

    def generate(self, prompts, n, params):
        out = []
        for _ in prompts:
            group = []
            for i in range(n):
                text = self.texts[i % len(self.texts)]
                group.append(Completion(self.codec.encode(text) + [self.codec.eos_token_id], [0.0] * (len(text) + 1), text))
            out.append(group)
        self.stats.add(out)
        return out


def test_invalid_responses_rank_below_valid_ones():
    level = "#####\n#@$.#\n#####"
    # the scorer prefers the invalid response; search must not
    policy = Scripted(["<answer>dance</answer>", "<answer>right</answer>"])
    cfg = SearchConfig("beam", candidates=2, scorer="tests.search.test_search:prefers_invalid")
    result = rollout(policy, lambda: envs.make("sokoban", level=level), [0], cfg, PARAMS, ProtocolConfig(),
                     env_name="sokoban")
    traj = result.trajectories[0]
    assert traj.turns[0].actions == ("right",) and traj.success


def prefers_invalid(before, actions, after, rewards):
    return 100.0 if not rewards else 0.0


def test_best_of_n_pools_group_members():
    result = run("sokoban", "best-of-n", seeds=range(4), group_size=3, candidates=2, scorer="env_reward")
    by_group = {}
    for t in result.trajectories:
        by_group.setdefault(t.group, []).append(t)
    assert all(len(members) == 3 for members in by_group.values())
    assert all(len({t.seed for t in members}) == 1 for members in by_group.values())


def test_fresh_rng_scoring_is_deterministic():
    a = run("frozenlake", "beam", fresh_rng=True, fresh_samples=3, scorer="heuristic")
    b = run("frozenlake", "beam", fresh_rng=True, fresh_samples=3, scorer="heuristic")
    assert fingerprint(a) == fingerprint(b)
    plain = run("frozenlake", "beam", scorer="heuristic")
    assert a.cost.sim_env_steps > plain.cost.sim_env_steps


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown search strategy"):
        SearchConfig("greedy-ish")


class Cycling(Scripted):
    """A policy whose k-th completion of a call, counting across prompts, is `texts[k]`
    (cyclically); it records each call's (prompts, n)."""

    def __init__(self, texts):
        super().__init__(texts)
        self.calls = []

    def generate(self, prompts, n, params):
        self.calls.append((len(prompts), n))
        out, k = [], 0
        for _ in prompts:
            group = []
            for _ in range(n):
                text = self.texts[k % len(self.texts)]
                k += 1
                ids = self.codec.encode(text) + [self.codec.eos_token_id]
                group.append(Completion(ids, [0.0] * len(ids), text))
            out.append(group)
        self.stats.add(out)
        return out


def lake_rollout(policy, desc, strategy, seeds=(0,), max_turns=3, slippery=False, **search):
    make = lambda: envs.make("frozenlake", desc=desc, is_slippery=slippery)
    return rollout(policy, make, list(seeds), SearchConfig(strategy, **search), PARAMS,
                   ProtocolConfig(max_turns=max_turns, max_actions_per_turn=1), env_name="frozenlake")


@pytest.mark.parametrize("desc,third_turn_prompts,success", [
    # "down" falls into a hole at turn 1; at turn 2 the live beam's two candidates tie with it
    (["SFFF", "HFFF", "FFFF", "FFFG"], 2, False),
    # "down" reaches the goal at turn 1: a finished beam that is strictly better keeps its slot
    (["SFFF", "GFFF", "FFFF", "FFFF"], 1, True),
])
def test_beam_ties_go_to_live_beams(desc, third_turn_prompts, success):
    policy = Cycling(["<answer>down</answer>", "<answer>right</answer>"])
    result = lake_rollout(policy, desc, "beam", candidates=2, beam_width=2, scorer="env_reward")
    assert policy.calls[:2] == [(1, 2), (1, 2)]
    assert policy.calls[2] == (third_turn_prompts, 2)
    assert result.trajectories[0].success == success


@pytest.mark.parametrize("scorer,kept", [("env_reward", "up"), ("heuristic", "right")])
def test_best_of_n_breaks_return_ties_with_the_scorer(scorer, kept):
    # every sample returns 0; the heuristic prefers the one that moved towards the goal
    policy = Cycling(["<answer>up</answer>", "<answer>right</answer>"])
    result = lake_rollout(policy, ["SFFF", "FFFF", "FFFF", "FFFG"], "best-of-n", max_turns=1,
                          candidates=2, scorer=scorer)
    assert result.trajectories[0].actions() == [kept]


def test_best_of_n_still_ranks_success_and_return_before_the_scorer():
    # "down" reaches the goal; the scorer prefers the other sample, which must not matter
    policy = Cycling(["<answer>right</answer>", "<answer>down</answer>"])
    result = lake_rollout(policy, ["SFF", "GFF"], "best-of-n", max_turns=1, candidates=2,
                          scorer="tests.search.test_search:prefers_failure")
    assert result.trajectories[0].actions() == ["down"] and result.trajectories[0].success


def prefers_failure(before, actions, after, rewards):
    return -sum(rewards)


#: S sits between two holes with the goal above it. "up" reaches the goal with
#: probability 0.8 (the good move); "left" walks into a hole unless it slips
#: up, probability 0.1 (the lucky move). On seeds 3, 29 and 34 the first slip
#: draw is below 0.1: that draw makes "left" slip onto the goal and "up" slip
#: into a hole.
LUCKY_LAKE = ["FGF", "HSH", "FHF"]
LUCKY_SEEDS = (3, 29, 34)


@pytest.mark.parametrize("strategy", ["best-of-n", "beam", "lookahead"])
@pytest.mark.parametrize("fresh_rng,move", [(False, "left"), (True, "up")])
def test_fresh_rng_picks_the_good_move_and_copied_rng_the_lucky_one(strategy, fresh_rng, move):
    policy = Cycling(["<answer>left</answer>", "<answer>up</answer>"])
    result = lake_rollout(policy, LUCKY_LAKE, strategy, seeds=LUCKY_SEEDS, slippery=True, candidates=2,
                          scorer="env_reward", fresh_rng=fresh_rng, fresh_samples=16)
    for traj in result.trajectories:
        assert traj.actions() == [move]
        # the kept move meets the real environment's draw: lucky "left" succeeds, good "up" slips
        assert traj.success == (move == "left")
    if fresh_rng:
        assert result.cost.sim_env_steps >= len(LUCKY_SEEDS) * 2 * 16


def test_fresh_rng_is_accepted_and_changes_nothing_without_search():
    plain = run("frozenlake", "none", seeds=range(4))
    fresh = run("frozenlake", "none", seeds=range(4), fresh_rng=True)
    assert fingerprint(plain) == fingerprint(fresh) and fresh.cost.sim_env_steps == 0


@pytest.mark.parametrize("strategy", ["best-of-n", "lookahead"])
def test_fresh_rng_scoring_is_deterministic_for_every_strategy(strategy):
    a = run("frozenlake", strategy, fresh_rng=True, fresh_samples=3, scorer="heuristic")
    b = run("frozenlake", strategy, fresh_rng=True, fresh_samples=3, scorer="heuristic")
    assert fingerprint(a) == fingerprint(b)
    assert a.cost.sim_env_steps > run("frozenlake", strategy, scorer="heuristic").cost.sim_env_steps

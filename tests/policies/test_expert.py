"""The `expert` policy: it reads the prompt the agent protocol built and answers in its format."""

import pytest

import envs
from tsr_cli.agent.episode import Episode
from tsr_cli.agent.parse import parse_response
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.evaluate import eval_seeds, evaluate
from tsr_cli.policies import load_policy
from tsr_cli.policies.base import SamplingParams
from tsr_cli.search import SearchConfig
from envs.sokoban_solver import solve

PARAMS = SamplingParams(temperature=0.0)


def expert(env="sokoban", **kw):
    return load_policy("expert", env_names=[env], **kw)


@pytest.mark.parametrize("answer_only", [True, False])
def test_answers_in_the_protocol_format(answer_only):
    policy = expert()
    cfg = ProtocolConfig(answer_only=answer_only)
    episode = Episode.start(envs.make("sokoban"), policy.codec, cfg, seed=3)
    completion = policy.generate([episode.prompt()], 1, PARAMS)[0][0]
    parsed = parse_response(cfg.prefill + completion.text, 2, open_ended=answer_only)
    assert list(parsed.parts) == solve(episode.env)[:2]
    assert parsed.has_think == (not answer_only)
    assert completion.token_ids == policy.codec.encode(completion.text)


def test_view_reads_turn_budget_and_history():
    policy = expert("frozenlake", max_turns=7)
    episode = Episode.start(envs.make("frozenlake"), policy.codec, ProtocolConfig(max_actions_per_turn=3), seed=0)
    for _ in range(2):
        episode.apply(policy.generate([episode.prompt()], 1, PARAMS)[0][0])
        if episode.done:
            pytest.skip("the episode ended early")
    view = policy.view(episode.prompt())
    assert view.turns_left == 5 and view.actions_per_turn == 3
    assert view.observation == episode.observation
    assert view.history == tuple(turn.actions for turn in episode.traj.turns)


@pytest.mark.parametrize("env", ["sokoban", "webshop"])
def test_deterministic_experts_win_every_held_out_episode(env):
    policy = expert(env)
    result = evaluate(policy, envs.factory(env), eval_seeds(8), SearchConfig(), PARAMS,
                      ProtocolConfig(answer_only=True), env_name=env)
    assert result["success_rate"] == 1.0 and result["invalid_action_rate"] == 0.0


def test_noise_draws_legal_actions_and_is_seeded():
    def answers(seed):
        policy = expert("frozenlake", noise=1.0, seed=seed)
        episode = Episode.start(envs.make("frozenlake"), policy.codec, ProtocolConfig(), seed=0)
        return [c.text for c in policy.generate([episode.prompt()], 30, PARAMS)[0]]

    texts = answers(0)
    parts = {p for text in texts for p in parse_response(text, 2).parts}
    assert parts == {"left", "down", "right", "up"}
    assert texts == answers(0) and texts != answers(1)


def test_bad_noise_is_refused():
    with pytest.raises(ValueError, match="noise"):
        expert(noise=1.5)

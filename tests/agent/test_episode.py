"""The multi-turn protocol: token bookkeeping, rewards, format penalty, forks."""

import pytest

import envs
from tsr_cli.agent.episode import Episode
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.policies.base import Completion
from tsr_cli.policies.codecs import ByteCodec

LEVEL = "######\n#@ $.#\n######"  # solved by right, right


def reply(codec, text, eos=True):
    ids = codec.encode(text) + ([codec.eos_token_id] if eos else [])
    return Completion(ids, [-0.5] * len(ids), text, "stop" if eos else "length")


def start(cfg=ProtocolConfig(), level=LEVEL):
    return Episode.start(envs.make("sokoban", level=level), ByteCodec(), cfg, seed=0, env_name="sokoban")


@pytest.mark.parametrize("answer_only", [False, True])
@pytest.mark.parametrize("eos", [True, False])
def test_context_is_exactly_the_rendered_conversation(answer_only, eos):
    cfg = ProtocolConfig(max_turns=3, answer_only=answer_only)
    ep = start(cfg)
    codec = ep.codec
    texts = ["left</answer>", "dance</answer>"] if answer_only else ["<answer>left</answer>", "<think>hm</think>"]
    for text in texts:
        assert ep.prompt() == codec.encode(ep.rendered)
        ep.apply(reply(codec, text, eos))
    assert ep.prompt() == codec.encode(ep.rendered)
    traj = ep.traj
    ids, mask, logp = traj.token_ids(), traj.loss_mask(), traj.old_logprobs()
    assert len(ids) == len(mask) == len(logp)
    assert sum(mask) == sum(len(t.response_ids) for t in traj.turns)
    assert ids == ep.context
    # the model's tokens sit exactly where the mask is 1
    assert [i for i, m in zip(ids, mask) if m] == [i for t in traj.turns for i in t.response_ids]


def test_first_message_holds_instruction_actions_budget_and_state():
    ep = start()
    first = ep.messages[0]["content"]
    assert "Available actions: up, down, left, right" in first
    assert "up to 2 actions per turn" in first and "Turn 1:\nState:\n" in first
    assert ep.env.render() in first


def test_later_messages_hold_reward_then_state():
    ep = start()
    ep.apply(reply(ep.codec, "<answer>left</answer>"))
    assert ep.messages[-1]["content"].startswith("Reward: -0.1\nTurn 2:\nState:\n")


def test_format_penalty_and_valid_parts_still_run():
    ep = start()
    turn = ep.apply(reply(ep.codec, "<answer>right || fly</answer>"))
    assert turn.executed == ("right",) and turn.valid == (True, False) and not turn.format_ok
    assert turn.reward == pytest.approx(-0.1 + -0.1)


def test_no_answer_block_is_penalised_and_steps_nothing():
    ep = start()
    turn = ep.apply(reply(ep.codec, "I would go right"))
    assert turn.executed == () and turn.reward == pytest.approx(-0.1) and ep.meter.env_steps == 0


def test_solving_ends_the_episode_and_skips_later_actions():
    ep = start(level="#####\n#@$.#\n#####")
    turn = ep.apply(reply(ep.codec, "<answer>right || left</answer>"))
    assert ep.done and ep.traj.success and ep.traj.terminated
    assert turn.executed == ("right",) and turn.reward == pytest.approx(-0.1 + 1 + 10)


def test_turn_budget_ends_the_episode():
    ep = start(ProtocolConfig(max_turns=2))
    ep.apply(reply(ep.codec, "<answer>left</answer>"))
    ep.apply(reply(ep.codec, "<answer>left</answer>"))
    assert ep.done and not ep.traj.terminated and ep.pending == []
    with pytest.raises(RuntimeError):
        ep.apply(reply(ep.codec, "<answer>left</answer>"))


def test_fork_is_independent_and_counts_as_simulated():
    ep = start()
    twin = ep.fork()
    twin.apply(reply(ep.codec, "<answer>right || right</answer>"))
    assert ep.turn == 0 and ep.meter.env_steps == 0 and ep.meter.sim_env_steps == 2
    assert twin.traj.success and not ep.traj.success

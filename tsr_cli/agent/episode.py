"""A live multi-turn episode: one environment, its conversation and its record.

`Episode` is the unit search works on. `prompt()` gives the token ids the
policy continues from; `apply(completion)` parses the response, runs its
actions in the environment and builds the next prompt; `fork()` gives an
independent copy (the environment is cloned) for scoring candidates.

Token bookkeeping: the context grows by exactly the sampled response ids and
the tokenized template text between responses, so the sequence training sees
is the one the policy was conditioned on when it sampled. The text between
responses is rendered on its own (`_text_after_reply`), so chat templates
that rewrite earlier assistant turns cannot leak a response back in as
environment tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from tsr_cli.agent.parse import parse_response
from tsr_cli.agent.protocol import ProtocolConfig, first_message, turn_message
from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.policies.base import ChatCodec, Completion


#: stands in for an assistant reply when rendering the template around a new
#: user turn: no whitespace at its ends (templates trim) and no tags
_REPLY = "tsr-assistant-reply-7f3a"


@dataclass
class StepMeter:
    """Environment steps, split into real ones and simulated ones (on forks)."""

    env_steps: int = 0
    sim_env_steps: int = 0


class Episode:
    """Environment + conversation + trajectory record. Build with `Episode.start`."""

    def __init__(self, env, codec: ChatCodec, cfg: ProtocolConfig, traj: Trajectory,
                 meter: StepMeter, real: bool = True):
        self.env = env
        self.codec = codec
        self.cfg = cfg
        self.traj = traj
        self.meter = meter
        self.real = real
        self.messages: list[dict] = []
        self.rendered = ""
        self.context: list[int] = []
        self.pending: list[int] = []
        self.observation = ""
        self.done = False

    @classmethod
    def start(cls, env, codec: ChatCodec, cfg: ProtocolConfig, *, seed: int,
              env_name: str = "", group: int = 0, meter: StepMeter | None = None) -> "Episode":
        """Reset `env` with `seed` and open the conversation."""
        observation, _ = env.reset(seed=seed)
        cfg = cfg.resolved(env)
        ep = cls(env, codec, cfg, Trajectory(env_name, seed, group), meter or StepMeter())
        ep.observation = observation
        if cfg.system_prompt:
            ep.messages.append({"role": "system", "content": cfg.system_prompt})
        ep.messages.append({"role": "user", "content": first_message(env, observation, cfg)})
        ep.rendered = codec.render(ep.messages, True) + cfg.prefill
        ep.pending = codec.encode(ep.rendered)
        return ep

    @property
    def turn(self) -> int:
        """Number of turns played so far."""
        return len(self.traj.turns)

    def prompt(self) -> list[int]:
        """[L] token ids the policy continues from."""
        return self.context + self.pending

    def fits(self, max_new_tokens: int, context_length: int | None) -> bool:
        """Whether the next prompt plus `max_new_tokens` fits a context of `context_length`."""
        return context_length is None or len(self.prompt()) + max_new_tokens <= context_length

    def truncate(self) -> None:
        """End the episode before its next turn because that turn would overflow the context."""
        self.done = True
        self.traj.truncated = True
        self.pending = []

    def fork(self, fresh_rng: bool = False, seed: int | None = None) -> "Episode":
        """An independent copy whose environment steps count as simulated."""
        twin = copy.copy(self)
        twin.env = self.env.clone(fresh_rng=fresh_rng, seed=seed)
        twin.real = False
        twin.messages = list(self.messages)
        twin.context = list(self.context)
        twin.traj = copy.copy(self.traj)
        twin.traj.turns = list(self.traj.turns)
        return twin

    def apply(self, completion: Completion) -> Turn:
        """Run the response's actions, record the turn and prepare the next prompt."""
        if self.done:
            raise RuntimeError("episode already finished")
        parsed = parse_response(self.cfg.prefill + completion.text, self.cfg.max_actions_per_turn,
                                open_ended=bool(self.cfg.prefill))
        valid, executed, rewards, info, ended = self._run_actions(parsed.parts)
        format_ok = parsed.has_answer and bool(parsed.parts) and all(valid)
        reward = sum(rewards) + (0.0 if format_ok else self.cfg.format_penalty)
        turn = Turn(tuple(self.pending), completion, parsed.parts, tuple(valid),
                    tuple(executed), tuple(rewards), float(reward), format_ok, info)
        self.traj.turns.append(turn)
        self.context += self.pending + list(completion.token_ids)
        self.done = ended or self.turn >= self.cfg.max_turns
        self.traj.terminated = ended
        if self.done:
            self.pending = []
        else:
            self._open_next_turn(completion, reward)
        return turn

    def _run_actions(self, parts):
        """Step the env once per legal part; unknown parts are skipped (no-ops)."""
        valid, executed, rewards, info, ended = [], [], [], {}, False
        for part in parts:
            action = self.env.parse_action(part)
            if action is None:
                valid.append(False)
                continue
            self.observation, r, terminated, truncated, info = self.env.step(action)
            self._count_step()
            executed.append(part)
            valid.append(bool(info.get("action_is_valid", True)))
            rewards.append(float(r))
            self.traj.success = bool(info.get("success", False))
            if terminated or truncated:
                ended = True
                break
        return valid, executed, rewards, info, ended

    def _count_step(self) -> None:
        if self.real:
            self.meter.env_steps += 1
        else:
            self.meter.sim_env_steps += 1

    def _open_next_turn(self, completion: Completion, reward: float) -> None:
        """Append the next user message and tokenize only the new template text."""
        prefill = self.cfg.prefill
        self.messages.append({"role": "assistant", "content": prefill + completion.text})
        user = turn_message(reward, self.turn + 1, self.observation)
        self.messages.append({"role": "user", "content": user})
        delta = self._text_after_reply(user) + prefill
        ids = self.codec.encode(delta)
        # The sampled response may already end with the end-of-turn token the
        # template would add; keep it once.
        if completion.token_ids and ids[:1] == completion.token_ids[-1:] and ids[0] in self.codec.stop_token_ids:
            ids = ids[1:]
        self.rendered += completion.text + delta
        self.pending = ids

    def _text_after_reply(self, user: str) -> str:
        """The template text between an assistant reply and the next one: the
        reply's end-of-turn markup, the user message `user`, the generation prompt.

        It is rendered around a stand-in reply, never by re-rendering the real
        history (verl's agent loop does the same): templates that rewrite
        earlier assistant turns (Llama 3 trims them, Qwen3 drops their
        `<think>`) would change text the policy was already conditioned on,
        and the difference would come back as environment tokens.
        """
        head = self.messages[:1] if self.messages[0]["role"] == "system" else []
        probe = [*head, {"role": "user", "content": "."}, {"role": "assistant", "content": _REPLY},
                 {"role": "user", "content": user}]
        text = self.codec.render(probe, True)
        at = text.find(_REPLY)
        if at < 0:
            raise ValueError(f"the chat template of {self.codec.name} does not show an earlier "
                             "assistant reply verbatim; tsr cannot keep its token bookkeeping")
        return text[at + len(_REPLY):]

"""`expert`: the environment's expert (envs/experts.py) as a text-in, text-out policy.

It reads the prompt the agent protocol built, as any model would: the
current state (the last `State:` block), the turn number (`Turn t:`), the
action budget (`up to K actions per turn`) and the answers of earlier turns.
The protocol does not print the number of turns, so the policy is told it
(`max_turns`, the environment's default when None). It answers in the
protocol's format: `a || b</answer>` after an opened answer block
(answer-only), else `<think>reason</think><answer>a || b</answer>`.

`noise` makes a worse demonstrator: with that probability a turn's answer is
uniformly drawn legal actions (the prompt's last `Available actions:` line, as
the random policy reads it) instead of the expert's.

Logprobs are 0 (probability 1): the expert is deterministic, and a noisy
answer's probability is not a property a learner should copy.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import ByteCodec
from tsr_cli.policies.random import available_actions

_TURN = re.compile(r"Turn (\d+):\nState:\n")
_BUDGET = re.compile(r"up to (\d+) actions? per turn")
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\n|$)", re.S)
OPEN_ANSWER = "<answer>"


class ExpertPolicy:
    """Plays `env_name`'s expert on instances made by `make_env`."""

    def __init__(self, env_name: str, make_env: Callable[[], object], *, max_turns: int | None = None,
                 noise: float = 0.0, seed: int = 0, name: str = "expert") -> None:
        from envs.experts import make_expert

        if not 0 <= noise <= 1:
            raise ValueError(f"expert noise must be in [0, 1], got {noise}")
        env = make_env()
        self.expert = make_expert(env_name, env)
        self.max_turns = max_turns or env.max_turns
        self.default_k = env.max_actions_per_turn
        self.noise = noise
        self.name = name
        self.codec = ByteCodec()
        self.rng = np.random.default_rng(seed)
        self.stats = GenerationStats()

    def generate(self, prompts: Sequence[Sequence[int]], n: int,
                 params: SamplingParams) -> list[list[Completion]]:
        """`n` answers per prompt; only `seed` of `params` matters.

        The answer is never cut at `max_new_tokens`: the expert's ids are bytes,
        not a learner's tokens, so a token budget would cut it at an arbitrary
        place. Whoever learns from it cuts in its own tokens (`tsr sft` does).
        """
        if params.seed is not None:
            self.rng = np.random.default_rng(params.seed)
        out = [[self._answer(prompt) for _ in range(n)] for prompt in prompts]
        self.stats.add(out)
        return out

    def view(self, prompt: Sequence[int]):
        """The `ExpertView` of a prompt: state, turns left, budget and earlier answers."""
        from envs.experts import ExpertView

        messages = self._messages(prompt)
        users = [text for role, text in messages if role == "user"]
        found = list(_TURN.finditer(users[-1])) if users else []
        if not found:
            raise ValueError("expert policy: the prompt has no 'Turn t:' / 'State:' block")
        budget = _BUDGET.findall(users[0])
        history = tuple(_answer_parts(text) for role, text in messages if role == "assistant")
        return ExpertView(
            observation=users[-1][found[-1].end():],
            turns_left=max(self.max_turns - int(found[-1].group(1)) + 1, 1),
            actions_per_turn=int(budget[-1]) if budget else self.default_k,
            history=history,
        )

    def _answer(self, prompt: Sequence[int]) -> Completion:
        view = self.view(prompt)
        move = self.expert.act(view)
        actions, reason = list(move.actions), move.reason
        if self.noise and self.rng.random() < self.noise:
            legal = available_actions(self.codec.decode(prompt))
            actions = [legal[i] for i in self.rng.integers(len(legal), size=len(actions))]
            reason = "a random move"
        answer = " || ".join(actions) + "</answer>"
        opened = self.codec.decode(prompt).endswith(OPEN_ANSWER)
        text = answer if opened else f"<think>{reason}</think>{OPEN_ANSWER}{answer}"
        ids = self.codec.encode(text)
        return Completion(ids, [0.0] * len(ids), text)

    def _messages(self, prompt: Sequence[int]) -> list[tuple[str, str]]:
        """(role, content) of each closed ChatML message (not the open assistant turn)."""
        out, current = [], None
        for token in prompt:
            if token == self.codec.im_start_id:
                current = []
            elif token == self.codec.eos_token_id and current is not None:
                out.append(current)
                current = None
            elif current is not None:
                current.append(token)
        messages = []
        for ids in out:
            role, _, content = self.codec.decode(ids).partition("\n")
            messages.append((role, content))
        return messages


def _answer_parts(text: str) -> tuple[str, ...]:
    """The actions of one of the expert's own earlier answers: `<answer>a || b</answer>`, or an
    answer block cut by the token budget, which the agent reads to its line's end."""
    blocks = _ANSWER.findall(text)
    return tuple(p.strip().lower() for p in blocks[-1].split("||")) if blocks else ()

"""`random`: a policy that answers with uniformly drawn legal actions.

It reads the legal actions from the prompt itself: the last line that starts
with `Available actions:` (the agent protocol writes it; see
`tsr_cli/agent/protocol.py`). Items are separated by ", ", so items with
spaces inside (WebShop's `click[buy now]`) stay whole.

Logprobs: each action is one uniform draw from A legal actions, so the first
token of each action carries -log(A) and every other token 0. The per-token
logprobs sum to the log-probability of the whole response under this policy.
It samples uniformly at every temperature, greedy included.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from tsr_cli.policies.base import Completion, GenerationStats, SamplingParams
from tsr_cli.policies.codecs import ByteCodec

ACTIONS_PREFIX = "Available actions:"
_BUDGET = re.compile(r"up to (\d+) actions? per turn")


def available_actions(prompt_text: str) -> list[str]:
    """The comma-separated items of the last `Available actions:` line, in order."""
    lines = [ln for ln in prompt_text.splitlines() if ln.startswith(ACTIONS_PREFIX)]
    if not lines:
        raise ValueError(f"random policy: the prompt has no line starting with {ACTIONS_PREFIX!r}")
    items = [item.strip() for item in lines[-1][len(ACTIONS_PREFIX):].split(", ")]
    items = [item for item in items if item]
    if not items:
        raise ValueError(f"random policy: the {ACTIONS_PREFIX!r} line lists no actions")
    return items


class RandomPolicy:
    """Uniform random legal actions as `<answer>a1 || a2</answer>`.

    It makes as many actions as the prompt's "up to K actions per turn" line
    allows, or `max_actions` when the prompt has no such line.
    """

    def __init__(self, seed: int = 0, max_actions: int = 2, name: str = "random") -> None:
        if max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {max_actions}")
        self.name = name
        self.codec = ByteCodec()
        self.max_actions = max_actions
        self.rng = np.random.default_rng(seed)
        self.stats = GenerationStats()

    def generate(self, prompts: Sequence[Sequence[int]], n: int,
                 params: SamplingParams) -> list[list[Completion]]:
        """Only `max_new_tokens` and `seed` of `params` matter."""
        if params.seed is not None:
            self.rng = np.random.default_rng(params.seed)
        out = []
        for prompt in prompts:
            text = self.codec.decode(prompt)
            actions, k = available_actions(text), self._budget(text)
            out.append([self._one(actions, k, params) for _ in range(n)])
        self.stats.add(out)
        return out

    def _budget(self, text: str) -> int:
        found = _BUDGET.findall(text)
        return int(found[-1]) if found else self.max_actions

    def _one(self, actions: list[str], k: int, params: SamplingParams) -> Completion:
        # Uniform whatever the temperature: greedy decoding of a uniform
        # distribution has no meaning, and `tsr eval` decodes greedily by default.
        picks = [actions[i] for i in self.rng.integers(len(actions), size=k)]
        logprob = -math.log(len(actions))
        ids, logprobs = self._tokens(picks, logprob)
        cut = params.max_new_tokens
        finish = "length" if len(ids) > cut else "stop"
        ids, logprobs = ids[:cut], logprobs[:cut]
        return Completion(ids, logprobs, self.codec.decode(ids), finish)

    def _tokens(self, picks: list[str], logprob: float) -> tuple[list[int], list[float]]:
        """`<answer>a1 || a2</answer>` + end-of-turn, with `logprob` on each action's first token."""
        ids, logprobs = [], []
        for i, piece in enumerate(["<answer>", *_interleave(picks, " || "), "</answer>"]):
            chunk = self.codec.encode(piece)
            is_action = i % 2 == 1
            logprobs += [logprob if is_action else 0.0] + [0.0] * (len(chunk) - 1)
            ids += chunk
        return ids + [self.codec.eos_token_id], logprobs + [0.0]


def _interleave(items: list[str], sep: str) -> list[str]:
    """[a, b, c] -> [a, sep, b, sep, c]: actions sit at the odd positions after `<answer>`."""
    out = []
    for i, item in enumerate(items):
        out += [sep, item] if i else [item]
    return out

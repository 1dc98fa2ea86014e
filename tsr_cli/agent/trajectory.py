"""The records a rollout produces and training consumes.

One `Trajectory` is one episode. Training sees the whole conversation as one
token sequence: for each turn, the environment's tokens (the prompt delta:
template markup, reward and state text; loss mask 0) followed by the model's
tokens (the response; loss mask 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tsr_cli.policies.base import Completion


@dataclass(frozen=True)
class Turn:
    """One turn of an episode.

    prompt_ids:   [P] tokens added to the context before this response (mask 0)
    completion:   the sampled response: token_ids [R], logprobs [R] under the sampler
    actions:      the action strings the response asked for (after the K cut)
    valid:        per attempted action, whether the environment accepted it; actions
                  after the episode ended are not attempted
    executed:     the actions that stepped the environment, in order
    rewards:      per executed action, the environment reward
    reward:       sum(rewards) plus the format penalty, if any
    format_ok:    False if there was no answer block or an unknown action
    info:         the environment's info after the last executed action
    """

    prompt_ids: tuple[int, ...]
    completion: Completion
    actions: tuple[str, ...]
    valid: tuple[bool, ...]
    executed: tuple[str, ...]
    rewards: tuple[float, ...]
    reward: float
    format_ok: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def response_ids(self) -> list[int]:
        return self.completion.token_ids

    @property
    def logprobs(self) -> list[float]:
        return self.completion.logprobs


@dataclass(frozen=True)
class Sibling:
    """One candidate a search scored, as a continuation of its group's prefix.

    ids:      [C] the candidate's tokens after the prefix (a response, or for
              best-of-n a whole trajectory)
    mask:     [C] 1 on model tokens, 0 on environment tokens
    logprobs: [C] sampler log-probs on model tokens, 0.0 elsewhere
    score:    what the search ranked it by (the scorer's value; a return for best-of-n)
    valid:    whether its response was well formed (search ranks invalid below valid)
    """

    ids: tuple[int, ...]
    mask: tuple[int, ...]
    logprobs: tuple[float, ...]
    score: float
    valid: bool


@dataclass(frozen=True)
class SiblingGroup:
    """The candidates a search scored from one state (`search.learn_from: siblings`).

    prefix:  [P] the conversation every member continues (0 tokens for best-of-n,
             whose members are whole trajectories)
    members: the M candidates, the chosen one among them
    """

    prefix: tuple[int, ...]
    members: tuple[Sibling, ...]


@dataclass
class Trajectory:
    """A finished (or in-progress) episode.

    env_name, seed: which instance this is; `group` ties together the members
                    of one instance group (GRPO, instance filtering)
    turns:          the turns in order
    success:        the environment reported success
    terminated:     the environment ended the episode (vs. running out of turns)
    truncated:      the episode ended early because its next prompt plus
                    `max_new_tokens` would not fit the model's context length
    siblings:       the candidate groups the search scored on the way, recorded
                    only with `search.learn_from: siblings`
    """

    env_name: str
    seed: int
    group: int = 0
    turns: list[Turn] = field(default_factory=list)
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    siblings: list[SiblingGroup] = field(default_factory=list)

    @property
    def total_return(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def num_actions(self) -> int:
        return sum(len(t.rewards) for t in self.turns)

    @property
    def invalid_actions(self) -> int:
        """Actions the environment rejected, plus one for each missing answer block."""
        bad = 0
        for t in self.turns:
            bad += t.valid.count(False)
            bad += 0 if t.actions else 1
        return bad

    @property
    def attempted_actions(self) -> int:
        return sum(max(len(t.actions), 1) for t in self.turns)

    def token_ids(self) -> list[int]:
        """[L] the whole conversation: prompt delta then response, turn by turn."""
        ids: list[int] = []
        for t in self.turns:
            ids += t.prompt_ids
            ids += t.response_ids
        return ids

    def loss_mask(self) -> list[int]:
        """[L] 1 on model (response) tokens, 0 on environment (prompt) tokens."""
        mask: list[int] = []
        for t in self.turns:
            mask += [0] * len(t.prompt_ids) + [1] * len(t.response_ids)
        return mask

    def old_logprobs(self) -> list[float]:
        """[L] sampler logprobs on response tokens, 0.0 on prompt tokens."""
        out: list[float] = []
        for t in self.turns:
            out += [0.0] * len(t.prompt_ids) + list(t.logprobs)
        return out

    def actions(self) -> list[str]:
        """Every action that stepped the environment, in order."""
        return [a for t in self.turns for a in t.executed]

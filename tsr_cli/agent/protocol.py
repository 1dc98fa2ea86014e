"""The text of the multi-turn conversation (SPEC section 2).

The first user message holds the instruction, the symbol legend, the legal
actions, the per-turn action budget and the answer format, then
"Turn 1: State: ...". Every later user message holds the reward of the last
turn, then "Turn t: State: ...". The line `Available actions: ...` is the
one place the legal actions are listed; the random policy reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolConfig:
    """Budget and format of one episode; None takes the environment's default."""

    max_turns: int | None = None
    max_actions_per_turn: int | None = None
    #: answer-only mode (no <think> block), for small and from-scratch models
    answer_only: bool = False
    #: added to a turn's reward when the response has no answer block or an unknown action
    format_penalty: float = -0.1
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_actions_per_turn"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @property
    def prefill(self) -> str:
        """Text that opens every assistant turn. Answer-only mode opens the answer
        block for the model, which is what lets a from-scratch model find the format."""
        return "<answer>" if self.answer_only else ""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings for generation: the answer's end (and, answer-only, its line's end)."""
        return ("</answer>", "\n") if self.answer_only else ("</answer>",)

    def resolved(self, env) -> "ProtocolConfig":
        """Fill the None budget fields from the environment's defaults."""
        return ProtocolConfig(
            max_turns=self.max_turns or env.max_turns,
            max_actions_per_turn=self.max_actions_per_turn or env.max_actions_per_turn,
            answer_only=self.answer_only,
            format_penalty=self.format_penalty,
            system_prompt=self.system_prompt,
        )


def answer_format(env, cfg: ProtocolConfig) -> str:
    """The reply format, with a concrete example: small models copy placeholders
    such as "action1" verbatim, so the example uses real action words."""
    k = cfg.max_actions_per_turn
    example = " || ".join((list(env.action_names) * k)[1:k + 1]) if env.action_names else "..."
    if cfg.answer_only:
        return f"Reply with only your actions, for example: <answer>{example}</answer>"
    return (f"First think briefly, then give your actions, for example: "
            f"<think>your reasoning</think><answer>{example}</answer>")


def first_message(env, observation: str, cfg: ProtocolConfig) -> str:
    """The opening user message: task, legend, actions, budget, format, first state."""
    k = cfg.max_actions_per_turn
    lines = [
        env.instruction.strip(),
        env.legend.strip(),
        f"Available actions: {', '.join(env.action_names)}",
        f"You can make up to {k} action{'s' if k != 1 else ''} per turn, separated by ||.",
        answer_format(env, cfg),
        f"Turn 1:\nState:\n{observation}",
    ]
    return "\n".join(line for line in lines if line)


def turn_message(reward: float, turn: int, observation: str) -> str:
    """A later user message: the last turn's reward, then the new state."""
    return f"Reward: {reward:g}\nTurn {turn}:\nState:\n{observation}"

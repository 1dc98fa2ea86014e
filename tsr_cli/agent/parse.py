"""Parsing model responses into action words (SPEC section 2).

The rules: take the last `<answer>...</answer>` block, split it on `||`,
lower-case and strip each part, and keep at most K parts. Whether a part is a
legal action is decided later, against the environment's state at the moment
the action runs (in WebShop the clickable elements change after every step).
The parser never raises, whatever the input (tested with hypothesis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.S | re.I)
_OPEN_ANSWER = re.compile(r"<\s*answer\s*>([^\n]*)", re.I)
_THINK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", re.S | re.I)


@dataclass(frozen=True)
class ParsedResponse:
    """What a response asks for.

    parts:      at most K lower-cased, stripped action strings, in order
    has_answer: False when no `<answer>` block was found (a format error)
    has_think:  whether a closed `<think>` block precedes the answer
    dropped:    how many parts beyond K were ignored
    """

    parts: tuple[str, ...]
    has_answer: bool
    has_think: bool = False
    dropped: int = 0


def parse_response(text: str, max_actions: int, open_ended: bool = False) -> ParsedResponse:
    """Split the last answer block of `text` into at most `max_actions` parts.

    open_ended: the answer block was opened for the model (answer-only
    prefill), so an unclosed block counts; it ends at the end of its line.
    """
    if not isinstance(text, str):
        return ParsedResponse((), False)
    blocks = _ANSWER.findall(text)
    if not blocks and open_ended:
        blocks = _OPEN_ANSWER.findall(text)
    if not blocks:
        return ParsedResponse((), False, bool(_THINK.search(text)))
    parts = [p.strip().lower() for p in blocks[-1].split("||")]
    if parts == [""]:
        parts = []
    keep = max(int(max_actions), 0)
    return ParsedResponse(
        tuple(parts[:keep]),
        has_answer=True,
        has_think=bool(_THINK.search(text)),
        dropped=max(len(parts) - keep, 0),
    )

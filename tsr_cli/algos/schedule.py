"""Learning-rate schedules over a run's training steps (verl's `warmup_style` and warm-up).

A schedule is a pure function of the step, so a resumed run continues it
exactly: nothing about it lives in the optimiser's state.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_scale(schedule: str, step: int, steps: int, min_ratio: float = 0.0, warmup: int = 0) -> float:
    """The factor on the base learning rate for training step `step` (1 .. `steps`).

    The first `warmup` steps ramp it linearly up to 1 (step k: k / warmup), so
    Adam's first, sign-sized updates are small. After that, "constant" keeps 1,
    and "cosine" follows half a cosine from 1 down to `min_ratio` at the last
    step, so the final updates are the smallest.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if step <= warmup:
        return step / warmup
    if schedule == "constant" or steps <= warmup + 1:
        return 1.0
    progress = min((step - warmup - 1) / (steps - warmup - 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

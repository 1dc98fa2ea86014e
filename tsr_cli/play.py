"""`tsr play`: a person plays an environment in the terminal."""

from __future__ import annotations

from typing import Callable


def play(env, seed: int, input_fn: Callable[[str], str], print_fn: Callable[[str], None]) -> float:
    """Read actions (several may be joined with `||`) until the episode ends or `q`."""
    observation, _ = env.reset(seed=seed)
    print_fn(env.instruction)
    print_fn(env.legend)
    print_fn(f"Actions: {', '.join(env.action_names)}   (q quits)")
    total, done = 0.0, False
    while not done:
        print_fn(observation)
        try:
            line = input_fn("action> ").strip().lower()
        except EOFError:
            break
        if line in ("q", "quit", "exit"):
            break
        for word in filter(None, (p.strip() for p in line.split("||"))):
            action = env.parse_action(word)
            if action is None:
                print_fn(f"unknown action {word!r}")
                continue
            observation, reward, terminated, truncated, info = env.step(action)
            total += reward
            print_fn(f"reward {reward:g}   return {total:g}")
            if terminated or truncated:
                print_fn(observation)
                print_fn("solved!" if info.get("success") else "episode over")
                done = True
                break
    return total

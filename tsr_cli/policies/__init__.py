"""Generation backends behind one interface (SPEC section 5).

`load_policy(spec)` resolves a policy name, directory or hub id:

- `random`: uniformly drawn legal actions (`random.py`)
- `expert`: the environment's expert, reading the prompt (`expert.py`); it
  needs `make_env` (or plays `env_names[0]` with default arguments) and the
  turn budget `max_turns`
- `smollm2-135m`: the embedded SmolLM2-135M-Instruct (`smollm2.py`)
- `tiny`: a randomly initialised small Llama (`tiny.py`)
- a local directory: a Hugging Face model directory, or a tsr checkpoint
  (a directory holding `tsr_checkpoint.json`, loaded by the function the
  trainer registers with `register_checkpoint_loader`)
- `org/name` that is not a local path: a Hugging Face hub id (downloads)

Heavy modules (torch, transformers) are imported inside the loaders, so
importing this package is cheap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from tsr_cli.policies.base import Completion, GenerationStats, Policy, SamplingParams

CHECKPOINT_MARKER = "tsr_checkpoint.json"
#: `org/name`: anything path-like (`./x`, `a/b/c`, `~/m`) is a directory instead
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _random(*, seed: int, env_names=None, max_actions: int = 2, device=None, dtype=None, **kw) -> Policy:
    from tsr_cli.policies.random import RandomPolicy

    # no model, so no device or dtype: accepting them lets callers that build any
    # policy (the trainer) reach their own, clearer error
    return RandomPolicy(seed=seed, max_actions=max_actions, **kw)


def _expert(*, seed: int, env_names=None, make_env=None, max_turns=None, noise: float = 0.0,
            **kw) -> Policy:
    from tsr_cli.policies.expert import ExpertPolicy

    if not env_names:
        raise ValueError("the expert policy needs the environment it plays")
    if make_env is None:
        import envs

        make_env = envs.factory(env_names[0])
    return ExpertPolicy(env_names[0], make_env, max_turns=max_turns, noise=noise, seed=seed)


def _smollm2(*, seed: int, env_names=None, **kw) -> Policy:
    from tsr_cli.policies.smollm2 import load_smollm2

    return load_smollm2(seed=seed, **kw)


def _tiny(*, seed: int, env_names: Sequence[str] | None = None, **kw) -> Policy:
    from tsr_cli.policies.tiny import env_vocabulary, make_tiny_policy

    return make_tiny_policy(env_vocabulary(env_names), seed=seed, **kw)


#: named backends; `env_names` (the environments the policy will play) is
#: passed to every factory, which uses or ignores it
BACKENDS: dict[str, Callable[..., Policy]] = {
    "random": _random,
    "smollm2-135m": _smollm2,
    "tiny": _tiny,
    "expert": _expert,
}

_checkpoint_loader: Callable[..., Policy] | None = None


def register_backend(name: str, factory: Callable[..., Policy]) -> None:
    """Add a named backend: `factory(*, seed, env_names, **kw) -> Policy`."""
    BACKENDS[name] = factory


def register_checkpoint_loader(loader: Callable[..., Policy]) -> None:
    """Set how tsr checkpoint directories load: `loader(path, *, seed, **kw) -> Policy`.

    The trainer owns the checkpoint format, so it registers the loader here
    rather than this package importing the trainer (data flows one way).
    """
    global _checkpoint_loader
    _checkpoint_loader = loader


def load_policy(spec: str, *, seed: int = 0, env_names: Sequence[str] | None = None, **kw) -> Policy:
    """Build the policy named by `spec`; raises ValueError for an unknown spec."""
    if spec in BACKENDS:
        return BACKENDS[spec](seed=seed, env_names=env_names, **kw)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_directory(path, seed=seed, **kw)
    if _HUB_ID.fullmatch(spec) and not path.exists():
        from tsr_cli.policies.hf import HFPolicy

        return HFPolicy.from_pretrained(spec, seed=seed, **kw)
    what = "no such policy directory" if "/" in spec or path.exists() else "unknown policy"
    raise ValueError(
        f"{what} {spec!r}; choose one of {', '.join(BACKENDS)}, "
        "a model directory, or a Hugging Face hub id (org/name)"
    )


def _load_directory(path: Path, *, seed: int, **kw) -> Policy:
    if (path / CHECKPOINT_MARKER).is_file():
        if _checkpoint_loader is None:
            raise ValueError(f"{path} is a tsr checkpoint but no checkpoint loader is registered")
        return _checkpoint_loader(path, seed=seed, **kw)
    _not_a_tsr_directory(path)
    from tsr_cli.policies.files import check_model_dir, held_transformers_warnings
    from tsr_cli.policies.hf import HFPolicy

    check_model_dir(path)
    try:
        with held_transformers_warnings():
            return HFPolicy.from_pretrained(str(path), seed=seed, local_files_only=True, **kw)
    except RuntimeError as exc:  # transformers: tensors whose shapes config.json does not describe
        if "mismatched" not in str(exc) and "size mismatch" not in str(exc):
            raise
        raise ValueError(f"{path}: the weights do not fit the model its config.json describes "
                         "(tensor shapes differ)") from None


def _not_a_tsr_directory(path: Path) -> None:
    """A run directory, or a checkpoint whose save never finished, is not a model directory."""
    if (path / "checkpoints").is_dir() and (path / "config.yaml").is_file():
        raise ValueError(f"{path} is a tsr run directory; give one of its checkpoints, "
                         f"e.g. {path / 'checkpoints' / 'step_N'}")
    if (path / "trainer_state.json").is_file() or (path / "weights.safetensors").is_file():
        raise ValueError(f"{path} is an incomplete tsr checkpoint: {CHECKPOINT_MARKER} is missing "
                         "(its save did not finish); use an earlier step")


__all__ = [
    "BACKENDS", "Completion", "GenerationStats", "Policy", "SamplingParams",
    "load_policy", "register_backend", "register_checkpoint_loader",
]

"""Checkpoints: safetensors plus JSON, written atomically; never a pickle.

`checkpoints/step_N/` holds:
- `weights.safetensors`: every trained tensor (LoRA adapters or all weights,
  plus the value head / critic), by name;
- `optimizer.safetensors`: AdamW moments and step counts, and every RNG state
  (the sampler's generator, the minibatch shuffler, torch's global RNG);
- `trainer_state.json`: step, counters, evaluations, optimiser hyper-parameters;
- the tokenizer files, `config.yaml` (the resolved run config), and
  `tsr_checkpoint.json`, the marker that makes the directory loadable by
  `tsr eval --policy DIR`.

A checkpoint is written into a hidden temporary directory and renamed into
place, so a kill during a save never leaves a `step_N` that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tsr_cli.policies import CHECKPOINT_MARKER, register_checkpoint_loader
from tsr_cli.train.config import dump_config, load_config

FORMAT = 1


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    root = Path(run_dir) / "checkpoints"
    done = [p for p in root.glob("step_*") if (p / CHECKPOINT_MARKER).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(trainer, run_dir: Path) -> Path:
    """Write `checkpoints/step_<trainer.step>` atomically and return its path."""
    final = checkpoint_dir(run_dir, trainer.step)
    tmp = final.parent / f".tmp_{final.name}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_contents(trainer, tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def _write_contents(trainer, path: Path) -> None:
    weights = {k: v.detach().contiguous().clone() for k, v in trainer.model.named_trainable().items()}
    save_file(weights, str(path / "weights.safetensors"))
    tensors, groups = _optimizer_tensors(trainer)
    tensors["rng.sampler"] = trainer.policy.generator.get_state()
    tensors["rng.shuffle"] = trainer.shuffle.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(path / "optimizer.safetensors"))
    state = {"step": trainer.step, "totals": trainer.totals, "initial_eval": trainer.initial_eval,
             "last_eval": trainer.last_eval, "param_groups": groups}
    (path / "trainer_state.json").write_text(json.dumps(state, indent=1))
    tokenizer = getattr(trainer.policy.codec, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    dump_config(trainer.cfg, path / "config.yaml")
    marker = {"format": FORMAT, "step": trainer.step, "policy": trainer.cfg.policy.name,
              "env": trainer.cfg.env.name}
    for name in ("weights.safetensors", "optimizer.safetensors", "trainer_state.json"):
        _fsync_file(path / name)
    (path / CHECKPOINT_MARKER).write_text(json.dumps(marker))  # last: marks it complete
    _fsync_file(path / CHECKPOINT_MARKER)


def _optimizer_tensors(trainer) -> tuple[dict, list]:
    """AdamW state flattened to `<param index>.<field>` tensors; hyper-parameters as JSON."""
    state = trainer.optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).clone()
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def load_into(trainer, path: Path) -> None:
    """Restore weights, optimiser, RNG states and counters from a checkpoint."""
    path = Path(path)
    _load_weights(trainer.model, path)
    tensors = load_file(str(path / "optimizer.safetensors"))
    state = json.loads((path / "trainer_state.json").read_text())
    _restore_optimizer(trainer.optimizer, tensors, state["param_groups"])
    trainer.policy.generator.set_state(tensors["rng.sampler"])
    trainer.shuffle.set_state(tensors["rng.shuffle"])
    torch.set_rng_state(tensors["rng.torch"])
    trainer.step = state["step"]
    trainer.totals = state["totals"]
    trainer.initial_eval = state["initial_eval"]
    trainer.last_eval = state["last_eval"]
    trainer.sync_sampler()  # a vLLM engine started on the weights from before the load


def _load_weights(model, path: Path) -> None:
    """Copy `weights.safetensors` into every trained tensor of `model`, by name."""
    weights = load_file(str(path / "weights.safetensors"))
    named = model.named_trainable()
    missing = set(named) - set(weights)
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} trained tensors, e.g. {sorted(missing)[0]}")
    with torch.no_grad():
        for name, param in named.items():
            param.copy_(weights[name])


def _restore_optimizer(optimizer, tensors: dict, groups: list) -> None:
    entries: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("rng."):
            continue
        index, _, field = key.partition(".")
        entries.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


def checkpoint_defaults(path: Path) -> dict:
    """The env and protocol settings a checkpoint was trained with ({} if not a checkpoint)."""
    if not (Path(path) / CHECKPOINT_MARKER).is_file():
        return {}
    cfg = load_config(Path(path) / "config.yaml")
    found = {"env": cfg.env.name, "env_args": cfg.env.args, "max_turns": cfg.env.max_turns,
             "actions_per_turn": cfg.env.actions_per_turn, "answer_only": cfg.env.answer_only,
             "max_new_tokens": cfg.policy.max_new_tokens}
    return {k: v for k, v in found.items() if v is not None}


def load_checkpoint_policy(path: Path, *, seed: int = 0, **kw):
    """Rebuild the trained policy from a checkpoint directory (for `tsr eval`)."""
    from tsr_cli.train.model import TrainableModel, build_policy

    cfg = load_config(Path(path) / "config.yaml")
    # the base weights (tiny's random init) come from the training seed
    policy = build_policy(cfg.policy, cfg.env.name, cfg.trainer.seed, kw.get("device", "cpu"))
    policy.generator.manual_seed(seed)
    critic = cfg.algo.critic if cfg.algo.name == "ppo" else None
    model = TrainableModel(policy, cfg.policy, critic)
    _load_weights(model, Path(path))
    policy.name = str(path)
    return policy


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


register_checkpoint_loader(load_checkpoint_policy)

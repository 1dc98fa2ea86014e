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

A checkpoint is written into a hidden temporary directory
(`.tmp_step_N_<pid>`) and renamed into place, so a kill during a save never
leaves a `step_N` that looks complete. Re-saving a step first renames the old
copy aside (`.old_step_N_<pid>`) and deletes it only after the new one is in
place; `clean_checkpoints`, run at start-up, puts an aside copy back if a
kill fell between the two renames, and deletes what killed saves left.

Resume takes the newest checkpoint that `verify_checkpoint` accepts: marker
present, every file there and parseable (safetensors headers, JSON, YAML).
Each error names the file that is bad.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tsr_cli.errors import RunFault, first_line, is_disk_full
from tsr_cli.policies import CHECKPOINT_MARKER, register_checkpoint_loader
from tsr_cli.policies.files import BadFileError, check_safetensors, read_json
from tsr_cli.train.config import ConfigError, dump_config, load_config

FORMAT = 1
#: the prefixes of a save in progress and of a re-saved step's old copy
TMP, OLD = ".tmp_", ".old_"
#: what `tsr eval` needs, and what resume needs on top
POLICY_FILES = ("config.yaml", "weights.safetensors")
RESUME_FILES = ("optimizer.safetensors", "trainer_state.json")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, unreadable or does not fit the model; names the file."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step}"


def _step_of(path: Path) -> int | None:
    number = path.name.removeprefix("step_")
    return int(number) if path.name.startswith("step_") and number.isdigit() else None


def latest_checkpoint(run_dir: Path, on_skip=None) -> Path | None:
    """The newest checkpoint that resume can read, or None.

    Newer ones that fail `verify_checkpoint` are skipped; `on_skip(message)`
    hears about each (one line naming the checkpoint and its bad file).
    """
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None] if root.is_dir() else []
    for path in sorted(found, key=_step_of, reverse=True):
        try:
            verify_checkpoint(path, resume=True)
        except CheckpointError as exc:
            if on_skip:
                on_skip(f"skipping checkpoint {path.name}: {exc}")
            continue
        return path
    return None


def verify_checkpoint(path: Path, resume: bool = False) -> None:
    """Raise CheckpointError naming the first missing or unreadable file of a checkpoint."""
    path = Path(path)
    if not (path / CHECKPOINT_MARKER).is_file():
        raise CheckpointError(f"{path} is incomplete: {CHECKPOINT_MARKER} is missing "
                              "(its save did not finish)")
    names = POLICY_FILES + (RESUME_FILES if resume else ())
    try:
        read_json(path / CHECKPOINT_MARKER)
        for name in names:
            if name.endswith(".safetensors"):
                check_safetensors(path / name)
            elif name.endswith(".json"):
                read_json(path / name)
        load_config(path / "config.yaml")
    except (BadFileError, ConfigError) as exc:
        raise CheckpointError(str(exc)) from None


def clean_checkpoints(run_dir: Path) -> None:
    """Start-up: finish or undo what a killed save left in `checkpoints/`.

    A `.tmp_` directory is a save that never finished: deleted. An `.old_`
    directory is the previous copy of a re-saved step: put back if the kill
    fell before the new copy was renamed into place, else deleted.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(TMP):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(OLD):
            final = root / path.name.removeprefix(OLD).rsplit("_", 1)[0]
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)


def save_checkpoint(trainer, run_dir: Path) -> Path:
    """Write `checkpoints/step_<trainer.step>` atomically and return its path.

    At every moment a complete copy of the step (old or new) is on disk
    under its own name or, between two renames, under `.old_`; see
    `clean_checkpoints`. A full disk is a RunFault that leaves earlier
    checkpoints untouched and removes the partial save.
    """
    final = checkpoint_dir(run_dir, trainer.step)
    tmp = final.parent / f"{TMP}{final.name}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_contents(trainer, tmp)
    except BaseException as exc:  # Ctrl-C too: a partial save is never worth keeping
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise _disk_full(final) from None
        raise
    _swap_into_place(tmp, final)
    return final


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = final.parent / f"{OLD}{final.name}_{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _disk_full(final: Path) -> RunFault:
    free = shutil.disk_usage(final.parent).free / 2**20
    return RunFault(f"no space left on the device holding {final.parent} ({free:.0f} MiB free) while "
                    f"writing checkpoint {final.name}; earlier checkpoints are intact")


def _write_contents(trainer, path: Path) -> None:
    weights = {k: v.detach().contiguous().clone() for k, v in trainer.model.named_trainable().items()}
    save_file(weights, str(path / "weights.safetensors"))
    tensors, groups = _optimizer_tensors(trainer)
    tensors["rng.sampler"] = trainer.policy.generator.get_state()
    tensors["rng.shuffle"] = trainer.shuffle.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
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
        fsync_file(path / name)
    (path / CHECKPOINT_MARKER).write_text(json.dumps(marker))  # last: marks it complete
    fsync_file(path / CHECKPOINT_MARKER)


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
    state = read_json(path / "trainer_state.json")
    try:
        _restore_optimizer(trainer.optimizer, tensors, state["param_groups"])
        trainer.policy.generator.set_state(tensors["rng.sampler"])
        trainer.shuffle.set_state(tensors["rng.shuffle"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
        trainer.step = state["step"]
        trainer.totals = state["totals"]
        trainer.initial_eval = state["initial_eval"]
        trainer.last_eval = state["last_eval"]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path / 'optimizer.safetensors'} or {path / 'trainer_state.json'} does "
                              f"not fit this run's optimiser or trainer ({first_line(exc)})") from None
    trainer.sync_sampler()  # a vLLM engine started on the weights from before the load


def _load_weights(model, path: Path) -> None:
    """Copy `weights.safetensors` into every trained tensor of `model`, by name."""
    file = path / "weights.safetensors"
    check_safetensors(file)
    weights = load_file(str(file))
    named = model.named_trainable()
    missing, extra = sorted(set(named) - set(weights)), sorted(set(weights) - set(named))
    if missing or extra:
        what = f"lacks {len(missing)} tensors the model trains, e.g. {missing[0]}" if missing else \
            f"has {len(extra)} tensors the model lacks, e.g. {extra[0]}"
        raise CheckpointError(f"{file} does not fit the model: it {what}")
    wrong = next((n for n, p in named.items() if p.shape != weights[n].shape), None)
    if wrong:
        raise CheckpointError(f"{file} does not fit the model: {wrong} has shape "
                              f"{tuple(weights[wrong].shape)}, the model's is {tuple(named[wrong].shape)}")
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
    verify_checkpoint(path)
    cfg = load_config(Path(path) / "config.yaml")
    found = {"env": cfg.env.name, "env_args": cfg.env.args, "max_turns": cfg.env.max_turns,
             "actions_per_turn": cfg.env.actions_per_turn, "answer_only": cfg.env.answer_only,
             "max_new_tokens": cfg.policy.max_new_tokens}
    return {k: v for k, v in found.items() if v is not None}


def load_checkpoint_policy(path: Path, *, seed: int = 0, **kw):
    """Rebuild the trained policy from a checkpoint directory (for `tsr eval`)."""
    from tsr_cli.train.model import TrainableModel, build_policy

    verify_checkpoint(path)
    cfg = load_config(Path(path) / "config.yaml")
    # the base weights (tiny's random init) come from the training seed
    try:
        policy = build_policy(cfg.policy, cfg.env.name, cfg.trainer.seed, kw.get("device", "cpu"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path} was trained from policy {cfg.policy.name!r}, which does not "
                              f"load: {first_line(exc)}") from None
    policy.generator.manual_seed(seed)
    critic = cfg.algo.critic if cfg.algo.name == "ppo" else None
    model = TrainableModel(policy, cfg.policy, critic)
    _load_weights(model, Path(path))
    policy.name = str(path)
    return policy


def fsync_file(path: Path, missing_ok: bool = False) -> None:
    """Force a file's bytes to disk; a missing file raises unless `missing_ok`."""
    if missing_ok and not path.is_file():
        return
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


register_checkpoint_loader(load_checkpoint_policy)

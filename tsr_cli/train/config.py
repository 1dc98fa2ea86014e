"""Typed training config: sections `env`, `policy`, `search`, `algo`, `trainer`.

Configs come from YAML. Command-line flags and `--set section.key=value`
override the file. Unknown sections or keys and values of the wrong type are
rejected with a message that names the key; cross-field rules are checked at
construction and say how to fix the problem.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.algos.schedule import LR_SCHEDULES
from tsr_cli.search import SearchConfig
from tsr_cli.train.loggers import LOGGERS


#: generation backends (`policy.backend`, `--backend`)
GENERATION_BACKENDS = ("hf", "vllm")
#: how LoRA reaches a vLLM engine (`policy.vllm_lora`; `policies/vllm_lora.py`)
VLLM_LORA_MODES = ("merge", "native")
#: algo.loss_agg values (verl's loss_agg_mode names)
LOSS_AGG = ("token-mean", "seq-mean-token-mean")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A malformed config, an unknown key or a bad value."""


@dataclass
class EnvSection:
    #: registered environment name (`tsr envs`)
    name: str = "sokoban"
    #: keyword arguments for `envs.make`, e.g. {dim_room: [8, 8], num_boxes: 2}
    args: dict = field(default_factory=dict)
    #: turns per episode; None takes the environment's default
    max_turns: int | None = None
    #: actions per turn; None takes the environment's default
    actions_per_turn: int | None = None
    #: answer-only format: the answer block is opened for the model (small models;
    #: the CPU default). The paper's configs set false: <think> then <answer>.
    answer_only: bool = True
    #: reward added to a turn with no answer block or an unknown action
    format_penalty: float = -0.1

    def protocol(self) -> ProtocolConfig:
        """The agent protocol these settings describe (RL rollouts, SFT demonstrations, evaluation)."""
        return ProtocolConfig(self.max_turns, self.actions_per_turn, self.answer_only, self.format_penalty)


@dataclass
class PolicySection:
    #: random, smollm2-135m, tiny, a Hugging Face id or path, or a tsr checkpoint dir
    name: str = "smollm2-135m"
    #: rollout sampling temperature
    temperature: float = 1.0
    top_p: float = 1.0
    #: response length limit per turn, in tokens
    max_new_tokens: int = 12
    #: held-out evaluation temperature (0 = greedy)
    eval_temperature: float = 0.0
    #: train LoRA adapters (PEFT) instead of every weight
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    #: module names LoRA wraps
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    #: forward passes under autocast in this dtype: float32 or bfloat16
    dtype: str = "float32"
    #: tiny policy only: model width and depth
    tiny_hidden: int = 64
    tiny_layers: int = 2
    #: what generates rollouts and evaluations: hf (the training model itself) or
    #: vllm (a vLLM engine in this process, in policy.dtype, synced after every update)
    backend: str = "hf"
    #: how a LoRA policy reaches a vllm engine after each update: merge (stream
    #: W + scale * B @ A for each wrapped layer) or native (vLLM's LoRA layers
    #: load the PEFT adapter, base weights untouched). Ignored by hf and full
    #: fine-tuning. merge is the default because it is faster per step: measured
    #: by benchmarks/vllm_lora.py (SmolLM2, rank 8 on q/k/v/o, float32, 2 shared
    #: CPU cores at load 4-5), native synced in 0.047 s against 0.149 s, but its
    #: LoRA kernels made 16 FrozenLake episodes 1.6x slower (answer-only 52 s
    #: against 32 s, <think> 84 s against 51 s): 136 s against 83 s in all
    vllm_lora: str = "merge"

    def __post_init__(self) -> None:
        if self.backend not in GENERATION_BACKENDS:
            raise ConfigError(f"policy.backend must be one of {', '.join(GENERATION_BACKENDS)}, "
                              f"got {self.backend!r}")
        if self.vllm_lora not in VLLM_LORA_MODES:
            raise ConfigError(f"policy.vllm_lora must be one of {', '.join(VLLM_LORA_MODES)}, "
                              f"got {self.vllm_lora!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"policy.dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.temperature <= 0:
            raise ConfigError("policy.temperature must be > 0 for training rollouts; "
                              "use policy.eval_temperature for greedy evaluation")


@dataclass
class AlgoSection:
    #: ppo or grpo
    name: str = "grpo"
    #: actor learning rate (paper: 1e-6 full, 1e-5 LoRA)
    lr: float = 1e-4
    #: critic learning rate (PPO)
    critic_lr: float = 1e-5
    weight_decay: float = 0.0
    #: PPO clip range below and above 1; clip_high > clip_low is the asymmetric "clip-higher"
    clip_low: float = 0.2
    clip_high: float = 0.28
    #: value-function clip (PPO); 0 disables
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 1.0
    entropy_coef: float = 0.001
    #: KL-to-reference coefficient (k3 estimator); 0 disables the reference pass
    kl_coef: float = 0.0
    #: passes over each rollout batch
    epochs: int = 1
    #: trajectories per optimiser step
    minibatch_size: int = 4
    #: micro-batches accumulated inside one minibatch
    grad_accum: int = 2
    max_grad_norm: float = 1.0
    #: PPO critic: "head" (value head on the policy backbone) or "separate" (own model)
    critic: str = "head"
    #: instance filtering: keep this fraction of groups, by return std (1.0 = off;
    #: the paper keeps 0.25 of 8 groups, the tiny CPU default batch has only 2)
    filter_keep: float = 1.0
    #: whiten advantages over the batch's model tokens (verl's masked_whiten).
    #: None = on for PPO (GAE advantages scale with the return: Sokoban's +10
    #: would otherwise set the actor's step size), off for GRPO (already
    #: normalised per group)
    whiten_advantages: bool | None = None
    #: dual clip (verl's clip_ratio_c): for A < 0 the token loss is capped at -A*c;
    #: 0 disables it
    clip_ratio_c: float = 3.0
    #: PPO `critic: head`: the value head reads detached hidden states, so the
    #: value loss (squared errors near 100 on Sokoban) never reaches the shared
    #: backbone, and the actor's clip and step are its own. Default true; false
    #: trains the backbone on both losses (the pre-fix behaviour)
    value_head_detach: bool = True
    #: truncated importance sampling (TRL/verl): multiply each token's policy loss
    #: by min(pi_old / pi_sampler, tis_cap) when the sampler and the trainer
    #: disagree (vLLM, bf16); 0 = off
    tis_cap: float = 0.0
    #: how the policy loss averages tokens (verl's loss_agg_mode): "token-mean"
    #: (verl's default: every model token of the minibatch weighs the same, so a
    #: long episode counts more) or "seq-mean-token-mean" (each trajectory's token
    #: mean, then the mean over trajectories: every episode weighs the same)
    loss_agg: str = "token-mean"
    #: learning-rate schedule over trainer.steps (verl's warmup_style), for the actor
    #: and the critic alike: "constant", or "cosine" from lr after the warm-up down
    #: to min_lr_ratio x lr at the last step (smaller updates as the run ends)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    #: training steps over which the rates ramp linearly up from lr / warmup_steps
    #: (verl's lr_warmup_steps); 0 = none
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.name not in ("ppo", "grpo"):
            raise ConfigError(f"unknown algorithm {self.name!r}; choose ppo or grpo")
        if self.critic not in ("head", "separate"):
            raise ConfigError(f"algo.critic must be 'head' or 'separate', got {self.critic!r}")
        if not 0 < self.filter_keep <= 1:
            raise ConfigError("algo.filter_keep must be in (0, 1]; 1.0 turns filtering off")
        for name in ("epochs", "minibatch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name} must be >= 1")
        if self.clip_ratio_c and self.clip_ratio_c <= 1:
            raise ConfigError("algo.clip_ratio_c must be > 1 (verl uses 3.0), or 0 to turn the dual clip off")
        if self.loss_agg not in LOSS_AGG:
            raise ConfigError(f"algo.loss_agg must be one of {', '.join(LOSS_AGG)}, got {self.loss_agg!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"algo.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("algo.min_lr_ratio must be in [0, 1]")
        if self.warmup_steps < 0:
            raise ConfigError("algo.warmup_steps must be >= 0")
        if self.tis_cap < 0:
            raise ConfigError("algo.tis_cap must be > 0, or 0 to turn truncated importance sampling off")
        if self.whiten_advantages is None:
            self.whiten_advantages = self.name == "ppo"
        if self.minibatch_size % self.grad_accum:
            raise ConfigError(f"algo.minibatch_size ({self.minibatch_size}) must be a multiple of "
                              f"algo.grad_accum ({self.grad_accum})")


@dataclass
class TrainerSection:
    #: optimisation steps (each: rollout -> filter -> update)
    steps: int = 5
    #: instance groups (distinct seeds) per step
    groups: int = 2
    #: rollouts per instance (GRPO needs >= 2); each runs its own search
    group_size: int = 4
    seed: int = 0
    #: held-out evaluation every K steps (and at step 0 and the end); 0 = only start and end
    eval_every: int = 0
    eval_episodes: int = 8
    #: search strategy at evaluation time (the trained policy needs none)
    eval_search: str = "none"
    #: also evaluate sampled at the rollout temperature (policy.temperature), beside
    #: the headline at policy.eval_temperature (greedy by default)
    eval_sampled: bool = False
    #: checkpoint every K steps (and at the end); 0 = only at the end
    save_every: int = 0
    #: where the run directory goes; None = runs/<env>-<algo>-<search>-s<seed>
    run_dir: str | None = None
    #: episodes rolled out together per batch (memory bound)
    rollout_batch: int = 64
    #: cpu, cuda or cuda:N; the batch, value head, critic and reference all live there
    device: str = "cpu"
    #: positions projected onto the vocabulary at a time in the trainer's forward,
    #: under activation checkpointing (memory ~ one chunk of logits); 0 = whole
    #: [N, P, V] logits at once (the pre-fix path, kept as the memory baseline)
    logprob_chunk: int = 512
    #: recompute each decoder layer in backward instead of keeping its activations
    gradient_checkpointing: bool = False
    #: dtype of the frozen KL reference copy (full fine-tuning with kl_coef > 0)
    reference_dtype: str = "bfloat16"
    #: where step records go: jsonl (RUN_DIR/metrics.jsonl, always written), tensorboard
    #: (RUN_DIR/tensorboard/, pip install 'tsr[tensorboard]'), wandb (pip install 'tsr[wandb]';
    #: WANDB_PROJECT, WANDB_MODE=offline etc. are read from the environment)
    logger: list = field(default_factory=lambda: ["jsonl"])
    #: labels the loggers attach to the run (wandb tags, group and name); tsr compare sets
    #: {sweep, arm, seed} for each of its runs
    tags: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "groups", "group_size", "eval_episodes", "rollout_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1")
        unknown = [name for name in self.logger if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"unknown trainer.logger {unknown[0]!r}; choose from {', '.join(LOGGERS)}")
        if self.eval_every < 0 or self.save_every < 0:
            raise ConfigError("trainer.eval_every and trainer.save_every must be >= 0")
        if self.logprob_chunk < 0:
            raise ConfigError("trainer.logprob_chunk must be >= 0 (0 = whole logits)")
        if self.reference_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"trainer.reference_dtype must be float32 or bfloat16, got {self.reference_dtype!r}")


SECTIONS = {
    "env": EnvSection,
    "policy": PolicySection,
    "search": SearchConfig,
    "algo": AlgoSection,
    "trainer": TrainerSection,
}
#: fields that exist on a section class but are set by the trainer, not the user
_INTERNAL = {"search": {"seed"}}


@dataclass
class TrainConfig:
    env: EnvSection = field(default_factory=EnvSection)
    policy: PolicySection = field(default_factory=PolicySection)
    search: SearchConfig = field(default_factory=SearchConfig)
    algo: AlgoSection = field(default_factory=AlgoSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    #: data-parallel processes the run was launched with (torchrun's WORLD_SIZE),
    #: recorded at the top level of config.yaml: run metadata, not a setting, so
    #: it is no section key and `to_dict` leaves it out. None until a run starts;
    #: a resumed run must be launched with the same number (`train/distributed.py`)
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.algo.name == "grpo" and self.trainer.group_size < 2:
            raise ConfigError("GRPO normalises returns within a group: set trainer.group_size >= 2")
        if self.search.strategy == "best-of-n" and self.search.candidates < 1:
            raise ConfigError("search.candidates must be >= 1 for best-of-n")
        if self.search.learn_from == "siblings" and self.search.strategy == "none":
            raise ConfigError("search.learn_from: siblings needs candidates to learn from: "
                              "set search.strategy to beam, lookahead or best-of-n")
        if self.trainer.eval_search not in ("none", "best-of-n", "beam", "lookahead"):
            raise ConfigError(f"unknown trainer.eval_search {self.trainer.eval_search!r}")
        size = self.world_size
        if size is not None and (type(size) is not int or size < 1):
            raise ConfigError(f"world_size must be a positive integer, got {size!r}")

    def to_dict(self) -> dict:
        return {name: _section_dict(name, getattr(self, name)) for name in SECTIONS}

    def resolved_run_dir(self) -> Path:
        if self.trainer.run_dir:
            return Path(self.trainer.run_dir)
        return Path("runs") / (f"{self.env.name}-{self.algo.name}-{self.search.strategy}"
                               f"-s{self.trainer.seed}")


def _section_dict(name: str, section) -> dict:
    skip = _INTERNAL.get(name, set())
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name not in skip}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read YAML (optional), apply dotted `section.key` overrides, validate, build."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must look like section.key")
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}")
        raw.setdefault(section, {})[key] = value
    return build_config(raw)


def read_yaml_mapping(path: Path, what: str = "config file", error: type = None) -> dict:
    """A YAML file whose top level is a mapping (empty file: {}); `error` is raised otherwise."""
    error = error or ConfigError
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping")
    return data


def build_config(raw: dict) -> TrainConfig:
    """Build a TrainConfig from {section: {key: value}} (and a recorded top-level
    `world_size`), checking names and types."""
    raw = dict(raw)
    sections = {"world_size": raw.pop("world_size", None)}
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; known: {', '.join(SECTIONS)}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a mapping")
        sections[name] = _build_section(name, SECTIONS[name], values)
    try:
        return TrainConfig(**sections)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def build_section(name: str, cls, values: dict):
    """One section dataclass from a mapping, with the same key and type checks (for configs
    that add sections of their own, such as `tsr sft`'s)."""
    return _build_section(name, cls, values)


def _build_section(name: str, cls, values: dict):
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in _INTERNAL.get(name, set())]
    kwargs = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(f"unknown config key {name}.{key}; known: {', '.join(allowed)}")
        kwargs[key] = _coerce(f"{name}.{key}", hints[key], value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _coerce(key: str, hint, value):
    """Check `value` against the field's type; ints are accepted where floats are."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict, list) and isinstance(value, origin):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{key} must be {names}, got {value!r}")


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` -> (dotted key, YAML-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        return key.strip(), raw


def dump_config(cfg: TrainConfig, path: Path) -> None:
    recorded = {} if cfg.world_size is None else {"world_size": cfg.world_size}
    path.write_text(yaml.safe_dump({**cfg.to_dict(), **recorded}, sort_keys=False))

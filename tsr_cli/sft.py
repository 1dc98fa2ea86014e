"""`tsr sft`: supervised warm starts from the environment's expert.

Demonstrations: the `expert` policy plays training seeds (never the held-out
ones, which start at EVAL_SEED_OFFSET). Each expert answer is then tokenized
with the learner's own codec, cut at `policy.max_new_tokens` as a sample of
that length would be, and applied through the same `Episode` (agent protocol,
chat template, prompt deltas) that RL rollouts use. So a demonstration's
`token_ids()` and `loss_mask()` are exactly the sequence an RL rollout that
sampled these answers would train on, and SFT learns the tokens RL samples.

Loss: cross-entropy on model tokens (loss mask 1), a token mean per
optimiser step. Full fine-tuning or LoRA, as `policy.lora` says.

Config: a train config (sections env, policy, search, algo, trainer) plus a
section `sft` (`SFTSection`); `tsr sft --config FILE` reads it, flags and
`--set sft.key=value` override it. The run directory holds:

    config.yaml      the train config: checkpoints load like RL ones, and a train
                     config can start from one (`policy.name: DIR/checkpoints/step_N`)
    sft.yaml         the whole SFT config (`tsr sft --config DIR/sft.yaml` repeats the run)
    metrics.jsonl    one record per optimiser step
    checkpoints/step_N/
    summary.json     held-out success before and after (greedy and sampled) and the expert's

Resume (`tsr sft --resume DIR`, and `tsr compare` for a sweep's start): the
demonstrations are collected again (a pure function of the config), the newest
readable checkpoint (`sft.save_every`, or Ctrl-C's) restores weights, AdamW and
the shuffler, and the epoch it fell in is redrawn and its finished minibatches
skipped. The shuffler moves on only at an epoch's end, so the resumed run takes
the same minibatches, and ends with the same weights, as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

import numpy as np
import torch
import yaml

from tsr_cli.agent.episode import Episode
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.agent.trajectory import Trajectory
from tsr_cli.evaluate import EVAL_SEED_OFFSET, eval_seeds, evaluate
from tsr_cli.policies.base import Completion, SamplingParams
from tsr_cli.train.batch import TokenBatch, build_batch
from tsr_cli.errors import Interrupted, warn
from tsr_cli.train.checkpoint import clean_checkpoints, fsync_file, latest_checkpoint, load_into, save_checkpoint
from tsr_cli.train.config import (
    SECTIONS,
    ConfigError,
    TrainConfig,
    build_config,
    build_section,
    dump_config,
    read_yaml_mapping,
)
from tsr_cli.train.model import TrainableModel, build_policy
from tsr_cli.train.run import machine

#: stream of the demonstration seeds, apart from the trainer's per-step draws
DEMO_STREAM = 5_117
#: learning-rate schedule: warm-up fraction of the steps, and the floor of the cosine decay
WARMUP, MIN_LR_RATIO = 0.05, 0.1
#: minibatches are grouped by length within pools of this many (see SFTTrainer._minibatches)
BUCKET_POOL = 8


@dataclass
class SFTSection:
    #: expert episodes, on training seeds
    demos: int = 64
    #: passes over the demonstrations
    epochs: int = 5
    #: peak learning rate (linear warm-up over 5% of the steps, cosine decay to a tenth)
    lr: float = 1e-3
    #: demonstrations per optimiser step
    batch_size: int = 8
    #: micro-batches accumulated inside one optimiser step (memory bound)
    grad_accum: int = 1
    #: probability that a demonstration turn is uniformly drawn legal actions instead of the
    #: expert's answer (the episode goes on from where they lead): a worse teacher, for
    #: deliberately partial starts
    noise: float = 0.0
    #: learn only from demonstrations that succeeded
    successes_only: bool = False
    #: evaluate the policy before training too (a from-scratch model scores 0, and its
    #: answers run to max_new_tokens, which is slow on WebShop's long pages)
    eval_before: bool = True
    #: write a checkpoint every K optimiser steps, for `--resume` (0: only the final one)
    save_every: int = 0

    def __post_init__(self) -> None:
        for name in ("demos", "epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sft.{name} must be >= 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ConfigError(f"sft.save_every must be >= 0, got {self.save_every}")
        if self.lr <= 0:
            raise ConfigError(f"sft.lr must be > 0, got {self.lr}")
        if not 0 <= self.noise <= 1:
            raise ConfigError(f"sft.noise must be in [0, 1], got {self.noise}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"sft.batch_size ({self.batch_size}) must be a multiple of "
                              f"sft.grad_accum ({self.grad_accum})")

    def steps_per_epoch(self, n_demos: int) -> int:
        """Optimiser steps in one pass over `n_demos` demonstrations."""
        return math.ceil(n_demos / self.batch_size)


@dataclass
class SFTConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    sft: SFTSection = field(default_factory=SFTSection)

    def to_dict(self) -> dict:
        return {**self.train.to_dict(), "sft": dataclasses.asdict(self.sft)}

    def resolved_run_dir(self) -> Path:
        t = self.train
        if t.trainer.run_dir:
            return Path(t.trainer.run_dir)
        policy = Path(t.policy.name).name or "policy"
        return Path("runs") / f"sft-{t.env.name}-{policy}-s{t.trainer.seed}"


def load_sft_config(path: str | Path | None = None, overrides: dict | None = None) -> SFTConfig:
    """A train config plus its `sft` section, with dotted `section.key` overrides applied."""
    raw = read_yaml_mapping(Path(path)) if path is not None else {}
    sft_raw = dict(raw.pop("sft", None) or {})
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must look like section.key")
        if section != "sft" and section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; known: {', '.join([*SECTIONS, 'sft'])}")
        target = sft_raw if section == "sft" else raw.setdefault(section, {})
        target[key] = value
    return SFTConfig(build_config(raw), build_section("sft", SFTSection, sft_raw))


def check_env(cfg: SFTConfig) -> None:
    """ValueError unless the config's environment exists and has an expert to learn from."""
    import envs
    from envs.experts import has_expert

    name = cfg.train.env.name
    if name not in envs.registered():
        raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(envs.registered())}")
    if not has_expert(name):
        raise ValueError(f"environment {name!r} has no expert to learn from")


def demo_seeds(seed: int, count: int) -> list[int]:
    """`count` distinct training instances (below EVAL_SEED_OFFSET), a pure function of `seed`."""
    rng = np.random.default_rng([seed, DEMO_STREAM])
    return [int(s) for s in rng.choice(EVAL_SEED_OFFSET, size=count, replace=False)]


def make_expert(cfg: TrainConfig, make_env, noise: float = 0.0, seed: int = 0):
    """The environment's expert as a policy, told the episode's turn budget."""
    from tsr_cli.policies import load_policy

    max_turns = cfg.env.protocol().resolved(make_env()).max_turns
    return load_policy("expert", seed=seed, env_names=[cfg.env.name], make_env=make_env,
                       max_turns=max_turns, noise=noise)


def expert_success(cfg: TrainConfig) -> float | None:
    """The expert's success on a run config's held-out instances, played as the run evaluates
    them without search: the ceiling of that run's numbers. None if the env has no expert."""
    import envs
    from envs.experts import has_expert

    if not has_expert(cfg.env.name):
        return None
    make_env = envs.factory(cfg.env.name, **cfg.env.args)
    summary = held_out(cfg, make_expert(cfg, make_env), make_env, cfg.env.protocol(), 0.0, strategy="none")
    return summary["success_rate"]


def held_out(cfg: TrainConfig, policy, make_env, protocol: ProtocolConfig, temperature: float,
             strategy: str) -> dict:
    """`policy` on the config's held-out instances with search `strategy`, summarised."""
    search = dataclasses.replace(cfg.search, strategy=strategy, seed=cfg.trainer.seed)
    params = SamplingParams(temperature, cfg.policy.top_p, cfg.policy.max_new_tokens, protocol.stop)
    return evaluate(policy, make_env, eval_seeds(cfg.trainer.eval_episodes), search, params, protocol,
                    env_name=cfg.env.name, batch_groups=cfg.trainer.rollout_batch)


# ------------------------------------------------------------- demonstrations


def demonstrations(cfg: SFTConfig, make_env, codec) -> list[tuple[Trajectory, Trajectory]]:
    """(teacher, learner) episode pairs on the demonstration seeds, played in lockstep.

    Each turn the expert answers the teacher episode's prompt; the answer is
    tokenized with the learner's `codec` and cut at `policy.max_new_tokens`, as
    a sample would be, and that same text is applied to both episodes. So the
    learner episode is exactly what RL would record had the learner sampled
    those tokens, and the expert always decides from the state the learner's
    spelling led to (a word-level tokenizer may re-spell a WebShop query, which
    changes the search results). Both environments share seeds and actions, so
    their random outcomes (FrozenLake's slips) agree; this is checked.
    """
    train = cfg.train
    expert = make_expert(train, make_env, cfg.sft.noise, seed=train.trainer.seed)
    protocol = train.env.protocol()
    seeds = demo_seeds(train.trainer.seed, cfg.sft.demos)
    pairs = []
    for lo in range(0, len(seeds), train.trainer.rollout_batch):
        chunk = [(Episode.start(make_env(), expert.codec, protocol, seed=s, env_name=train.env.name),
                  Episode.start(make_env(), codec, protocol, seed=s, env_name=train.env.name))
                 for s in seeds[lo:lo + train.trainer.rollout_batch]]
        _play_lockstep(expert, chunk, codec, train.policy.max_new_tokens)
        pairs += [(teacher.traj, learner.traj) for teacher, learner in chunk]
    return pairs


def _completion(ids: list[int], text: str, finish: str) -> Completion:
    """A given answer: probability 1 under the teacher, so logprobs 0."""
    return Completion(ids, [0.0] * len(ids), text, finish)


def _play_lockstep(expert, pairs: list, codec, budget: int) -> None:
    params = SamplingParams(temperature=0.0)
    live = list(pairs)
    while live:
        answers = expert.generate([teacher.prompt() for teacher, _ in live], 1, params)
        for (teacher, learner), (answer,) in zip(live, answers):
            ids = codec.encode(answer.text)
            finish = "length" if len(ids) > budget else "stop"
            ids = ids[:budget]
            text = codec.decode(ids)
            learner.apply(_completion(ids, text, finish))
            teacher.apply(_completion(expert.codec.encode(text), text, finish))
            if learner.observation != teacher.observation or learner.done != teacher.done:
                raise RuntimeError(f"demonstration seed {learner.traj.seed}: the learner's and the "
                                   "teacher's environments diverged")
        live = [(teacher, learner) for teacher, learner in live if not learner.done]


# ------------------------------------------------------------------ training


class SFTTrainer:
    """Model, optimiser and counters of one SFT run.

    It has the attributes `save_checkpoint` reads from an RL trainer (model,
    optimizer, policy.generator, shuffle, step, totals, evaluations, cfg), so
    SFT checkpoints are ordinary tsr checkpoints.
    """

    def __init__(self, cfg: SFTConfig):
        import envs

        train = cfg.train
        self.cfg, self.sft = train, cfg.sft
        torch.manual_seed(train.trainer.seed)
        self.policy = build_policy(train.policy, train.env.name, train.trainer.seed, train.trainer.device)
        self.model = TrainableModel(self.policy, train.policy, critic=None)
        self.optimizer = torch.optim.AdamW(self.model.actor_parameters(), lr=cfg.sft.lr,
                                           weight_decay=train.algo.weight_decay)
        self.shuffle = torch.Generator().manual_seed(train.trainer.seed)
        self.step = 0
        self.totals = {"wall_seconds": 0.0}
        self.initial_eval: dict | None = None
        self.last_eval: dict | None = None
        self.make_env = envs.factory(train.env.name, **train.env.args)
        self.protocol = train.env.protocol()

    def fit(self, batch: TokenBatch, on_step=None, save=None, should_stop=None) -> None:
        """`epochs` shuffled passes of AdamW steps on the token-mean cross-entropy, from `self.step`.

        Each epoch's order is drawn from a copy of `self.shuffle`, which takes the
        copy's state only when the epoch ends: a checkpoint saved mid-epoch holds the
        state that epoch was drawn from, and a run resumed from it redraws the epoch
        and skips the minibatches already taken. `save(step)` is called every
        `sft.save_every` steps before the last; `should_stop()`, asked after each
        step, ends the fit early (Ctrl-C).
        """
        on_step = on_step or (lambda record: None)
        lengths = batch.attention_mask.sum(1)
        per_epoch = self.sft.steps_per_epoch(len(batch))
        total = self.sft.epochs * per_epoch
        while self.step < total:
            epoch, taken = divmod(self.step, per_epoch)
            order = torch.Generator()
            order.set_state(self.shuffle.get_state())
            for rows in self._minibatches(lengths, order)[taken:]:
                start = time.perf_counter()
                self._set_lr(self.step, total)
                record = {"step": self.step + 1, "epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                          **self._update(batch, rows)}
                self.step += 1
                if self.step % per_epoch == 0:
                    self.shuffle = order
                self.totals["wall_seconds"] += time.perf_counter() - start
                record["wall_seconds"] = round(self.totals["wall_seconds"], 3)
                on_step(record)
                if save and self.sft.save_every and self.step % self.sft.save_every == 0 and self.step < total:
                    save(self.step)
                if should_stop and should_stop():
                    return

    def _minibatches(self, lengths: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One epoch's minibatches: shuffled, then grouped by length within pools of
        BUCKET_POOL batches, in shuffled order. A minibatch is padded to its longest
        conversation, and episode lengths vary ~3x, so this skips most of the padding."""
        size, generator = self.sft.batch_size, generator or self.shuffle
        order = torch.randperm(len(lengths), generator=generator)
        batches = []
        for pool in order.split(size * BUCKET_POOL):
            pool = pool[torch.argsort(lengths[pool], stable=True)]
            batches += list(pool.split(size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator)]

    def _set_lr(self, step: int, total: int) -> None:
        """Linear warm-up over WARMUP of the steps, then cosine decay to MIN_LR_RATIO of sft.lr."""
        warm = max(1, round(WARMUP * total))
        if step < warm:
            scale = (step + 1) / warm
        else:
            progress = (step - warm) / max(1, total - warm)
            scale = MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in self.optimizer.param_groups:
            group["lr"] = self.sft.lr * scale

    def _update(self, batch: TokenBatch, rows: torch.Tensor) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        total = batch.mask[rows].sum().clamp(min=1.0)
        loss = 0.0
        for part in rows.split(math.ceil(len(rows) / self.sft.grad_accum)):
            sub = batch.select(part)
            nll = -(self.model.forward(sub).logprobs * sub.mask).sum() / total
            nll.backward()
            loss += nll.item()
        norm = torch.nn.utils.clip_grad_norm_(self.model.actor_parameters(), self.cfg.algo.max_grad_norm)
        self.optimizer.step()
        return {"loss": loss, "grad_norm": float(norm)}

    def sync_sampler(self) -> dict:
        """Nothing to push: SFT evaluates with the policy it trains (`load_into` asks every trainer)."""
        return {}

    def evaluate(self, policy=None, temperature: float | None = None) -> dict:
        """Held-out instances with `trainer.eval_search`, at `temperature` (eval_temperature)."""
        train = self.cfg
        temp = train.policy.eval_temperature if temperature is None else temperature
        return held_out(train, self.policy if policy is None else policy, self.make_env, self.protocol, temp,
                        train.trainer.eval_search)


class SFTRun:
    """An SFT run directory: `create` collects the demonstrations, `train` does the rest."""

    def __init__(self, cfg: SFTConfig, run_dir: Path):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.trainer = SFTTrainer(cfg)
        start = time.perf_counter()
        pairs = demonstrations(cfg, self.trainer.make_env, self.trainer.policy.codec)
        self.teacher_demos = [teacher for teacher, _ in pairs]
        self.demos = [learner for _, learner in pairs]
        self.learner_demos = [d for d in self.demos if d.success or not cfg.sft.successes_only]
        if not self.learner_demos:
            raise ValueError("no demonstration succeeded; set sft.successes_only=false or add demos")
        self.batch = build_batch(self.learner_demos, self.trainer.policy.codec.pad_token_id)
        self.demo_seconds = time.perf_counter() - start

    @classmethod
    def create(cls, cfg: SFTConfig, overwrite: bool = False) -> "SFTRun":
        check_env(cfg)
        run_dir = cfg.resolved_run_dir()
        if (run_dir / "sft.yaml").exists() or (run_dir / "config.yaml").exists():
            if not overwrite:
                raise FileExistsError(f"run directory {run_dir} already holds a run; use --overwrite "
                                      "to replace it, or --run-dir")
            shutil.rmtree(run_dir)
        run = cls(cfg, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg.train, run_dir / "config.yaml")
        (run_dir / "sft.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (run_dir / "metrics.jsonl").write_text("")
        return run

    @classmethod
    def resume(cls, run_dir: Path) -> "SFTRun":
        """The run in `run_dir`, at its newest readable checkpoint (none: from the start)."""
        from tsr_cli.train.run import cut_metrics

        run_dir = Path(run_dir)
        if not (run_dir / "sft.yaml").is_file():
            raise FileNotFoundError(f"no SFT run to resume at {run_dir} (sft.yaml missing)")
        if (run_dir / "summary.json").is_file():
            raise ValueError(f"the SFT run at {run_dir} has finished (summary.json); nothing to resume")
        cfg = load_sft_config(run_dir / "sft.yaml", {"trainer.run_dir": str(run_dir)})
        check_env(cfg)
        run = cls(cfg, run_dir)
        clean_checkpoints(run_dir)
        checkpoint = latest_checkpoint(run_dir, on_skip=warn)
        if checkpoint is not None:
            load_into(run.trainer, checkpoint)
        cut_metrics(run_dir, run.trainer.step)
        return run

    @property
    def total_steps(self) -> int:
        return self.cfg.sft.epochs * self.cfg.sft.steps_per_epoch(len(self.learner_demos))

    def train(self, on_step=None, should_stop=None) -> dict:
        """Evaluate, fit, checkpoint, evaluate again (greedy, sampled, and the expert); summarise.

        `should_stop()` (Ctrl-C) ends the fit after a step: that step is saved, and
        Interrupted tells how to resume."""
        trainer = self.trainer
        if trainer.step == 0 and self.cfg.sft.eval_before:
            trainer.initial_eval = trainer.evaluate()

        def log(record: dict) -> None:
            with open(self.dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if on_step:
                on_step(record)

        saved = []

        def save(step: int) -> None:
            fsync_file(self.dir / "metrics.jsonl", missing_ok=True)  # the records resume will trust, on disk first
            save_checkpoint(trainer, self.dir)
            saved.append(step)

        trainer.fit(self.batch, log, save, should_stop)
        if trainer.step < self.total_steps:
            if not saved or saved[-1] != trainer.step:
                save(trainer.step)
            stop = Interrupted(f"interrupted after step {trainer.step} of {self.total_steps}; saved "
                               f"checkpoint step_{trainer.step}", self.dir)
            stop.resume = f"tsr sft --resume {self.dir}"
            raise stop
        trainer.last_eval = trainer.evaluate()
        save_checkpoint(trainer, self.dir)
        sampled = trainer.evaluate(temperature=trainer.cfg.policy.temperature)
        expert = trainer.evaluate(make_expert(trainer.cfg, trainer.make_env))
        summary = self.summary(sampled, expert)
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def summary(self, sampled: dict, expert: dict) -> dict:
        t, sft = self.trainer, self.cfg.sft
        return {
            "env": t.cfg.env.name, "policy": t.cfg.policy.name, "demos": sft.demos, "epochs": sft.epochs,
            "noise": sft.noise, "steps": t.step,
            "checkpoint": str(self.dir / "checkpoints" / f"step_{t.step}"),
            "demo_success_rate": fmean(float(d.success) for d in self.demos),
            "demos_learned": len(self.learner_demos),
            "demo_model_tokens": int(self.batch.mask.sum()),
            "initial_val_success_rate": (t.initial_eval or {}).get("success_rate"),
            "final_val_success_rate": t.last_eval["success_rate"],
            "final_val_invalid_action_rate": t.last_eval["invalid_action_rate"],
            "final_val_sampled_success_rate": sampled["success_rate"],
            "expert_val_success_rate": expert["success_rate"],
            "eval_episodes": t.cfg.trainer.eval_episodes,
            "demo_seconds": round(self.demo_seconds, 3),
            "train_seconds": round(t.totals["wall_seconds"], 3),
            "machine": machine(),
        }

"""The training loop: rollout -> filter -> log-probs -> advantages -> update -> eval -> log.

The optimiser never learns which search strategy built its batch: it sees
trajectories (token ids, loss mask, per-turn rewards, groups) and nothing
else. Log-probs in the loss are recomputed by the training model before the
first update of a step, not taken from the sampler.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from statistics import fmean

import numpy as np
import torch

from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.algos import (
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    kl_k3,
    masked_mean,
    ppo_policy_loss,
    value_loss,
)
from tsr_cli.evaluate import EVAL_SEED_OFFSET, eval_seeds, evaluate
from tsr_cli.policies.base import SamplingParams
from tsr_cli.rollout import rollout
from tsr_cli.search import SearchConfig
from tsr_cli.search.filtering import filter_groups
from tsr_cli.train.batch import TokenBatch, build_batch
from tsr_cli.train.config import TrainConfig
from tsr_cli.train.model import TrainableModel, build_policy, build_sampler

#: weight of the value loss next to the policy loss (PPO)
VALUE_COEF = 0.5


class Trainer:
    """Owns the model, optimiser and counters of one run. `run()` trains to the end."""

    def __init__(self, cfg: TrainConfig, on_step=None, on_eval=None):
        self.cfg = cfg
        self.on_step = on_step or (lambda record: None)
        self.on_eval = on_eval or (lambda step, result: None)
        torch.manual_seed(cfg.trainer.seed)
        self.policy = build_policy(cfg.policy, cfg.env.name, cfg.trainer.seed, cfg.trainer.device)
        critic = cfg.algo.critic if cfg.algo.name == "ppo" else None
        self.model = TrainableModel(self.policy, cfg.policy, critic, keep_reference=cfg.algo.kl_coef > 0)
        # rollouts and evaluations generate with the sampler: the policy itself, or a vLLM engine
        self.sampler = build_sampler(cfg.policy, self.policy)
        self.optimizer = self._make_optimizer()
        self.shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
        self.step = 0
        self.totals = {"tokens_generated": 0, "env_steps": 0, "sim_env_steps": 0, "wall_seconds": 0.0}
        self.initial_eval: dict | None = None
        self.last_eval: dict | None = None
        self._make_env = _env_factory(cfg)

    # ----------------------------------------------------------------- set-up
    def _make_optimizer(self) -> torch.optim.Optimizer:
        algo = self.cfg.algo
        groups = [{"params": self.model.actor_parameters(), "lr": algo.lr}]
        critic = self.model.critic_parameters()
        if critic:
            groups.append({"params": critic, "lr": algo.critic_lr})
        return torch.optim.AdamW(groups, weight_decay=algo.weight_decay)

    def protocol(self) -> ProtocolConfig:
        env = self.cfg.env
        return ProtocolConfig(env.max_turns, env.actions_per_turn, env.answer_only, env.format_penalty)

    def train_seeds(self, step: int) -> list[int]:
        """The instances of a step: a pure function of (seed, step), so resume needs no state."""
        rng = np.random.default_rng([self.cfg.trainer.seed, step])
        return [int(s) for s in rng.integers(0, EVAL_SEED_OFFSET, size=self.cfg.trainer.groups)]

    # ------------------------------------------------------------------- loop
    def run(self, save=None) -> None:
        """Train from `self.step` to `trainer.steps`; `save(step)` writes checkpoints."""
        t = self.cfg.trainer
        if self.step == 0 and self.initial_eval is None:
            self.initial_eval = self.evaluate()
            self.last_eval = self.initial_eval
            self.on_step({"step": 0, **_val(self.initial_eval)})
        while self.step < t.steps:
            record = self.train_step()
            if self._due(t.eval_every) or self.step == t.steps:
                with _timed(record, "eval"):
                    self.last_eval = self.evaluate()
                record.update(_val(self.last_eval))
            self.totals["wall_seconds"] += sum(v for k, v in record.items() if k.startswith("time_"))
            record["wall_seconds"] = round(self.totals["wall_seconds"], 3)
            # Log before saving: a kill between the two loses nothing, since
            # resume drops records newer than the last checkpoint.
            self.on_step(record)
            if save and (self._due(t.save_every) or self.step == t.steps):
                start = time.perf_counter()
                save(self.step)
                self.totals["wall_seconds"] += time.perf_counter() - start

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def train_step(self) -> dict:
        """One step: rollout, filter, old log-probs, advantages, update."""
        self.step += 1
        record: dict = {"step": self.step}
        with _timed(record, "rollout"):
            result = self.collect()
        with _timed(record, "filter"):
            kept = filter_groups(result.trajectories, self.cfg.algo.filter_keep)
            batch = build_batch(kept, self.policy.codec.pad_token_id)
        with _timed(record, "logprobs"):
            self.score_batch(batch)
        with _timed(record, "advantages"):
            self.add_advantages(batch)
        with _timed(record, "update"):
            record.update(self.update(batch))
            record.update(self.sync_sampler())
        trajs = result.trajectories
        record.update({
            "train_success": fmean(float(tr.success) for tr in trajs),
            "train_return": fmean(tr.total_return for tr in trajs),
            "kept_fraction": len(kept) / len(trajs),
            **{k: result.cost.as_dict()[k] for k in ("tokens_generated", "env_steps", "sim_env_steps")},
            "peak_rss_mb": _peak_rss_mb(),
        })
        for key in ("tokens_generated", "env_steps", "sim_env_steps"):
            self.totals[key] += record[key]
        return record

    def collect(self):
        """Search-built rollouts: `groups` instances x `group_size` members, each its own search."""
        cfg = self.cfg
        search = _with_seed(cfg.search, cfg.trainer.seed * 100_003 + self.step)
        params = SamplingParams(cfg.policy.temperature, cfg.policy.top_p, cfg.policy.max_new_tokens,
                                self.protocol().stop)
        per_batch = max(1, cfg.trainer.rollout_batch // cfg.trainer.group_size)
        return rollout(self.sampler, self._make_env, self.train_seeds(self.step), search, params,
                       self.protocol(), env_name=cfg.env.name, group_size=cfg.trainer.group_size,
                       batch_groups=per_batch)

    def evaluate(self) -> dict:
        """Held-out instances, decoded at `eval_temperature`, with `eval_search`."""
        cfg = self.cfg
        search = _with_seed(cfg.search, cfg.trainer.seed, strategy=cfg.trainer.eval_search)
        params = SamplingParams(cfg.policy.eval_temperature, cfg.policy.top_p, cfg.policy.max_new_tokens,
                                self.protocol().stop)
        state = self.policy.generator.get_state()
        summary = evaluate(self.sampler, self._make_env, eval_seeds(cfg.trainer.eval_episodes), search,
                           params, self.protocol(), env_name=cfg.env.name,
                           batch_groups=cfg.trainer.rollout_batch)
        self.policy.generator.set_state(state)  # evaluation never shifts the training stream
        self.on_eval(self.step, summary)
        return summary

    def sync_sampler(self) -> dict:
        """Push the trained weights into a sampler that keeps its own copy (vLLM): {sync_seconds}."""
        if self.sampler is self.policy:
            return {}
        return {"sync_seconds": round(self.sampler.sync_from(self.model.model), 4)}

    # ------------------------------------------------------------ the maths
    def _chunks(self, n: int, size: int):
        for lo in range(0, n, size):
            yield torch.arange(lo, min(lo + size, n))

    @torch.no_grad()
    def score_batch(self, batch: TokenBatch) -> None:
        """Old log-probs (and values, reference log-probs) under the current weights."""
        ppo = self.cfg.algo.name == "ppo"
        fields = {"old_logprobs": [], "old_values": [], "ref_logprobs": []}
        size = max(1, self.cfg.algo.minibatch_size // self.cfg.algo.grad_accum)
        for index in self._chunks(len(batch), size):
            sub = batch.select(index)
            out = self.model.forward(sub, values=ppo)
            fields["old_logprobs"].append(_pad_to(out.logprobs, batch))
            if ppo:
                fields["old_values"].append(_pad_to(out.values, batch))
            if self.model.has_reference and self.cfg.algo.kl_coef > 0:
                fields["ref_logprobs"].append(_pad_to(self.model.reference_logprobs(sub), batch))
        for key, parts in fields.items():
            if parts:
                batch.tokens[key] = torch.cat(parts) * batch.mask

    def add_advantages(self, batch: TokenBatch) -> None:
        """GRPO: group-normalised return on every model token. PPO: token-level GAE."""
        algo = self.cfg.algo
        if algo.name == "grpo":
            adv = grpo_advantages(batch.returns, batch.groups)
            batch.tokens["advantages"] = broadcast_to_tokens(adv, batch.mask)
            return
        adv, ret = gae(batch.tokens["rewards"], batch.tokens["old_values"], batch.mask, algo.gamma, algo.lam)
        batch.tokens["advantages"] = adv
        batch.tokens["returns"] = ret

    def update(self, batch: TokenBatch) -> dict:
        """`epochs` passes of minibatch AdamW steps; losses are token means over model tokens."""
        algo = self.cfg.algo
        params = self.model.actor_parameters() + self.model.critic_parameters()
        logs: dict[str, list[float]] = {}
        for _ in range(algo.epochs):
            order = torch.randperm(len(batch), generator=self.shuffle)
            for minibatch in order.split(algo.minibatch_size):
                self.optimizer.zero_grad(set_to_none=True)
                total = batch.mask[minibatch].sum().clamp(min=1.0)
                micro = math.ceil(len(minibatch) / algo.grad_accum)
                for part in minibatch.split(micro):
                    sub = batch.select(part)
                    stats = self._loss(sub, weight=sub.mask.sum() / total)
                    for key, value in stats.items():
                        logs.setdefault(key, []).append(value)
                norm = torch.nn.utils.clip_grad_norm_(params, algo.max_grad_norm)
                self.optimizer.step()
                logs.setdefault("grad_norm", []).append(float(norm))
        return {key: fmean(values) for key, values in logs.items()}

    def _loss(self, sub: TokenBatch, weight: torch.Tensor) -> dict:
        algo = self.cfg.algo
        ppo = algo.name == "ppo"
        tok = sub.tokens
        out = self.model.forward(sub, values=ppo, entropy=True)
        policy_loss, stats = ppo_policy_loss(out.logprobs, tok["old_logprobs"], tok["advantages"],
                                             sub.mask, algo.clip_low, algo.clip_high)
        entropy = masked_mean(out.entropy, sub.mask)
        loss = policy_loss - algo.entropy_coef * entropy
        logs = {"policy_loss": policy_loss.detach().item(), "entropy": entropy.detach().item(),
                "clip_fraction": float(stats["clip_fraction"]), "approx_kl": float(stats["approx_kl"])}
        if ppo:
            vloss = value_loss(out.values, tok["old_values"], tok["returns"], sub.mask,
                               algo.value_clip or None)
            loss = loss + VALUE_COEF * vloss
            logs["value_loss"] = vloss.detach().item()
        if "ref_logprobs" in tok:
            kl = masked_mean(kl_k3(out.logprobs, tok["ref_logprobs"]), sub.mask)
            loss = loss + algo.kl_coef * kl
            logs["kl"] = kl.detach().item()
        (loss * weight).backward()
        logs["loss"] = loss.detach().item()
        return logs

    # ------------------------------------------------------------- summary
    def summary(self) -> dict:
        init, last = self.initial_eval or {}, self.last_eval or {}
        return {
            "steps": self.step,
            "initial_val_success_rate": init.get("success_rate"),
            "initial_val_mean_return": init.get("mean_return"),
            "final_val_success_rate": last.get("success_rate"),
            "final_val_mean_return": last.get("mean_return"),
            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.totals.items()},
        }


def _with_seed(search: SearchConfig, seed: int, strategy: str | None = None) -> SearchConfig:
    from dataclasses import replace

    return replace(search, seed=seed, strategy=strategy or search.strategy)


def _env_factory(cfg: TrainConfig):
    import envs

    return envs.factory(cfg.env.name, **cfg.env.args)


def _pad_to(x: torch.Tensor, batch: TokenBatch) -> torch.Tensor:
    """Right-pad a trimmed [n, w] tensor to the batch's full target width."""
    width = batch.mask.shape[1]
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _val(summary: dict) -> dict:
    return {"val_success_rate": summary["success_rate"], "val_mean_return": summary["mean_return"]}


@contextmanager
def _timed(record: dict, phase: str):
    start = time.perf_counter()
    yield
    record[f"time_{phase}"] = round(time.perf_counter() - start, 4)

"""The training loop: rollout -> filter -> log-probs -> advantages -> update -> eval -> log.

The optimiser never learns which search strategy built its batch: it sees
trajectories (token ids, loss mask, per-turn rewards, groups) and nothing
else. Log-probs in the loss are recomputed by the training model before the
first update of a step, not taken from the sampler.

Under torchrun the same loop runs data-parallel: each rank rolls out its
share of the step's groups and trains on its rows of each global minibatch
(`train/distributed.py` says what is split and what is reduced). A single
process is the world of one, whose collectives do nothing.
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
    masked_whiten,
    ppo_policy_loss,
    tis_weights,
    value_loss,
)
from tsr_cli.algos.schedule import lr_scale
from tsr_cli.evaluate import EVAL_SEED_OFFSET, episode_stats, eval_rollout, eval_seeds, summarize_stats
from tsr_cli.policies.base import SamplingParams
from tsr_cli.rollout import rollout
from tsr_cli.search import SearchConfig
from tsr_cli.search.filtering import filter_groups
from tsr_cli.search.siblings import sibling_rows
from tsr_cli.train import distributed
from tsr_cli.train.batch import (
    TokenBatch,
    append_rows,
    build_batch,
    episode_mask,
    loss_mask,
    overlay_sibling_advantages,
    sections,
    weight_rows_equally,
)
from tsr_cli.train.config import TrainConfig
from tsr_cli.train.logprobs import logprob_gap
from tsr_cli.train.model import ModelOptions, TrainableModel, build_policy, build_sampler

#: weight of the value loss next to the policy loss (PPO)
VALUE_COEF = 0.5
#: the tokens each loss term is a mean over (`_loss`), by name
TOKEN_MASKS = {"loss": loss_mask, "model": lambda batch: batch.mask, "episode": episode_mask}
#: the tokens each logged loss statistic is a mean over (the rest: the policy loss's)
STAT_TOKENS = {"entropy": "model", "tis_weight_mean": "model", "kl": "model", "value_loss": "episode"}
#: the second word of a sampling-stream key: training rollouts, evaluation
TRAIN_STREAMS, EVAL_STREAMS = 0, 1
#: how each metric is reduced over data-parallel ranks (the rest: averaged)
SUMMED = ("tokens_generated", "env_steps", "sim_env_steps", "generate_calls", "truncated_episodes",
          "sibling_rows", "sibling_tokens",
          # the loss statistics: each rank logs its part of every minibatch's token means
          "loss", "policy_loss", "entropy", "clip_fraction", "dual_clip_fraction", "approx_kl",
          "tis_weight_mean", "value_loss", "kl")
#: maxima; the already-global values (equal on every rank) are here too
MAXED = ("step", "peak_rss_mb", "wall_seconds", "logprob_diff_max", "logprob_diff_mean", "grad_norm",
         "critic_grad_norm", "skipped_steps")


class Trainer:
    """Owns the model, optimiser and counters of one run. `run()` trains to the end."""

    def __init__(self, cfg: TrainConfig, on_step=None, on_eval=None):
        self.cfg = cfg
        self.on_step = on_step or (lambda record: None)
        self.on_eval = on_eval or (lambda step, result: None)
        _check_device(cfg.trainer.device)
        self.world = distributed.setup(cfg)
        torch.manual_seed(cfg.trainer.seed)
        self.policy = build_policy(cfg.policy, cfg.env.name, cfg.trainer.seed,
                                   self.world.train_device(cfg.trainer.device))
        critic = cfg.algo.critic if cfg.algo.name == "ppo" else None
        self.model = TrainableModel(self.policy, cfg.policy, critic, keep_reference=cfg.algo.kl_coef > 0,
                                    options=ModelOptions.from_config(cfg))
        self.world.broadcast_parameters(self.model.named_trainable().values())
        self.device = self.model.device
        # rollouts and evaluations generate with the sampler: the policy itself, or a vLLM engine
        self.sampler = build_sampler(cfg.policy, self.policy)
        self.optimizer = self._make_optimizer()
        # Minibatch order is drawn on the CPU on purpose: the same seed gives the
        # same order on every device.
        self.shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
        self.step = 0
        self.totals = {"tokens_generated": 0, "env_steps": 0, "sim_env_steps": 0, "sibling_tokens": 0,
                       "wall_seconds": 0.0}
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

    def _schedule_lr(self) -> dict:
        """Set this step's learning rates (`algo.lr_schedule`, `warmup_steps`); logged unless constant."""
        algo = self.cfg.algo
        scale = lr_scale(algo.lr_schedule, self.step, self.cfg.trainer.steps, algo.min_lr_ratio, algo.warmup_steps)
        for group, base in zip(self.optimizer.param_groups, (algo.lr, algo.critic_lr)):
            group["lr"] = base * scale
        return {} if algo.lr_schedule == "constant" and not algo.warmup_steps else {"lr": algo.lr * scale}

    def protocol(self) -> ProtocolConfig:
        return self.cfg.env.protocol()

    def train_seeds(self, step: int) -> list[int]:
        """The instances of a step: a pure function of (seed, step), so resume needs no state."""
        rng = np.random.default_rng([self.cfg.trainer.seed, step])
        return [int(s) for s in rng.integers(0, EVAL_SEED_OFFSET, size=self.cfg.trainer.groups)]

    # ------------------------------------------------------------------- loop
    def run(self, save=None, should_stop=None) -> None:
        """Train from `self.step` to `trainer.steps`; `save(step)` writes checkpoints.

        `should_stop()` is asked before each step; True returns early, after the
        last step's log and checkpoint (Ctrl-C: the caller saves and exits).
        """
        t = self.cfg.trainer
        if self.step == 0 and self.initial_eval is None:
            self.initial_eval = self.evaluate()
            self.last_eval = self.initial_eval
            self.on_step({"step": 0, **_val(self.initial_eval)})
        while self.step < t.steps and not (should_stop and should_stop()):
            record = self.train_step()
            if self._due(t.eval_every) or self.step == t.steps:
                with _timed(record, "eval"):
                    self.last_eval = self.evaluate()
                record["time_eval"] = self.world.reduce({"t": record["time_eval"]}, maxes=["t"])["t"]  # slowest rank
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
            siblings = sibling_rows(kept, self.cfg.search.sibling_weight)  # none unless learn_from: siblings
            batch = append_rows(batch, siblings, self.policy.codec.pad_token_id).to(self.device)
            if self.cfg.algo.loss_agg == "seq-mean-token-mean":
                weight_rows_equally(batch)
        with _timed(record, "logprobs"):
            self.score_batch(batch)
            record.update(logprob_gap(batch, self.world))
        with _timed(record, "advantages"):
            self.add_advantages(batch)
            overlay_sibling_advantages(batch)
        with _timed(record, "update"):
            record.update(self._schedule_lr())
            record.update(self.update(batch))
            record.update(self.sync_sampler())
        trajs = result.trajectories
        record.update({
            "train_success": fmean(float(tr.success) for tr in trajs),
            "train_return": fmean(tr.total_return for tr in trajs),
            "kept_fraction": len(kept) / len(trajs),
            "truncated_episodes": sum(tr.truncated for tr in trajs),
            "sibling_rows": len(siblings),
            "sibling_tokens": sum(len(row.ids) for row in siblings),
            **{k: result.cost.as_dict()[k] for k in ("tokens_generated", "env_steps", "sim_env_steps")},
            "peak_rss_mb": _peak_rss_mb(),
        })
        timings = tuple(k for k in record if k.startswith("time_"))  # a step waits for its slowest rank
        record = self.world.reduce(record, sums=SUMMED, maxes=MAXED + timings)
        for key in self.totals.keys() - {"wall_seconds"}:  # wall time is summed where it is measured
            self.totals[key] += record[key]
        return record

    def collect(self):
        """Search-built rollouts: `groups` instances x `group_size` members, each its own search.

        This rank plays its share of the step's groups, under their global
        ids; each group samples from its own stream keyed by (seed, step, id).
        """
        cfg = self.cfg
        search = _with_seed(cfg.search, cfg.trainer.seed * 100_003 + self.step)
        params = SamplingParams(cfg.policy.temperature, cfg.policy.top_p, cfg.policy.max_new_tokens,
                                self.protocol().stop)
        per_batch = max(1, cfg.trainer.rollout_batch // cfg.trainer.group_size)
        share = self.world.share(cfg.trainer.groups)
        return rollout(self.sampler, self._make_env, self.train_seeds(self.step)[share], search, params,
                       self.protocol(), env_name=cfg.env.name, group_size=cfg.trainer.group_size,
                       batch_groups=per_batch, first_group=share.start,
                       streams=(cfg.trainer.seed, TRAIN_STREAMS, self.step))

    def evaluate(self) -> dict:
        """Held-out instances, decoded at `eval_temperature`, with `eval_search`.

        With `trainer.eval_sampled` the same instances are also played sampled
        at the rollout temperature; that summary sits under the key `sampled`.
        """
        cfg = self.cfg
        summary = self._evaluate_at(cfg.policy.eval_temperature)
        if cfg.trainer.eval_sampled:
            summary["sampled"] = self._evaluate_at(cfg.policy.temperature)
        self.on_eval(self.step, summary)
        return summary

    def _evaluate_at(self, temperature: float) -> dict:
        """This rank's share of the held-out episodes, summarised over all ranks."""
        result = self.held_out_episodes(temperature)
        cost = self.world.reduce(result.cost.as_dict(), sums=SUMMED, maxes=MAXED)
        return summarize_stats(self.world.gather(episode_stats(result.trajectories)), cost)

    def held_out_episodes(self, temperature: float):
        """This rank's share of the held-out episodes at `temperature`: a RolloutResult whose
        trajectories follow `eval_seeds(trainer.eval_episodes)[share]`.

        Every episode samples from its own stream keyed by (seed, episode), the
        same at each evaluation: successive evaluations see common random
        numbers, and none of them touches a training stream.
        """
        cfg = self.cfg
        search = _with_seed(cfg.search, cfg.trainer.seed, strategy=cfg.trainer.eval_search)
        params = SamplingParams(temperature, cfg.policy.top_p, cfg.policy.max_new_tokens, self.protocol().stop)
        seeds = eval_seeds(cfg.trainer.eval_episodes)
        share = self.world.share(len(seeds))
        return eval_rollout(self.sampler, self._make_env, seeds[share], search, params, self.protocol(),
                            env_name=cfg.env.name, batch_groups=cfg.trainer.rollout_batch,
                            first_group=share.start, streams=(cfg.trainer.seed, EVAL_STREAMS))

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
        """GRPO: group-normalised return on every model token. PPO: token-level GAE.

        With `whiten_advantages` (PPO's default) the advantages are then
        whitened over the batch's model tokens; GAE's returns, the critic's
        targets, are left as they are.
        """
        algo = self.cfg.algo
        if algo.name == "grpo":
            adv = broadcast_to_tokens(grpo_advantages(batch.returns, batch.groups), batch.mask)
        else:
            adv, ret = gae(batch.tokens["rewards"], batch.tokens["old_values"], batch.mask, algo.gamma, algo.lam)
            batch.tokens["returns"] = ret
        if algo.whiten_advantages:  # over every rank's episode tokens; sibling rows bring their own
            adv = masked_whiten(adv, episode_mask(batch), all_sum=self.world.all_sum)
        batch.tokens["advantages"] = adv

    def update(self, batch: TokenBatch) -> dict:
        """`epochs` passes of minibatch AdamW steps; losses are token means over model tokens.

        Minibatches are drawn from the global batch (every rank's rows; see
        `_minibatches`). Each loss term is a token mean over its minibatch's
        global token count, so neither micro-batches nor ranks change the
        gradient, and the ranks' gradients sum to the single-process one.
        Actor and critic gradients are clipped separately, so the value loss
        never shrinks the actor's step. A minibatch whose gradient norm is inf
        or NaN is skipped (no optimiser step) and counted in `skipped_steps`.
        """
        logs: list[dict[str, float]] = []  # per minibatch
        skipped = 0
        minibatches = self._minibatches(batch)
        masks = [mask(batch) for mask in TOKEN_MASKS.values()]
        counts = torch.stack([torch.stack([m[rows].sum() for m in masks]) for rows, _ in minibatches])
        for (rows, size), totals in zip(minibatches, self.world.all_sum(counts).clamp(min=1.0)):
            self.optimizer.zero_grad(set_to_none=True)
            log = self._backward(batch, rows, size, totals)
            norms = self._optimizer_step()
            skipped += not all(math.isfinite(v) for v in norms.values())
            logs.append({**log, **norms})
        # a key a minibatch lacks is a part this rank held nothing of: 0
        keys = dict.fromkeys(key for log in logs for key in log)
        out = {key: _finite_mean([log.get(key, 0.0) for log in logs]) for key in keys}
        out["skipped_steps"] = skipped
        return out

    def _backward(self, batch: TokenBatch, rows: torch.Tensor, size: int, totals: torch.Tensor) -> dict:
        """Accumulate the gradient of this rank's `rows` of a minibatch of `size` rows
        whose token counts are `totals` (`TOKEN_MASKS` order); its statistics' parts."""
        log: dict[str, float] = {}
        for part in rows.split(math.ceil(size / self.cfg.algo.grad_accum)) if len(rows) else ():
            sub = batch.select(part)
            shares = {key: mask(sub).sum() / total for (key, mask), total in zip(TOKEN_MASKS.items(), totals)}
            for key, value in self._loss(sub, shares).items():
                log[key] = log.get(key, 0.0) + value
        return log

    def _optimizer_step(self) -> dict[str, float]:
        """Sum the ranks' gradients, clip, and step unless a norm is inf or NaN; the norms."""
        self.world.sum_gradients(self.model.actor_parameters() + self.model.critic_parameters())
        norms = self._clip_gradients()
        if all(math.isfinite(v) for v in norms.values()):
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return norms

    def _minibatches(self, batch: TokenBatch) -> list[tuple[torch.Tensor, int]]:
        """Every epoch's minibatches: (this rank's rows of it, the minibatch's global size).

        The global batch is what one process would build: each section of
        rows (episodes, then sibling rows) rank after rank. Every rank draws
        the same permutations of it from the shared shuffle generator and
        keeps the rows it holds.

        The episodes fix the number of optimiser steps: an epoch takes
        ceil(episodes / minibatch_size) of them, and sibling rows ride along,
        spread evenly over those minibatches. Split by row count instead,
        sibling credit (up to 100 extra rows beside 64 episodes on Sokoban)
        took 2.6 times the optimiser steps per rollout, and an arm with it
        differed from its plain arm in how far each step moved the policy
        (mean approx. KL 0.026 against 0.003 under PPO), not only in its
        signal. Without sibling rows the draws are the same as before.
        """
        algo = self.cfg.algo
        local, (episodes, *extra) = self.world.global_rows(sections(batch))
        local, extra = local.to(self.device), sum(extra)
        out = []
        for _ in range(algo.epochs):
            order = torch.randperm(episodes, generator=self.shuffle)
            parts = list(order.split(algo.minibatch_size))
            if extra:
                siblings = torch.randperm(extra, generator=self.shuffle) + episodes
                parts = [torch.cat([part, more]) for part, more in zip(parts, siblings.tensor_split(len(parts)))]
            for minibatch in parts:
                rows = local[minibatch.to(self.device)]
                out.append((rows[rows >= 0], len(minibatch)))
        return out

    def _clip_gradients(self) -> dict[str, float]:
        """Clip the actor's and the critic's gradients each to `max_grad_norm`; their norms."""
        clip = self.cfg.algo.max_grad_norm
        norms = {"grad_norm": float(torch.nn.utils.clip_grad_norm_(self.model.actor_parameters(), clip))}
        critic = self.model.critic_parameters()
        if critic:
            norms["critic_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(critic, clip))
        return norms

    def _loss(self, sub: TokenBatch, shares: dict[str, torch.Tensor]) -> dict:
        """Backpropagate one micro-batch's part of its minibatch loss; returns its stats' parts.

        Each term is the micro-batch's token mean times its share of the
        minibatch's tokens of that term's kind (`TOKEN_MASKS`: loss-weighted
        tokens for the policy loss, model tokens for entropy and KL, episode
        tokens for the value loss), so the parts add up to token means over
        the whole minibatch however its rows fall into micro-batches and
        ranks. The logged statistics are scaled alike (`STAT_TOKENS`): their
        parts add up to the minibatch's token means too.
        """
        algo = self.cfg.algo
        ppo = algo.name == "ppo"
        tok = sub.tokens
        out = self.model.forward(sub, values=ppo, entropy=True, entropy_grad=algo.entropy_coef != 0)
        weights = tis_weights(tok["old_logprobs"], tok["sampler_logprobs"], algo.tis_cap) if algo.tis_cap else None
        policy_loss, stats = ppo_policy_loss(out.logprobs, tok["old_logprobs"], tok["advantages"],
                                             loss_mask(sub), algo.clip_low, algo.clip_high,
                                             clip_ratio_c=algo.clip_ratio_c or None, weights=weights)
        entropy = masked_mean(out.entropy, sub.mask)
        terms = [(policy_loss, "loss"), (-algo.entropy_coef * entropy, "model")]
        stats.update(policy_loss=policy_loss, entropy=entropy)
        if weights is not None:
            stats["tis_weight_mean"] = masked_mean(weights, sub.mask)
        if ppo:
            stats["value_loss"] = value_loss(out.values, tok["old_values"], tok["returns"], episode_mask(sub),
                                             algo.value_clip or None)
            terms.append((VALUE_COEF * stats["value_loss"], "episode"))
        if "ref_logprobs" in tok:
            stats["kl"] = masked_mean(kl_k3(out.logprobs, tok["ref_logprobs"]), sub.mask)
            terms.append((algo.kl_coef * stats["kl"], "model"))
        loss = sum(term * shares[kind] for term, kind in terms)
        loss.backward()
        logs = {key: float(value.detach() * shares[STAT_TOKENS.get(key, "loss")]) for key, value in stats.items()}
        return {**logs, "loss": loss.detach().item()}

    # ------------------------------------------------------------- summary
    def summary(self) -> dict:
        init, last = self.initial_eval or {}, self.last_eval or {}
        return {
            "steps": self.step,
            "initial_val_success_rate": init.get("success_rate"),
            "initial_val_mean_return": init.get("mean_return"),
            "final_val_success_rate": last.get("success_rate"),
            "final_val_mean_return": last.get("mean_return"),
            "final_val_invalid_action_rate": last.get("invalid_action_rate"),
            "initial_val_sampled_success_rate": init.get("sampled", {}).get("success_rate"),
            "final_val_sampled_success_rate": last.get("sampled", {}).get("success_rate"),
            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.totals.items()},
            "world_size": self.world.world_size,
        }


def _with_seed(search: SearchConfig, seed: int, strategy: str | None = None) -> SearchConfig:
    from dataclasses import replace

    return replace(search, seed=seed, strategy=strategy or search.strategy)


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device is {device!r} but this machine has no CUDA device; "
                         "use --set trainer.device=cpu")


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return fmean(finite) if finite else float("nan")


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
    out = {"val_success_rate": summary["success_rate"], "val_mean_return": summary["mean_return"],
           "val_invalid_action_rate": summary["invalid_action_rate"]}
    if "sampled" in summary:
        out.update({"val_sampled_success_rate": summary["sampled"]["success_rate"],
                    "val_sampled_mean_return": summary["sampled"]["mean_return"]})
    return out


@contextmanager
def _timed(record: dict, phase: str):
    start = time.perf_counter()
    yield
    record[f"time_{phase}"] = round(time.perf_counter() - start, 4)

"""The trainable side of a policy: LoRA or full weights, a critic, and the forward pass.

The rollout policy and the trainer share one model object, so every update
is what the next rollout samples from. The PPO critic is either a value head
on the policy's own last hidden state (`critic: head`) or a separate copy of
the base model with its own head (`critic: separate`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tsr_cli.algos import entropy_from_logits, token_logprobs
from tsr_cli.train.batch import TokenBatch
from tsr_cli.train.logprobs import head_logprobs
from tsr_cli.train.config import PolicySection


def build_policy(section: PolicySection, env_name: str, seed: int, device: str = "cpu"):
    """Load the policy named in the config (tiny gets the config's width and depth)."""
    from tsr_cli.policies import load_policy
    from tsr_cli.train import checkpoint  # noqa: F401  registers the loader: a start may be a tsr checkpoint

    kwargs = {"device": device, "dtype": section.dtype}
    if section.name == "tiny":
        kwargs.update(hidden=section.tiny_hidden, layers=section.tiny_layers)
    policy = load_policy(section.name, seed=seed, env_names=[env_name], **kwargs)
    if not hasattr(policy, "model"):
        raise ValueError(f"policy {section.name!r} has no weights to train; use tiny, "
                         "smollm2-135m or a Hugging Face model")
    return policy


def build_sampler(section: PolicySection, policy):
    """What generates rollouts and evaluations: `policy` itself (hf), or a vLLM engine on its weights.

    A vLLM sampler keeps its own copy of the weights, in the policy's dtype
    (LoRA merged or as an adapter: `section.vllm_lora`); the trainer calls its
    `sync_from(model) -> seconds` after every update.
    """
    if section.backend == "hf":
        return policy
    from tsr_cli.policies.vllm import VLLMPolicy

    return VLLMPolicy.from_policy(policy, lora=section.vllm_lora)


@dataclass
class Forward:
    """Per-target outputs of one forward pass, each [N, L]."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    values: torch.Tensor | None


@dataclass(frozen=True)
class ModelOptions:
    """How the trainer runs the model (from the `policy`, `algo` and `trainer` sections).

    temperature:       rollout temperature; every trainer log-prob uses softmax(z / T),
                       the distribution the sampler drew from (verl, TRL do the same)
    value_head_detach: the PPO value head reads detached hidden states, so the
                       value loss never moves the policy's backbone
    logprob_chunk:     positions projected onto the vocabulary at a time, under
                       activation checkpointing; 0 = the full-logits path (the
                       memory baseline of benchmarks/train_memory.py)
    gradient_checkpointing: recompute each decoder layer in backward
    reference_dtype:   dtype of the frozen KL reference copy (full fine-tuning)
    """

    temperature: float = 1.0
    value_head_detach: bool = True
    logprob_chunk: int = 512
    gradient_checkpointing: bool = False
    reference_dtype: str = "bfloat16"

    @classmethod
    def from_config(cls, cfg) -> "ModelOptions":
        return cls(cfg.policy.temperature, cfg.algo.value_head_detach, cfg.trainer.logprob_chunk,
                   cfg.trainer.gradient_checkpointing, cfg.trainer.reference_dtype)


class TrainableModel:
    """The policy's model made trainable, plus the critic if PPO needs one.

    Everything it creates (value head, critic, reference) lives on the
    policy's device.
    """

    def __init__(self, policy, section: PolicySection, critic: str | None, keep_reference: bool = False,
                 options: ModelOptions | None = None):
        self.policy = policy
        self.options = options or ModelOptions()
        self.device = torch.device(getattr(policy, "device", "cpu"))
        base = policy.model
        if hasattr(base, "merge_and_unload"):
            # A start trained with LoRA (a tsr checkpoint) arrives PEFT-wrapped. Its adapters
            # become part of the weights this run starts from, so that this run's own LoRA
            # is not nested in another (whose parameter names no engine knows) and full
            # fine-tuning trains every weight, not the old adapters alone.
            base = base.merge_and_unload().requires_grad_(not section.lora)
            policy.model = base
        self.critic_model = copy.deepcopy(base) if critic == "separate" else None
        # Full fine-tuning needs a frozen copy for the KL reference; LoRA just
        # switches its adapters off.
        self.ref_model = None
        if keep_reference and not section.lora:
            dtype = getattr(torch, self.options.reference_dtype)
            self.ref_model = copy.deepcopy(base).requires_grad_(False).to(dtype)
        self.has_reference = keep_reference
        if section.lora:
            base = _add_lora(base, section)
            policy.model = base
        # Dropout stays off: a LoRA dropout (or any other) in training mode
        # would make rollouts, old log-probs and updates disagree.
        self.model = base.eval()
        if self.options.gradient_checkpointing:
            _enable_checkpointing(self.model)
            if self.critic_model is not None:
                _enable_checkpointing(self.critic_model)
        hidden = _hidden_size(base)
        self.value_head = nn.Linear(hidden, 1, device=self.device) if critic else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.autocast = policy._autocast

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def critic_parameters(self) -> list[nn.Parameter]:
        params = list(self.value_head.parameters()) if self.value_head is not None else []
        if self.critic_model is not None:
            params += list(self.critic_model.parameters())
        return params

    def named_trainable(self) -> dict[str, torch.Tensor]:
        """Every trained tensor by a stable name (what a checkpoint stores)."""
        out = {f"policy.{n}": p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.value_head is not None:
            out.update({f"value_head.{n}": p for n, p in self.value_head.named_parameters()})
        if self.critic_model is not None:
            out.update({f"critic.{n}": p for n, p in self.critic_model.named_parameters()})
        return out

    def forward(self, batch: TokenBatch, values: bool = False, entropy: bool = False,
                entropy_grad: bool = True) -> Forward:
        """Log-probs of the batch's targets under the current weights (and values/entropy).

        Log-probs and entropy are those of softmax(logits / T) with T the
        rollout temperature. Only positions where some row has a model token
        are projected onto the vocabulary: the loss never reads the others.
        """
        keep = batch.mask.any(0).nonzero().squeeze(1)
        targets = batch.input_ids[:, keep + 1]
        if self.options.logprob_chunk > 0:
            hidden = self._hidden(self.model, batch)
            logp, ent = head_logprobs(hidden[:, keep], self._head(self.model), targets,
                                      temperature=self.options.temperature, chunk=self.options.logprob_chunk,
                                      entropy=entropy, entropy_grad=entropy_grad)
        else:
            hidden, logp, ent = self._full_logits(batch, keep, targets, values, entropy)
        vals = self._values(batch, hidden) if values else None
        ent = _scatter(ent, keep, batch.mask) if ent is not None else None
        return Forward(_scatter(logp, keep, batch.mask), ent, vals)

    def _full_logits(self, batch, keep, targets, values, entropy):
        """Today's path before chunking: [N, P, V] float32 logits (the memory baseline)."""
        with self.autocast():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             output_hidden_states=values and self.critic_model is None,
                             use_cache=False, logits_to_keep=keep)
        logits = out.logits.float() / self.options.temperature
        ent = entropy_from_logits(logits) if entropy else None
        hidden = out.hidden_states[-1] if out.hidden_states is not None else None
        return hidden, token_logprobs(logits, targets), ent

    def _hidden(self, model, batch: TokenBatch) -> torch.Tensor:
        """[N, L+1, H] final hidden states of the backbone; the LM head is never run."""
        backbone = base_model(model).get_decoder()
        with self.autocast():
            return backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            use_cache=False).last_hidden_state

    def _head(self, model):
        head = base_model(model).get_output_embeddings()

        def project(h: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return head(h)
        return project

    def _values(self, batch: TokenBatch, hidden: torch.Tensor | None) -> torch.Tensor:
        """[N, L] V(s) at each target position, from the shared backbone or the critic's own."""
        if self.critic_model is not None:
            hidden = self._hidden(self.critic_model, batch)
        elif self.options.value_head_detach:
            hidden = hidden.detach()
        return self.value_head(hidden[:, :-1].float()).squeeze(-1)

    @torch.no_grad()
    def reference_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """[N, L] target log-probs under the initial policy."""
        if self.ref_model is None:
            with self.model.disable_adapter():
                return self.forward(batch).logprobs
        live, self.model = self.model, self.ref_model
        try:
            return self.forward(batch).logprobs
        finally:
            self.model = live


def base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _hidden_size(model) -> int:
    config = model.config
    return config.get_text_config().hidden_size if hasattr(config, "get_text_config") else config.hidden_size


def _enable_checkpointing(model) -> None:
    """Recompute decoder layers in backward while every dropout stays in eval mode.

    transformers only checkpoints a layer whose `training` flag is set; setting
    that flag on the layer objects alone (not their children) turns
    checkpointing on without switching any dropout on.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    base, kwargs = base_model(model), {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x renamed it
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


def _scatter(kept: torch.Tensor, keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N, P] values at target positions `keep` -> [N, L] with zeros elsewhere."""
    full = kept.new_zeros(like.shape)
    full[:, keep] = kept
    return full


def _add_lora(model, section: PolicySection):
    import warnings

    from peft import LoraConfig, get_peft_model

    # peft calls a transformers method that transformers 5 deprecates; not ours to fix
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    config = LoraConfig(r=section.lora_rank, lora_alpha=section.lora_alpha,
                        lora_dropout=section.lora_dropout, target_modules=list(section.lora_targets),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)

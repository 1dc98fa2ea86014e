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
from tsr_cli.train.config import PolicySection


def build_policy(section: PolicySection, env_name: str, seed: int, device: str = "cpu"):
    """Load the policy named in the config (tiny gets the config's width and depth)."""
    from tsr_cli.policies import load_policy

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

    A vLLM sampler keeps its own copy of the weights, in the policy's dtype;
    the trainer calls its `sync_from(model) -> seconds` after every update.
    """
    if section.backend == "hf":
        return policy
    from tsr_cli.policies.vllm import VLLMPolicy

    return VLLMPolicy.from_policy(policy)


@dataclass
class Forward:
    """Per-target outputs of one forward pass, each [N, L]."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    values: torch.Tensor | None


class TrainableModel:
    """The policy's model made trainable, plus the critic if PPO needs one."""

    def __init__(self, policy, section: PolicySection, critic: str | None, keep_reference: bool = False):
        self.policy = policy
        base = policy.model
        self.critic_model = copy.deepcopy(base) if critic == "separate" else None
        # Full fine-tuning needs a frozen copy for the KL reference; LoRA just
        # switches its adapters off.
        self.ref_model = None
        if keep_reference and not section.lora:
            self.ref_model = copy.deepcopy(base).requires_grad_(False)
        self.has_reference = keep_reference
        if section.lora:
            base = _add_lora(base, section)
            policy.model = base
        self.model = base
        hidden = base.config.get_text_config().hidden_size if hasattr(base.config, "get_text_config") \
            else base.config.hidden_size
        self.value_head = nn.Linear(hidden, 1) if critic else None
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

    def forward(self, batch: TokenBatch, values: bool = False, entropy: bool = False) -> Forward:
        """Log-probs of the batch's targets under the current weights (and values/entropy)."""
        want_hidden = values and self.critic_model is None
        # Project onto the vocabulary only where some row has a model token: the
        # loss never reads the other positions, and with a 49k vocabulary their
        # logits would dominate time and memory.
        keep = batch.mask.any(0).nonzero().squeeze(1)
        with self.autocast():
            out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             output_hidden_states=want_hidden, use_cache=False, logits_to_keep=keep)
        logits = out.logits.float()
        logp = _scatter(token_logprobs(logits, batch.input_ids[:, keep + 1]), keep, batch.mask)
        ent = _scatter(entropy_from_logits(logits), keep, batch.mask) if entropy else None
        vals = self._values(batch, out) if values else None
        return Forward(logp, ent, vals)

    def _values(self, batch: TokenBatch, out) -> torch.Tensor:
        if self.critic_model is not None:
            with self.autocast():
                out = self.critic_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1][:, :-1].float()
        return self.value_head(hidden).squeeze(-1)

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

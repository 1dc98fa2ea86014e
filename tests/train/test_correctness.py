"""The trainer's maths and numerics (issue 10, points 1-8): each test fails on the pre-fix trainer.

- log-probs use the rollout temperature, so the sampler and the trainer agree
  (`logprob_diff_*` below 1e-3 in float32, GRPO and PPO, LoRA and full);
- LoRA dropout never makes the first minibatch's ratio differ from 1;
- PPO whitens its GAE advantages; actor and critic are clipped separately;
  the value head can read detached hidden states;
- a non-finite gradient skips the optimiser step and is counted;
- the chunked (lean) forward equals the full-logits one, gradients included.
"""

from dataclasses import replace

import pytest
import torch

from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.algos import masked_mean
from tsr_cli.policies.base import Completion
from tsr_cli.train.batch import build_batch
from tsr_cli.train.config import build_config
from tsr_cli.train.model import ModelOptions, TrainableModel, build_policy
from tsr_cli.train.trainer import Trainer


def tiny_config(algo_name="grpo", lora=False, **sections):
    raw = {
        "env": {"name": "frozenlake", "max_turns": 4, "actions_per_turn": 1},
        "policy": {"name": "tiny", "lora": lora, "lora_dropout": 0.5 if lora else 0.0, "lora_rank": 4,
                   "temperature": 0.7, "max_new_tokens": 3, "tiny_hidden": 32},
        "algo": {"name": algo_name, "lr": 1e-3, "minibatch_size": 8, "grad_accum": 2, "epochs": 1},
        "trainer": {"steps": 1, "groups": 2, "group_size": 4, "eval_episodes": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return build_config(raw)


def turn(prompt, response, reward=0.0):
    return Turn(tuple(prompt), Completion(list(response), [0.0] * len(response), ""), (), (), (), (),
                reward, True)


def sample_batch(trainer):
    trajs = [Trajectory("x", 0, 0, [turn([5, 6, 7], [8, 9], 1.0), turn([10], [11, 12, 13], 10.0)]),
             Trajectory("x", 1, 0, [turn([5, 6], [20], -1.0)]),
             Trajectory("x", 2, 1, [turn([5, 7, 9], [21, 22], 0.0)]),
             Trajectory("x", 3, 1, [turn([5], [30, 31, 32, 33], 3.0)])]
    return build_batch(trajs, trainer.policy.codec.pad_token_id, trainer.device)


# ------------------------------------------------------------ temperature and agreement

@pytest.mark.parametrize("algo,lora", [("grpo", False), ("grpo", True), ("ppo", False), ("ppo", True)])
def test_sampler_and_trainer_logprobs_agree_at_temperature_07(algo, lora):
    """Points 2, 3 and 8: at T = 0.7 in float32 the trainer's old log-probs equal the
    sampler's to 1e-3, and with LoRA dropout 0.5 the first minibatch's ratio is exactly 1."""
    trainer = Trainer(tiny_config(algo, lora))
    record = trainer.train_step()
    assert record["logprob_diff_max"] < 1e-3, record["logprob_diff_max"]
    assert record["logprob_diff_mean"] < 1e-4
    # one minibatch holding the whole batch: the update's ratio is the first one
    assert record["approx_kl"] == 0.0 and record["clip_fraction"] == 0.0


def test_forward_divides_logits_by_the_rollout_temperature():
    section = tiny_config().policy
    policy = build_policy(section, "frozenlake", seed=0)
    model = TrainableModel(policy, section, None, options=ModelOptions(temperature=0.7))
    batch = sample_batch(model)
    with torch.no_grad():
        out = model.forward(batch, entropy=True)
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    scaled = (logits / 0.7).log_softmax(-1)
    expected = scaled.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    mask = batch.mask
    torch.testing.assert_close(out.logprobs * mask, expected * mask, atol=1e-5, rtol=0)
    entropy = -(scaled.exp() * scaled).sum(-1)
    torch.testing.assert_close(out.entropy * mask, entropy * mask, atol=1e-5, rtol=0)


# ------------------------------------------------------------ lean forward == baseline

@pytest.mark.parametrize("lora", [False, True])
def test_chunked_forward_equals_full_logits_with_gradients(lora):
    """The memory-lean path (chunked head under checkpointing, gradient
    checkpointing) gives the baseline's log-probs, entropy, values and gradients."""
    section = tiny_config(lora=lora).policy
    grads = []
    for options in (ModelOptions(temperature=0.7, logprob_chunk=0),
                    ModelOptions(temperature=0.7, logprob_chunk=5, gradient_checkpointing=True)):
        torch.manual_seed(0)  # the same LoRA initialisation for both
        policy = build_policy(section, "frozenlake", seed=0)
        model = TrainableModel(policy, section, "head", options=options)
        batch = sample_batch(model)
        out = model.forward(batch, values=True, entropy=True)
        loss = masked_mean(out.logprobs + 0.1 * out.entropy + 0.01 * out.values, batch.mask)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.actor_parameters()]))
    (base_loss, base_grads), (lean_loss, lean_grads) = grads
    torch.testing.assert_close(lean_loss, base_loss, atol=1e-5, rtol=0)
    for a, b in zip(base_grads, lean_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_keeps_dropout_off():
    section = tiny_config(lora=True).policy
    policy = build_policy(section, "frozenlake", seed=0)
    model = TrainableModel(policy, section, None, options=ModelOptions(gradient_checkpointing=True))
    dropouts = [m for m in model.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and not any(m.training for m in dropouts)


# ------------------------------------------------------------ PPO: whitening, clipping, detach

def test_ppo_whitens_gae_advantages_by_default():
    trainer = Trainer(tiny_config("ppo"))
    assert trainer.cfg.algo.whiten_advantages is True
    batch = sample_batch(trainer)
    batch.tokens["old_values"] = torch.zeros_like(batch.mask)
    trainer.add_advantages(batch)
    adv, mask = batch.tokens["advantages"], batch.mask
    assert masked_mean(adv, mask).abs() < 1e-6
    assert masked_mean(adv**2, mask).sqrt() == pytest.approx(1.0, abs=0.1)
    # the critic's targets stay raw GAE returns (10 + 1 on the first row's first turn)
    assert batch.tokens["returns"][0].max() == pytest.approx(11.0)
    raw = Trainer(tiny_config("ppo", algo={"whiten_advantages": False}))
    batch = sample_batch(raw)
    batch.tokens["old_values"] = torch.zeros_like(batch.mask)
    raw.add_advantages(batch)
    assert batch.tokens["advantages"].max() == pytest.approx(11.0)
    assert Trainer(tiny_config("grpo")).cfg.algo.whiten_advantages is False


def test_actor_and_critic_are_clipped_separately():
    trainer = Trainer(tiny_config("ppo", algo={"max_grad_norm": 1.0}))
    actor, critic = trainer.model.actor_parameters(), trainer.model.critic_parameters()
    for p in actor:
        p.grad = torch.full_like(p, 1e-4)
    for p in critic:
        p.grad = torch.full_like(p, 100.0)  # a value loss near 100
    before = [p.grad.clone() for p in actor]
    norms = trainer._clip_gradients()
    assert norms["critic_grad_norm"] > 1.0 > norms["grad_norm"]
    for p, g in zip(actor, before):
        assert torch.equal(p.grad, g)  # the actor's step is its own
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in critic])) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("detach", [True, False])
def test_value_head_detach_keeps_the_value_loss_off_the_backbone(detach):
    trainer = Trainer(tiny_config("ppo", algo={"value_head_detach": detach}))
    torch.nn.init.normal_(trainer.model.value_head.weight)  # zero-initialised heads pass no gradient back
    batch = sample_batch(trainer)
    out = trainer.model.forward(batch, values=True)
    (out.values * batch.mask).sum().backward()
    touched = [p for p in trainer.model.actor_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert bool(touched) is (not detach)
    assert trainer.model.value_head.weight.grad.abs().sum() > 0


# ------------------------------------------------------------ non-finite guard

def test_non_finite_gradient_skips_the_step_and_training_continues():
    trainer = Trainer(tiny_config("grpo", algo={"minibatch_size": 2, "grad_accum": 1}))
    batch = sample_batch(trainer)
    trainer.score_batch(batch)
    trainer.add_advantages(batch)
    batch.tokens["advantages"][1] = float("nan") * batch.mask[1]
    before = {k: v.detach().clone() for k, v in trainer.model.named_trainable().items()}
    record = trainer.update(batch)
    assert record["skipped_steps"] == 1  # one of the two minibatches holds the NaN row
    after = trainer.model.named_trainable()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the other minibatch stepped
    record = trainer.train_step()
    assert record["skipped_steps"] == 0 and torch.isfinite(torch.tensor(record["loss"]))


# ------------------------------------------------------------ device placement

def test_everything_the_trainer_creates_lives_on_the_policy_device():
    trainer = Trainer(tiny_config("ppo", algo={"critic": "separate", "kl_coef": 0.1}))
    device = trainer.policy.device
    batch = sample_batch(trainer)
    assert batch.input_ids.device == device and batch.mask.device == device
    for module in (trainer.model.value_head, trainer.model.critic_model, trainer.model.ref_model):
        assert {p.device for p in module.parameters()} == {device}
    assert trainer.policy.generator.device == device


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(replace(tiny_config(), trainer=replace(tiny_config().trainer, device="cuda")))

"""algo.lr_schedule: the cosine decay's maths, its checks, and the trainer applying it per step."""

import math

import pytest

from tsr_cli.algos.schedule import lr_scale
from tsr_cli.train.config import ConfigError, load_config
from tsr_cli.train.trainer import Trainer
from tests.train.test_correctness import tiny_config


def test_cosine_runs_from_the_full_rate_to_the_floor():
    scales = [lr_scale("cosine", step, 5, 0.1) for step in range(1, 6)]
    assert scales[0] == 1.0 and scales[-1] == pytest.approx(0.1)
    assert scales[2] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: halfway between the two
    assert all(a > b for a, b in zip(scales, scales[1:]))
    assert lr_scale("cosine", 2, 3) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_constant_and_one_step_runs_keep_the_rate():
    assert {lr_scale("constant", step, 10, 0.1) for step in range(1, 11)} == {1.0}
    assert lr_scale("cosine", 1, 1, 0.1) == 1.0


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(None, {"algo.lr_schedule": "linear"})
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        load_config(None, {"algo.min_lr_ratio": 1.5})
    assert load_config(None, {}).algo.lr_schedule == "constant"


def test_the_trainer_sets_each_steps_rate_for_actor_and_critic():
    trainer = Trainer(tiny_config("ppo", algo={"lr_schedule": "cosine", "min_lr_ratio": 0.2, "critic_lr": 1e-4},
                                  trainer={"steps": 3}))
    logged = [trainer.train_step()["lr"] for _ in range(3)]
    assert logged == pytest.approx([1e-3, 0.6e-3, 0.2e-3])
    actor, critic = trainer.optimizer.param_groups
    assert (actor["lr"], critic["lr"]) == pytest.approx((0.2e-3, 0.2e-4))


def test_a_constant_rate_logs_nothing_new():
    trainer = Trainer(tiny_config("grpo"))
    assert "lr" not in trainer.train_step()
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3


def test_warmup_ramps_up_then_the_schedule_runs_over_the_remaining_steps():
    assert [lr_scale("constant", step, 10, warmup=4) for step in (1, 2, 4, 5, 10)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    cosine = [lr_scale("cosine", step, 10, 0.0, warmup=4) for step in range(1, 11)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0]
    assert cosine[4] == 1.0 and cosine[-1] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_config(None, {"algo.warmup_steps": -1})

"""Training with rollouts from vLLM: the engine follows the trainer's weights, end to end.

Marked `vllm` (`make test-vllm`, `.venv-vllm`). SmolLM2-135M, sized for 2 CPU cores.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsr_cli.policies.base import SamplingParams
from tsr_cli.train.config import load_config
from tsr_cli.train.trainer import Trainer

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
#: one instance, two rollouts of two FrozenLake turns: a SmolLM2 step in well under a minute
SMALL = {"env.name": "frozenlake", "env.max_turns": 2, "policy.name": "smollm2-135m",
         "policy.max_new_tokens": 6, "trainer.groups": 1, "trainer.group_size": 2,
         "trainer.eval_episodes": 2, "algo.minibatch_size": 2, "algo.grad_accum": 1}
PROBES = [
    "Actions: left, down, right, up. Reply with <answer>action</answer>.",
    "Turn 1: State: P_O_\n__G_\nReply with only your actions, for example: <answer>down</answer>",
    "What is 2 + 3? Answer inside <answer></answer>.",
    "Name a colour. Answer inside <answer></answer>.",
]


def greedy(policy, codec):
    ids = [codec.encode(codec.render([{"role": "user", "content": p}], True)) for p in PROBES]
    return [g[0].token_ids for g in policy.generate(ids, 1, SamplingParams(temperature=0, max_new_tokens=10))]


@pytest.mark.parametrize("lora, vllm_lora", [(True, "merge"), (True, "native"), (False, "merge")],
                         ids=["lora-merged", "lora-native", "full"])
def test_synced_engine_generates_like_the_trained_policy(lora, vllm_lora):
    """After an update the engine serves exactly the trainer's new weights (float32 both sides)."""
    # a large step, so that the update visibly moves greedy decoding
    lr = 2e-2 if lora else 1e-3
    trainer = Trainer(load_config(overrides={**SMALL, "policy.backend": "vllm", "policy.lora": lora,
                                             "policy.vllm_lora": vllm_lora, "algo.lr": lr}))
    assert (trainer.sampler.lora is not None) == (vllm_lora == "native")
    codec = trainer.policy.codec
    before = greedy(trainer.sampler, codec)
    record = trainer.train_step()
    assert record["sync_seconds"] > 0
    after_engine = greedy(trainer.sampler, codec)
    after_hf = greedy(trainer.policy, codec)
    assert after_engine == after_hf
    assert after_engine != before  # the sync carried a real change
    trainer.sampler.close()


def tsr(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tsr_cli.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A two-step LoRA run trained with vLLM rollouts, checkpointed at every step."""
    run_dir = tmp_path_factory.mktemp("vllm") / "run"
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    done = tsr("train", "--backend", "vllm", "--steps", "2", "--save-every", "1", "--eval-every", "1",
               "--run-dir", str(run_dir), *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_train_cli_two_steps_checkpoints_and_evaluates(lora_run):
    run_dir = lora_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        assert record["sync_seconds"] > 0 and record["tokens_generated"] > 0
        assert "val_success_rate" in record
    assert (run_dir / "checkpoints/step_2/tsr_checkpoint.json").is_file()
    # the LoRA checkpoint, merged, served by vLLM
    done = tsr("eval", "--backend", "vllm", "--policy", str(run_dir / "checkpoints/step_2"),
               "--episodes", "2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["env"] == "frozenlake" and result["tokens_generated"] > 0


def test_lora_training_from_a_lora_checkpoint_syncs(lora_run):
    """A LoRA start (as `tsr sft` writes one) under this run's LoRA: the engine follows the update.

    The start's adapters are merged into the weights this run begins from; nested
    PEFT names were once sent to vLLM, which knows no `base_model` module.
    """
    start = lora_run / "checkpoints/step_2"
    trainer = Trainer(load_config(overrides={**SMALL, "policy.name": str(start), "policy.backend": "vllm",
                                             "policy.lora": True, "algo.lr": 2e-2}))
    codec = trainer.policy.codec
    assert greedy(trainer.sampler, codec) == greedy(trainer.policy, codec)  # serves the start
    trainer.train_step()
    assert greedy(trainer.sampler, codec) == greedy(trainer.policy, codec)  # and the update
    trainer.sampler.close()


@pytest.mark.parametrize("policy, message", [
    ("random", "has no model weights for vLLM to serve"),
    # tiny's 16-wide attention heads are not among the sizes vLLM's kernels take
    ("tiny", "vLLM cannot serve"),
])
def test_a_policy_vllm_cannot_serve_is_one_line(policy, message):
    done = tsr("eval", "--env", "frozenlake", "--backend", "vllm", "--policy", policy, "--episodes", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("tsr: error: ") and message in lines[-1]
    assert not any("Traceback" in line for line in lines)

"""The training forward: log-probs computed only where the loss reads them equal the full computation."""

import torch

from tsr_cli.agent.trajectory import Trajectory, Turn
from tsr_cli.algos import entropy_from_logits, token_logprobs
from tsr_cli.policies.base import Completion
from tsr_cli.train.batch import build_batch
from tsr_cli.train.config import PolicySection
from tsr_cli.train.model import TrainableModel, build_policy


def turn(prompt, response):
    return Turn(tuple(prompt), Completion(list(response), [0.0] * len(response), ""), (), (), (), (), 0.0, True)


def test_sliced_logprobs_match_full_logits():
    policy = build_policy(PolicySection(name="tiny", lora=False), "frozenlake", seed=0)
    model = TrainableModel(policy, PolicySection(name="tiny", lora=False), critic="head")
    trajs = [Trajectory("x", 0, 0, [turn([5, 6, 7], [8, 9]), turn([10], [11, 12, 13])]),
             Trajectory("x", 1, 1, [turn([5, 6], [20])])]
    batch = build_batch(trajs, policy.codec.pad_token_id)
    out = model.forward(batch, values=True, entropy=True)
    with torch.no_grad():
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    mask = batch.mask
    assert torch.allclose(out.logprobs * mask, token_logprobs(logits, batch.input_ids[:, 1:]) * mask, atol=1e-6)
    assert torch.allclose(out.entropy * mask, entropy_from_logits(logits) * mask, atol=1e-5)
    assert out.values.shape == mask.shape
    # positions without any model token are never projected and stay 0
    assert torch.all(out.logprobs[:, ~mask.bool().any(0)] == 0)


def _lora_start():
    """A policy as a LoRA tsr checkpoint hands it over: PEFT-wrapped, adapters moved off zero."""
    section = PolicySection(name="tiny", lora=True)
    policy = build_policy(section, "frozenlake", seed=0)
    TrainableModel(policy, section, critic=None)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return policy


def _greedy_logits(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_a_lora_start_is_merged_not_nested():
    """RL's own LoRA wraps the start's merged weights: one PEFT level, the names an engine knows."""
    for lora in (True, False):
        policy = _lora_start()
        before = _greedy_logits(policy.model)
        model = TrainableModel(policy, PolicySection(name="tiny", lora=lora), critic=None)
        names = [name for name, _ in model.model.named_parameters()]
        assert not any(name.count("base_model") > 1 for name in names)
        trained = [name for name, p in model.model.named_parameters() if p.requires_grad]
        if lora:  # only this run's fresh adapters train
            assert trained and all("lora_" in name for name in trained)
        else:  # full fine-tuning trains every weight, and no adapter is left
            assert not any("lora_" in name for name in names)
            assert len(trained) == len(names)
        # the start's behaviour survives the merge (fresh adapters start at zero)
        assert torch.allclose(_greedy_logits(model.model), before, atol=1e-5)


def test_build_policy_reads_a_tsr_checkpoint_without_the_cli(tmp_path):
    """The library path (no CLI, no run module imported) hands a tsr checkpoint to its loader."""
    import subprocess
    import sys

    (tmp_path / "tsr_checkpoint.json").write_text("{}")
    code = ("from tsr_cli.train.config import PolicySection\n"
            "from tsr_cli.train.model import build_policy\n"
            f"build_policy(PolicySection(name={str(tmp_path)!r}), 'frozenlake', 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # the checkpoint loader itself read the directory (and found no weights in it)
    assert "CheckpointError" in done.stderr and "weights.safetensors is missing" in done.stderr

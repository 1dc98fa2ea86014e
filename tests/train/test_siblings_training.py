"""Sibling credit through the trainer: extra rows keep their advantages, costs are logged."""

from pathlib import Path

import pytest
import torch

from tsr_cli.cli import main
from tsr_cli.train.config import load_config
from tsr_cli.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"trainer.groups": 4, "trainer.group_size": 2, "trainer.eval_episodes": 2, "trainer.steps": 1,
         "env.max_turns": 3, "search.candidates": 3, "algo.minibatch_size": 64}


def one_step(algo, learn_from, monkeypatch):
    cfg = load_config(ROOT / f"experiments/tiny/frozenlake_{algo}_beam.yaml",
                      {**SMALL, "search.learn_from": learn_from, "search.sibling_weight": 0.5})
    trainer = Trainer(cfg)
    seen = []
    update = trainer.update
    monkeypatch.setattr(trainer, "update", lambda batch: seen.append(batch) or update(batch))
    return trainer.train_step(), seen[0]


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_sibling_rows_keep_their_advantages_through_the_trainer(algo, monkeypatch):
    record, batch = one_step(algo, "siblings", monkeypatch)
    sibling = batch.tokens["sibling_mask"] != 0
    assert record["sibling_rows"] > 0 and record["sibling_tokens"] > 0
    assert int(sibling.any(1).sum()) == record["sibling_rows"]
    assert int(batch.attention_mask[sibling.any(1)].sum()) == record["sibling_tokens"]
    assert torch.equal(batch.tokens["advantages"][sibling], batch.tokens["sibling_advantages"][sibling])
    assert batch.tokens["advantages"][sibling].abs().sum() > 0
    assert torch.equal(batch.tokens["weight"][sibling], torch.full_like(batch.tokens["weight"][sibling], 0.5))
    assert all(torch.isfinite(torch.tensor(v)) for k, v in record.items() if isinstance(v, float))


def test_learn_from_chosen_adds_nothing_to_the_batch(monkeypatch):
    record, batch = one_step("grpo", "chosen", monkeypatch)
    assert record["sibling_rows"] == 0 and record["sibling_tokens"] == 0
    assert not {"weight", "sibling_mask", "sibling_advantages"} & set(batch.tokens)


def test_siblings_without_search_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--config", str(ROOT / "experiments/tiny/frozenlake_grpo_none.yaml"),
                 "--set", "search.learn_from=siblings", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tsr: error:") and "learn_from" in err[0]


def test_sibling_rows_ride_along_without_adding_optimiser_steps(monkeypatch):
    """Episodes fix the minibatch count; every sibling row lands in exactly one
    minibatch per epoch, spread evenly; without siblings the split is by size."""
    cfg = load_config(ROOT / "experiments/tiny/frozenlake_ppo_beam.yaml",
                      {**SMALL, "search.learn_from": "siblings", "algo.minibatch_size": 3, "algo.grad_accum": 1,
                              "algo.epochs": 2})
    trainer = Trainer(cfg)
    seen = []
    minibatches = trainer._minibatches
    monkeypatch.setattr(trainer, "_minibatches", lambda batch: seen.append((batch, minibatches(batch))) or seen[-1][1])
    record = trainer.train_step()
    batch, parts = seen[0]
    episodes = int((batch.groups >= 0).sum())
    assert record["sibling_rows"] > 0 and len(batch) == episodes + record["sibling_rows"]
    per_epoch = -(-episodes // 3)
    assert len(parts) == 2 * per_epoch
    for epoch in (parts[:per_epoch], parts[per_epoch:]):
        rows = torch.cat([r for r, _ in epoch])
        assert sorted(rows.tolist()) == list(range(len(batch)))
        assert all(int((r < episodes).sum()) <= 3 for r, _ in epoch)
        extra = [int((r >= episodes).sum()) for r, _ in epoch]
        assert max(extra) - min(extra) <= 1
        assert all(size == len(r) for r, size in epoch)

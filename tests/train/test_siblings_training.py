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

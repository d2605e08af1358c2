# One-command set-up: every target below creates .venv (once) with exactly the locked environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/requirements.lock.txt
LLAVA_LOCK := requirements/llava.txt
# worker processes per toy sweep in `make demo` / `make regress` (the 2-core machines this targets)
PROCESSES := 2

.PHONY: setup test smoke demo regress lock test-latest clean-venv

setup: $(STAMP)

# The venv is rebuilt from scratch whenever the lock changes, so it never holds anything the lock does not.
# The project itself is installed without build isolation and without dependencies: everything it needs,
# its build backend included, comes from the lock (hashes required), nothing from a fresh resolution.
$(STAMP): $(LOCK) $(LLAVA_LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	# The original LLaVA codebase pins torch 2.0 / transformers 4.36; its code works with the locked
	# versions, so it is installed on its own, without its obsolete pins (and after `pip check`).
	$(BIN)/pip install --require-hashes --no-deps -r $(LLAVA_LOCK)
	touch $(STAMP)

## Tests (CPU, offline).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## A one-minute first run: the toy LLaVA-1.5 unpruned and with SCOPE at 64 tokens on 8 questions, through
## lmms-eval, offline on CPU, then the report (its score table is printed; files under runs/smoke/report).
smoke: $(STAMP)
	$(BIN)/scope-eval sweep configs/smoke_toy.yaml --output runs/smoke
	$(BIN)/scope-eval report runs/smoke --output runs/smoke/report

## The main job on the embedded default: every method x budget on the toy LLaVA-1.5, LLaVA-NeXT and Qwen2-VL
## (pre-LLM methods on all three, the in-LLM FastV / PDrop / DART / SparseVLM on LLaVA-1.5 and FastV / PDrop / DART
## on Qwen2-VL in the same sweeps), through lmms-eval, offline; writes tables with intervals, significance and
## agreement, and the accuracy-vs-cost plots under results/toy/.
## The toy configs say `parallel: cells`: PROCESSES one-process workers (one model load per sweep each)
## share each sweep's cells, whole cells each, with the same answers as one process
## (tests/test_sweep_worker.py); one command for the three sweeps starts those workers once. On one core:
## make demo PROCESSES=1.
demo: $(STAMP)
	$(BIN)/scope-eval sweep configs/toy_llava15.yaml configs/toy_llava_next.yaml configs/toy_qwen2_vl.yaml --output runs/toy --num-processes $(PROCESSES)
	$(BIN)/scope-eval report runs/toy --output results/toy

## Accuracy regression check against the stored baseline (both backends).
regress: $(STAMP)
	$(BIN)/scope-eval toy-export --output runs/toy_original
	$(BIN)/scope-eval regress configs/regression/toy.yaml --num-processes $(PROCESSES)

## Re-resolve requirements/requirements.lock.txt and requirements/llava.txt (run `make test-latest` first).
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

## Drift check, not part of CI: a throwaway environment from pyproject.toml's ranges at their newest
## releases, then the fast tests. Run it before refreshing the lock.
test-latest:
	bash scripts/test_latest.sh

clean-venv:
	rm -rf $(VENV)

# One-command set-up: every target below creates .venv (once) with everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo regress clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	# The original LLaVA codebase pins torch 2.0 / transformers 4.36; it works with transformers 5.x,
	# so it is installed on its own, without its obsolete pins.
	$(BIN)/pip install --no-deps "llava-torch==1.2.2.post1"
	touch $(STAMP)

## Tests (CPU, offline).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The main job on the embedded default: every method x budget on the toy LLaVA-1.5 and LLaVA-NeXT,
## through lmms-eval, offline; writes tables and plots under results/toy/.
demo: $(STAMP)
	$(BIN)/scope-eval sweep configs/toy_llava15.yaml --output runs/toy
	$(BIN)/scope-eval sweep configs/toy_llava_next.yaml --output runs/toy
	$(BIN)/scope-eval report runs/toy --output results/toy

## Accuracy regression check against the stored baseline (both backends).
regress: $(STAMP)
	$(BIN)/scope-eval toy-export runs/toy_original
	$(BIN)/scope-eval regress configs/regression/toy.yaml

clean-venv:
	rm -rf $(VENV)

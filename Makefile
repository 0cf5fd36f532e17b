# Two commands do all the set-up: `make main` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV := .venv
# Pinned: an open-ended torch requirement would pull the multi-GB CUDA build on CPU machines.
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: main test bench
# The graph-reachability frontier: train the quick recipe (resumes or skips a finished run in
# runs/graph-quick), then print the accuracy grid and save runs/graph-quick/frontier.png.
main: $(VENV)/.installed
	$(VENV)/bin/loopformer train --task graph --preset quick --out runs/graph-quick --resume
	$(VENV)/bin/loopformer frontier runs/graph-quick

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks

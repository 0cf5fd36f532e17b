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

.PHONY: main test
main: $(VENV)/.installed
	$(VENV)/bin/loopformer demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

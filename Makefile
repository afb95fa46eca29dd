# Two entry points for a fresh machine with only Python 3.10+:
#   make demo  -> create .venv, install, run the default pipeline
#   make test  -> create .venv, install, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch first, pinned: the CPU build on this disk; a looser spec would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sa-engine run

test: install
	$(BIN)/python -m pytest tests -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two commands: `make run` (serve on the embedded default) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export KEYHOLD_HOME ?= ./var
export KEYHOLD_PORT ?= 8000

.PHONY: run test lint typecheck pytest venv clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	scripts/build-deps.sh $(PYTHON)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/keyhold serve --home "$(KEYHOLD_HOME)" --port "$(KEYHOLD_PORT)"

lint: venv
	$(BIN)/ruff check src tests

typecheck: venv
	$(BIN)/mypy --strict src

pytest: venv
	scripts/run-tests.sh

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Two commands: `make run` (serve on the embedded default) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export KEYHOLD_HOME ?= ./var
export KEYHOLD_PORT ?= 8000

# The web app (web/, Vite + TypeScript + Preact) is built into web/dist, which the server
# serves at `/`. It is rebuilt when anything it is built from is newer than the stamp; the
# directories are listed too, so that a deleted or renamed source file also counts.
WEB_STAMP := web/dist/.built
WEB_LOCK_STAMP := web/node_modules/.package-lock.json
WEB_INPUTS := $(shell find web/src web/public -print 2>/dev/null) \
	web/index.html web/package.json web/package-lock.json web/vite.config.ts web/tsconfig.json

.PHONY: run test lint typecheck web-typecheck pytest venv web browser-deps screenshots clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	scripts/build-deps.sh $(PYTHON)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

# npm writes node_modules/.package-lock.json on every install: `npm ci` runs again only when
# node_modules is missing or the committed lock file changed since.
$(WEB_LOCK_STAMP): web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

$(WEB_STAMP): $(WEB_LOCK_STAMP) $(WEB_INPUTS)
	cd web && npm run build
	@touch $@

# Without npm (a Python-only install) `make run` still serves the API, and `/` says how to
# build the app; `make test` needs npm and fails in web-typecheck.
web:
	@if command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory $(WEB_STAMP); \
	else \
		echo "npm not found: the web app is not built (the server serves the API only)" >&2; \
	fi

web-typecheck: $(WEB_LOCK_STAMP)
	cd web && npm run typecheck

# The browser tests drive Debian's Chromium; installed with apt-get when it is missing.
browser-deps:
	scripts/browser-deps.sh

run: venv web
	$(BIN)/keyhold serve --home "$(KEYHOLD_HOME)" --port "$(KEYHOLD_PORT)"

lint: venv
	$(BIN)/ruff check src tests

typecheck: venv
	$(BIN)/mypy --strict src

pytest: venv web browser-deps
	scripts/run-tests.sh

test: lint typecheck web-typecheck pytest

# The browser tests again, writing their screenshots to docs/screenshots/ (a test run writes them
# to build/screenshots/, so that it leaves the tree clean).
screenshots: venv web browser-deps
	KEYHOLD_SCREENSHOTS=docs scripts/run-tests.sh tests/browser

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

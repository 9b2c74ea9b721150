# `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo test lint format pytest vsix bench fuzz clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock src/slsa_provenance/_sha256x16.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)  ## the whole flow offline: key, provenance, verification, a tampered artifact refused
	PATH="$(CURDIR)/$(BIN):$$PATH" bash demo/demo.sh

test: lint vsix pytest  ## lint, type-check, build the .vsix and run the tests

lint: $(STAMP)  ## ruff format --check, ruff check, mypy --strict
	$(BIN)/ruff format --check src tests packaging task bench
	$(BIN)/ruff check src tests packaging task bench
	$(BIN)/mypy src/slsa_provenance

pytest: $(STAMP)  ## the test suite with coverage
	$(BIN)/pytest --cov --cov-report=term:skip-covered

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

vsix: $(STAMP) node_modules/.installed  ## build dist/*.vsix (wheels for every agent platform, SBOM, signed provenance)
	$(BIN)/python packaging/build.py

bench: $(STAMP) vsix  ## hashing, memory, start-up and verify against openssl and sha256sum; fails on a missed target
	$(BIN)/python bench/bench.py

fuzz: $(STAMP)  ## long property-based fuzzing of every parser (not in CI)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/test_fuzz.py -p no:cacheprovider

format: $(STAMP)  ## rewrite the code in the house format
	$(BIN)/ruff format src tests packaging task bench
	$(BIN)/ruff check --fix src tests packaging task bench

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build dist node_modules src/*.egg-info

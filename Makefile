# `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help demo demo-image test lint format pytest vsix bench fuzz sanitize clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock src/slsa_provenance/provenance/_sha256x16.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)  ## the whole flow offline: key, provenance, verification, a tampered artifact refused
	PATH="$(CURDIR)/$(BIN):$$PATH" bash demo/demo.sh

demo-image: $(STAMP)  ## container images offline: a local registry, provenance attached to an image, verified by reference
	PATH="$(CURDIR)/$(BIN):$$PATH" bash demo/image.sh

test: lint vsix pytest  ## lint, type-check, build the .vsix and run the tests

lint: $(STAMP)  ## ruff format --check, ruff check, mypy --strict
	$(BIN)/ruff format --check src tests packaging task bench
	$(BIN)/ruff check src tests packaging task bench
	$(BIN)/mypy src/slsa_provenance task/launch.py packaging/build.py packaging/payload.py packaging/spdx.py

pytest: $(STAMP)  ## the test suite with coverage
	$(BIN)/pytest --cov --cov-report=term:skip-covered

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The SBOM's creation time: the last commit's, so the same commit builds the same SBOM (an exported
# SOURCE_DATE_EPOCH wins; outside git, packaging/spdx.py takes the time of the build).
vsix: $(STAMP) node_modules/.installed  ## build dist/*.vsix (one xz payload per platform, SBOM, provenance, the Provenance tab); RELEASE=1 signs with the Key Vault key SLSA_SIGNER names
	SOURCE_DATE_EPOCH="$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null)}" \
	  $(BIN)/python packaging/build.py $(if $(RELEASE),--release)

bench: $(STAMP) vsix  ## hashing, memory, start-up and verify against openssl and sha256sum; fails on a missed target
	$(BIN)/python bench/bench.py

fuzz: $(STAMP)  ## long property-based fuzzing of every parser (not in CI)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/test_fuzz.py -p no:cacheprovider

SANITIZED := build/sanitize
UNDER_SANITIZERS := PYTHONPATH=$(SANITIZED) LD_PRELOAD="$$(cc -print-file-name=libasan.so)" \
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 HYPOTHESIS_PROFILE=fuzz
sanitize: $(STAMP)  ## the native hashing module built with ASan and UBSan, under its tests and 20,000 fuzzed inputs (not in CI)
	rm -rf $(SANITIZED) && mkdir -p $(SANITIZED) && cp -r src/slsa_provenance $(SANITIZED)/
	rm -f $(SANITIZED)/slsa_provenance/provenance/*.so
	cc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fPIC -shared \
	  -I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
	  src/slsa_provenance/provenance/_sha256x16.c -o $(SANITIZED)/slsa_provenance/provenance/_sha256x16.abi3.so
	$(UNDER_SANITIZERS) $(BIN)/python -c 'from slsa_provenance.provenance import hashing; assert "$(SANITIZED)" in hashing._NATIVE.__file__'
	$(UNDER_SANITIZERS) $(BIN)/pytest -q -p no:cacheprovider tests/test_hashing.py

format: $(STAMP)  ## rewrite the code in the house format
	$(BIN)/ruff format src tests packaging task bench
	$(BIN)/ruff check --fix src tests packaging task bench

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build dist node_modules src/*.egg-info

# promptgate — `make run` and `make test` are the two entry points (see README.md).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/promptgate.yaml
VENV := .venv
PYTHON_REQUIREMENTS := tests/python/requirements.txt

.PHONY: run build test lint unit python-test deps test-deps check-config clean bench bench-profile

## run: install what is missing, build release, run with $(CONFIG) (in-memory cache, no Redis)
run: deps
	cargo build --release --locked
	./target/release/promptgate run --config $(CONFIG)

build: deps
	cargo build --release --locked

## test: install what is missing, then lint and run every test suite; the Python suite runs
## last, so its closing "N passed" line ends the output
test: test-deps lint unit
	@$(MAKE) --no-print-directory python-test

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked

## python-test: the official Python SDKs (tests/python) against the debug promptgate binary and
## the mock upstream example; any pytest failure, or no test collected (exit 5), fails make
python-test: $(VENV)/.requirements-installed
	cargo build --locked --bins --examples
	$(VENV)/bin/python -m pytest -q tests/python

# Re-run when the pinned requirements change.
$(VENV)/.requirements-installed: $(PYTHON_REQUIREMENTS)
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(PYTHON_REQUIREMENTS)
	touch $@

## bench: promptgate side by side with nginx and LiteLLM on loopback, a few minutes; results
## in bench/results/latest.md (recorded in BENCHMARKS.md). Not part of `make test`.
bench:
	@bash bench/setup.sh
	python3 bench/run.py

## bench-profile: perf profile of the cache-hit path (bench/results/profile-*.txt)
bench-profile:
	@bash bench/setup.sh
	python3 bench/run.py --profile

check-config: build
	./target/release/promptgate check --config $(CONFIG)

deps:
	@bash scripts/install-deps.sh build

test-deps:
	@bash scripts/install-deps.sh test

clean:
	cargo clean

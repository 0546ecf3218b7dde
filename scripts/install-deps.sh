#!/usr/bin/env bash
# Installs what building (and, with "test", testing) promptgate needs on Debian, as root.
# Only missing packages are installed, so a second run costs almost nothing.
set -euo pipefail

purpose="${1:-build}"
packages=(cmake pkg-config gcc g++ make curl ca-certificates)
if [ "$purpose" = "test" ]; then
    # prometheus ships promtool, which checks the /metrics output in the integration tests;
    # chromium and chromium-driver (same build, so they always match) run the dashboard test.
    packages+=(redis-server python3 python3-venv prometheus chromium chromium-driver)
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

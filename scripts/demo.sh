#!/usr/bin/env bash
# make demo: promptgate caching an LLM API in seconds, offline (the first run compiles it in
# release mode, which takes minutes). Starts the project's mock upstream
# (examples/mock_upstream.rs, which takes 600 ms per answer like a real model) and promptgate
# with conf/demo.yaml, asks the same question twice (MISS, then HIT), streams one twice, prints
# the hit rate and the cost saved from /metrics, and stops both processes — also on Ctrl-C or
# an error. Needs bash and curl; no stdin, no terminal, no API key.
#
# Environment: PROMPTGATE_BIN and MOCK_BIN use those binaries instead of building (release);
# PROMPTGATE_DEMO_LISTEN / PROMPTGATE_DEMO_ADMIN (IP:port) instead of picking free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
if [ -z "${PROMPTGATE_BIN:-}" ] || [ -z "${MOCK_BIN:-}" ]; then
    echo "demo: building promptgate and the mock upstream (cargo build --release; the first build takes a few minutes)…"
    cargo build --release --locked --quiet --bin promptgate --example mock_upstream
fi
bin="${PROMPTGATE_BIN:-$target/release/promptgate}"
mock_bin="${MOCK_BIN:-$target/release/examples/mock_upstream}"

tmp="$(mktemp -d)"
pids=()
cleanup() {
    # promptgate drains on SIGTERM; the mock has nothing to drain.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "demo: $*" >&2
    for log in "$tmp"/*.log; do
        [ -s "$log" ] && { echo "--- $(basename "$log")" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

# A port nothing answers on, starting the search at $1.
free_port() {
    local port
    for port in $(seq "$1" $(($1 + 200))); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    fail "no free port near $1"
}

# The mock binds any free port and prints it on its first line.
"$mock_bin" --port 0 </dev/null >"$tmp/mock.port" 2>"$tmp/mock.log" &
pids+=($!)
for _ in $(seq 100); do
    [ -s "$tmp/mock.port" ] && break
    sleep 0.1
done
mock_port="$(head -n 1 "$tmp/mock.port")"
[[ "$mock_port" =~ ^[0-9]+$ ]] || fail "the mock upstream did not start"

listen="${PROMPTGATE_DEMO_LISTEN:-127.0.0.1:$(free_port 8180)}"
admin="${PROMPTGATE_DEMO_ADMIN:-127.0.0.1:$(free_port 9190)}"
PROMPTGATE_DEMO_LISTEN="$listen" PROMPTGATE_DEMO_ADMIN="$admin" \
    PROMPTGATE_DEMO_UPSTREAM="http://127.0.0.1:$mock_port" RUST_LOG="${RUST_LOG:-warn}" \
    "$bin" run --config conf/demo.yaml </dev/null >"$tmp/promptgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do
    curl -sf -o /dev/null "http://$admin/readyz" && break
    kill -0 "${pids[1]}" 2>/dev/null || fail "promptgate exited at start"
    sleep 0.1
done
curl -sf -o /dev/null "http://$admin/readyz" || fail "promptgate did not become ready"

echo "promptgate on $listen (admin $admin), conf/demo.yaml, in front of a mock LLM upstream"
echo "on 127.0.0.1:$mock_port that takes 600 ms per answer (100 ms between streamed chunks)."
echo

# A request as an SDK sends it: ~1,000 prompt tokens (a long system prompt) for gpt-4o.
system="$(printf 'You are the support assistant of ACME Corp. Answer briefly and politely. %.0s' $(seq 50))"
question() { # $1: user message, $2: "true" to stream
    printf '{"model":"gpt-4o","stream":%s,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"%s"},{"role":"user","content":"%s"}]}' \
        "$2" "$system" "$1"
}
url="http://$listen/openai/v1/chat/completions"

# Sends one request; prints "STATUS first_byte_ms total_ms text".
send() { # $1: JSON body
    local times cache text
    times="$(curl -sS -N -o "$tmp/body" -D "$tmp/head" -w '%{time_starttransfer} %{time_total}' \
        -H 'content-type: application/json' -H 'authorization: Bearer sk-demo' \
        --data-binary "$1" "$url")" || fail "request to $url failed"
    cache="$(tr -d '\r' <"$tmp/head" | awk -F': ' 'tolower($1) == "x-promptgate-cache" { print $2 }')"
    # The answer's text: the message content, or the streamed deltas joined.
    text="$(grep -o '"content":"[^"]*"' "$tmp/body" | sed 's/^"content":"//; s/"$//' | tr -d '\n')"
    echo "${cache:-none} $times $text"
}

show() { # $1: expected status, $2: what it means, $3: send's output, $4: "stream" or ""
    local status first total text
    read -r status first total text <<<"$3"
    if [ "$4" = stream ]; then
        printf '   %-5s first byte %7.1f ms, whole answer %7.1f ms  "%s"  %s\n' \
            "$status" "$(awk -v t="$first" 'BEGIN { print t * 1000 }')" \
            "$(awk -v t="$total" 'BEGIN { print t * 1000 }')" "$text" "$2"
    else
        printf '   %-5s %7.1f ms  "%s"  %s\n' "$status" "$(awk -v t="$total" 'BEGIN { print t * 1000 }')" "$text" "$2"
    fi
    [ "$status" = "$1" ] || fail "expected x-promptgate-cache: $1, got $status"
}

echo "1. The same question twice (POST /openai/v1/chat/completions):"
plain="$(question "What are your opening hours?" false)"
show MISS "(asked the upstream)" "$(send "$plain")" ""
show HIT "(from the cache: the same answer, no upstream call)" "$(send "$plain")" ""
echo
echo "2. A streamed question twice (\"stream\": true, server-sent events):"
streamed="$(question "How do I reset my password?" true)"
show MISS "(relayed chunk by chunk, recorded)" "$(send "$streamed")" stream
show HIT "(the recorded stream, replayed at once)" "$(send "$streamed")" stream
echo

# From the Prometheus metrics: lookups by result, and what the answers cost or saved.
curl -sf "http://$admin/metrics" >"$tmp/metrics" || fail "GET /metrics failed"
sum() { # $1: metric name, $2: a label filter (regex) or ""
    awk -v m="$1" -v f="$2" 'index($0, m "{") == 1 && $0 ~ f { s += $NF } END { printf "%.6f", s + 0 }' "$tmp/metrics"
}
hits="$(sum promptgate_cache_lookups_total 'result="(hit|coalesced)"')"
misses="$(sum promptgate_cache_lookups_total 'result="(miss|error)"')"
paid="$(sum promptgate_cost_usd_total '')"
saved="$(sum promptgate_cost_saved_usd_total '')"
echo "3. From http://$admin/metrics:"
awk -v h="$hits" -v m="$misses" 'BEGIN {
    printf "   hit rate     %.0f%% (%d hits, %d misses)\n", (h + m > 0 ? 100 * h / (h + m) : 0), h, m }'
awk -v p="$paid" -v s="$saved" 'BEGIN {
    printf "   cost paid    $%.4f (the misses, at gpt-4o list prices)\n", p
    printf "   cost saved   $%.4f (what the hits would have cost upstream)\n", s }'
cleanup
trap - EXIT
echo
echo "Stopped promptgate and the mock. Next: \`make run\`, then point your SDK at it (README.md)."

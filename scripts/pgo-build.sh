#!/usr/bin/env bash
# The release build we ship: promptgate compiled with a profile of its own request paths (PGO),
# so that LLVM lays the hot paths out together and inlines by what runs. Against a plain
# `cargo build --release` it runs a pass-through in 20% fewer instructions and 23% less CPU as
# shipped, a cache hit in 17% fewer instructions (BENCHMARKS.md, "Built from a profile").
#
#   scripts/pgo-build.sh            → target/pgo/promptgate
#
# Three steps, about twice a release build (16 minutes from a fresh clone on 2 cores, then at
# least 5.5: the build from a new profile): an instrumented build;
# a training run of a few seconds on 127.0.0.1 — the project's mock upstream
# (examples/mock_upstream.rs) behind the instrumented promptgate, fed by `promptgate warm`
# with hits, misses, pass-throughs and streams for the four providers and some upstream
# errors; then the build that uses the profile. Needs `llvm-profdata` able to read rustc's
# profiles (Debian: `llvm-19`, installed here when missing and run as root; `LLVM_PROFDATA=path`
# picks one). Without one, or if any step fails, it says why and builds without a profile:
# target/pgo/promptgate is then the plain release binary, and the build still succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

host="$(rustc -vV | sed -n 's/^host: //p')"
work="$PWD/target/pgo-work"
out="$PWD/target/pgo"
mkdir -p "$out"

say() { echo "pgo-build: $*" >&2; }

plain() { # $1: why there is no profile
    say "no profile ($1): building without one (cargo build --release)"
    cargo build --release --locked --bin promptgate
    cp target/release/promptgate "$out/promptgate"
    say "target/pgo/promptgate: the plain release build"
    exit 0
}

# llvm-profdata, newest first; one whose LLVM is older than rustc's may still read its
# profiles (19 reads rustc 1.95's, LLVM 22): the merge below is the test.
find_profdata() {
    if [ -n "${LLVM_PROFDATA:-}" ]; then
        echo "$LLVM_PROFDATA"
        return
    fi
    local found
    found="$(ls -d /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -V -r | head -n 1 || true)"
    [ -n "$found" ] && { echo "$found"; return; }
    command -v llvm-profdata || true
}
# What the training run needs besides the build: llvm-profdata, python3 (its requests), curl.
profdata="$(find_profdata)"
missing=()
# Debian's LLVM before 19 (bookworm's default is 14) reads only older profiles than rustc writes.
version="$(echo "$profdata" | sed -n 's|^/usr/lib/llvm-\([0-9]*\)/.*|\1|p')"
if [ -z "$profdata" ] || { [ -n "$version" ] && [ "$version" -lt 19 ]; }; then
    missing+=(llvm-19)
fi
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
    }
    apt_install || { apt-get update -qq >/dev/null 2>&1 && apt_install; } || true
    profdata="$(find_profdata)"
fi
[ -n "$profdata" ] || plain "no llvm-profdata; on Debian: apt-get install llvm-19"
command -v python3 >/dev/null || plain "no python3 for the training run"
command -v curl >/dev/null || plain "no curl for the training run"

rm -rf "$work"
mkdir -p "$work/raw"
# --target keeps the flags off build scripts and proc macros (they would be instrumented too).
say "1/3 instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/raw" cargo build --release --locked --bin promptgate \
    --target "$host" --target-dir target/pgo-gen || plain "the instrumented build failed"
# The mock in a debug build: it only has to keep up with the training, and takes a minute to
# build where a release one takes six.
cargo build --locked --example mock_upstream || plain "the mock upstream did not build"
gen="target/pgo-gen/$host/release/promptgate"

say "2/3 training run (a few seconds, 127.0.0.1 only)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
target/debug/examples/mock_upstream --port 0 </dev/null >"$work/mock.port" 2>"$work/mock.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/mock.port" ] && break; sleep 0.1; done
mock="$(head -n 1 "$work/mock.port")"
[[ "$mock" =~ ^[0-9]+$ ]] || plain "the mock upstream did not start"
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listen="127.0.0.1:$(port)"
admin="127.0.0.1:$(port)"
# Shaped like conf/promptgate.yaml: a cached route per provider, one not cached; the access
# log on (RUST_LOG unset), to a file, as shipped.
cat >"$work/promptgate.yaml" <<EOF
listen: "$listen"
admin: "$admin"
threads: 0
shutdown_grace: 1s
reload: { watch: false }
upstreams:
  mock: { url: "http://127.0.0.1:$mock" }
routes:
  - { name: pass, match: { path_prefix: /pass }, strip_prefix: true, targets: [mock], cache: { enabled: false } }
  - { name: openai, match: { path_prefix: /openai }, strip_prefix: true, targets: [mock] }
  - { name: anthropic, match: { path_prefix: /anthropic }, strip_prefix: true, targets: [mock] }
  - { name: gemini, match: { path_prefix: /gemini }, strip_prefix: true, targets: [mock] }
  - { name: ollama, match: { path_prefix: /ollama }, strip_prefix: true, targets: [mock] }
cache: { enabled: true, backend: memory }
EOF
env -u RUST_LOG "$gen" run --config "$work/promptgate.yaml" </dev/null >"$work/promptgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do curl -sf -o /dev/null "http://$admin/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://$admin/readyz" || plain "the instrumented promptgate did not start"
python3 - "$work/requests.jsonl" <<'EOF'
# The training requests: what promptgate's users send, in proportions like a busy app's.
import json, sys
system = "You are a helpful assistant for an online store. Answer briefly and politely. " * 4
def chat(i, stream=False):
    body = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 512,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": f"Where is my order {i}?"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
auth = {"authorization": "Bearer sk-pgo-training"}
lines = []
for i in range(4000):
    lines.append({"path": "/pass/v1/chat/completions", "body": chat(i), "headers": auth})
    lines.append({"path": "/openai/v1/chat/completions", "body": chat(i % 50), "headers": auth})
    if i % 4 == 0:
        lines.append({"path": "/openai/v1/chat/completions", "body": chat(i % 20, True),
                      "headers": auth})
        lines.append({"path": "/pass/v1/chat/completions", "body": chat(i, True), "headers": auth})
    if i % 8 == 0:
        lines.append({"path": "/anthropic/v1/messages", "headers": {"x-api-key": "sk-pgo"},
                      "body": {"model": "claude-sonnet-4-5", "max_tokens": 256,
                               "messages": [{"role": "user", "content": f"Hi {i % 30}"}]}})
        lines.append({"path": "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                      "headers": {"x-goog-api-key": "pgo"},
                      "body": {"contents": [{"parts": [{"text": f"Hi {i % 30}"}]}]}})
        lines.append({"path": "/ollama/api/chat", "body": {"model": "llama3.2", "stream": False,
                      "messages": [{"role": "user", "content": f"Hi {i % 30}"}]}})
    if i % 50 == 0:
        lines.append({"path": "/pass/v1/chat/completions", "body": chat(i),
                      "headers": {**auth, "x-mock-status": "429"}})
with open(sys.argv[1], "w") as f:
    for line in lines:
        f.write(json.dumps(line) + "\n")
EOF
"$gen" warm --config "$work/promptgate.yaml" --concurrency 32 "$work/requests.jsonl" \
    >"$work/warm.log" 2>&1 || true # it counts the uncached route's requests as failures
cleanup
pids=()
trap - EXIT
"$profdata" merge -o "$work/merged.profdata" "$work/raw" 2>"$work/merge.log" \
    || plain "$profdata could not merge the profile $(head -n 1 "$work/merge.log")"
# Named by its content: cargo sees a new profile as new flags and rebuilds every crate with it
# (it does not look into the file).
profile="$work/promptgate-$(sha256sum "$work/merged.profdata" | cut -c1-16).profdata"
mv "$work/merged.profdata" "$profile"

say "3/3 build from the profile"
RUSTFLAGS="-Cprofile-use=$profile" cargo build --release --locked --bin promptgate \
    --target "$host" --target-dir target/pgo-use || plain "the build from the profile failed"
cp "target/pgo-use/$host/release/promptgate" "$out/promptgate"
say "target/pgo/promptgate: built from a profile ($(basename "$profdata") $("$profdata" --version 2>/dev/null | sed -n 's/.*LLVM version //p' | head -n 1))"

#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints its stats.
# Usage: scripts/fuzz.sh [SECONDS] [--optional]
#   --optional: when nightly Rust or cargo-fuzz is missing, say so and exit 0 (make test);
#               without it that is an error (make fuzz).
# A crash stops the run with libFuzzer's report; the input is saved under
# fuzz/artifacts/TARGET/ — turn it into a regression test (see docs/security.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
optional=false
for arg in "$@"; do
  case "$arg" in
    --optional) optional=true ;;
    *) seconds="$arg" ;;
  esac
done
targets=(canonical_json stream_end config_parse http_request)

missing=""
rustup toolchain list 2>/dev/null | grep -q '^nightly' || missing="nightly Rust (rustup toolchain install nightly)"
if [ -z "$missing" ] && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  missing="cargo-fuzz (cargo install cargo-fuzz --locked)"
fi
if [ -n "$missing" ]; then
  if $optional; then
    echo "fuzz: SKIPPED — needs $missing; the targets are in fuzz/fuzz_targets/"
    exit 0
  fi
  echo "fuzz: needs $missing" >&2
  exit 1
fi

# No sanitizer: the code under test is safe Rust, and ASan would only slow each run; debug
# assertions stay on so integer overflow is caught.
flags=(--sanitizer none --debug-assertions)
# A short run (make test) builds without optimisation: a fraction of the compile time, and 20
# seconds of unoptimised fuzzing still explores the parsers well. `make fuzz` builds optimised.
if [ "$seconds" -le 60 ]; then
  flags+=(--dev)
fi
cargo +nightly fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="fuzz/target/$t.log"
  # The first corpus directory collects new inputs; the seeds are read only.
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED — input saved under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  echo "fuzz: $t ok — $execs runs in ${seconds}s, ${cov:-cov: ?}, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
done

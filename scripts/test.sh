#!/usr/bin/env bash
# make test: every suite in turn — lint, unit, integration, fuzz (TEST_FUZZ_SECONDS per
# target, default 20), packaging, Python — each one's output shown as it runs, then a summary
# with one line per suite and, as the very last line, `total: N passed, N failed` (CI reads it).
#
# A failing suite does not stop the next ones, so the summary is complete. Exit status 1 when
# anything failed, or when a suite was skipped under CI=true (a CI run must run everything).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

fuzz_seconds="${TEST_FUZZ_SECONDS:-20}"
ci=false
case "${CI:-}" in true | 1 | yes) ci=true ;; esac

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
summary=()
total_passed=0
total_failed=0

# Runs a command, showing its output and keeping a copy in $logs/$name.log; returns its status.
run() {
    local name="$1"
    shift
    echo "==> $name: $*"
    "$@" 2>&1 | tee -a "$logs/$name.log"
    return "${PIPESTATUS[0]}"
}

# One summary line: suite, passed, failed, details.
record() {
    total_passed=$((total_passed + $2))
    total_failed=$((total_failed + $3))
    summary+=("$(printf '%-12s %4d passed, %d failed%s' "$1" "$2" "$3" "${4:+  ($4)}")")
}

# Sums "N passed; M failed" over the `test result:` lines of a cargo test log.
cargo_counts() {
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed/) p += $i
                if ($(i + 1) ~ /^failed/) f += $i
            }
            n++
        }
        END { printf "%d %d %d", p, f, n }' "$1"
}

# --- lint: three checks --------------------------------------------------------------------
lint_passed=0 lint_failed=0 lint_failures=()
for check in "cargo fmt --all -- --check" \
    "rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs" \
    "cargo clippy --locked --all-targets -- -D warnings"; do
    # shellcheck disable=SC2086 # the fuzz target glob must expand
    if run lint $check; then
        lint_passed=$((lint_passed + 1))
    else
        lint_failed=$((lint_failed + 1))
        lint_failures+=("${check%% --*}")
    fi
done
record lint "$lint_passed" "$lint_failed" \
    "$([ "$lint_failed" -gt 0 ] && echo "failed: ${lint_failures[*]}" || echo "fmt, fuzz targets' fmt, clippy -D warnings")"

# --- unit and integration: cargo's own counts ----------------------------------------------
for suite in unit integration; do
    if [ "$suite" = unit ]; then args=(--lib); else args=(--test integration); fi
    run "$suite" cargo test --locked "${args[@]}"
    status=$?
    read -r passed failed results <<<"$(cargo_counts "$logs/$suite.log")"
    if [ "$results" -eq 0 ]; then
        record "$suite" 0 1 "did not build or run: see the output above"
    elif [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
        record "$suite" "$passed" 1 "cargo test exited $status"
    else
        record "$suite" "$passed" "$failed"
    fi
done

# --- fuzz: each target for fuzz_seconds ----------------------------------------------------
run fuzz bash scripts/fuzz.sh "$fuzz_seconds" --optional
status=$?
if grep -q "fuzz: SKIPPED" "$logs/fuzz.log"; then
    if $ci; then
        record fuzz 0 1 "SKIPPED under CI=true: install nightly Rust and cargo-fuzz (scripts/install-deps.sh test)"
    else
        record fuzz 0 0 "SKIPPED: needs nightly Rust and cargo-fuzz (scripts/install-deps.sh test)"
    fi
else
    passed="$(grep -c '^fuzz: .* ok — ' "$logs/fuzz.log")"
    runs="$(sed -n 's/^fuzz: \([a-z_]*\) ok — \([0-9?]*\) runs in \([0-9]*s\).*/\1 \3 (\2 runs)/p' "$logs/fuzz.log" |
        paste -sd, - | sed 's/,/, /g')"
    failed=$((status != 0))
    record fuzz "$passed" "$failed" "${runs:-no target ran}"
fi

# --- packaging: four checks, each printing one line when it passes -------------------------
run packaging bash scripts/check-packaging.sh
status=$?
passed="$(grep -cE '^(systemd-analyze verify: clean|systemd-analyze security: exposure|hadolint Dockerfile: clean|promptgate check: shipped configs valid)' "$logs/packaging.log")"
exposure="$(sed -n 's/^systemd-analyze security: exposure \([0-9.]*\).*/\1/p' "$logs/packaging.log")"
record packaging "$passed" $((status != 0)) \
    "systemd unit verify${exposure:+ + exposure $exposure}, hadolint, promptgate check on conf/*.yaml"

# --- Python: the official SDKs, the README's and docs' snippets, make demo -----------------
run python make --no-print-directory python-test
status=$?
line="$(grep -E '[0-9]+ (passed|failed|error)' "$logs/python.log" | tail -n 1)"
count() { grep -oE "[0-9]+ $1" <<<"$line" | grep -oE '^[0-9]+' || echo 0; }
passed="$(count passed)"
failed=$(($(count failed) + $(count 'errors?')))
skipped="$(count skipped)"
if [ -z "$line" ]; then
    record python 0 1 "did not run: see the output above"
elif [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    record python "$passed" 1 "pytest exited $status"
else
    record python "$passed" "$failed" "$([ "$skipped" -gt 0 ] && echo "$skipped skipped")"
fi

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
echo "total: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]

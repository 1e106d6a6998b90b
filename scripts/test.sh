#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property,
# integration against a real tansu broker, doc tests). Installs what it needs first. Each step's
# wall time is printed at the end (docs/ci.md has the figures of a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

timings=()
started=$SECONDS
report() {
  local rc=$?
  if [[ ${#timings[@]} -gt 0 ]]; then
    echo "==> step times (wall clock)"
    printf '    %s\n' "${timings[@]}"
    echo "    $((SECONDS - started)) s in all"
  fi
  exit "$rc"
}
trap report EXIT

# step NAME COMMAND...: runs COMMAND, records how long it took.
step() {
  local name=$1 t=$SECONDS
  shift
  echo "==> $name"
  "$@"
  timings+=("$(printf '%5d s  %s' $((SECONDS - t)) "$name")")
}

step "system packages (libssl-dev, pkg-config, chromium)" scripts/deps.sh test
step "deployment checkers (systemd-analyze, kubernetes-validate) for tests/deploy.rs" scripts/deploy_tools.sh
step "kafka-python for tests/monitor.rs" scripts/monitor_tools.sh

# The test broker builds with cargo (once per machine) while cronq builds: the two share the two
# cores, and each fills the other's single-threaded stretches (build scripts, links).
broker_started=$SECONDS
scripts/broker.sh install &
broker=$!

if ! cargo nextest --version >/dev/null 2>&1; then
  step "cargo-nextest (cargo install, once per machine)" cargo install cargo-nextest --locked
fi
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets --locked -- -D warnings
step "build the tests" cargo nextest run --locked --profile ci --no-run

echo "==> waiting for the test broker's install"
wait "$broker"
timings+=("$(printf '%5d s  %s' $((SECONDS - broker_started)) "test broker (tansu), beside the steps above")")

step "tests (unit, property, integration; nextest profile ci)" cargo nextest run --locked --profile ci
step "doc tests" cargo test --locked --doc

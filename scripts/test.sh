#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property,
# integration against a real tansu broker, doc tests). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "==> system packages (libssl-dev, pkg-config, chromium)"
scripts/deps.sh test

echo "==> deployment checkers (systemd-analyze, kubernetes-validate) for tests/deploy.rs"
scripts/deploy_tools.sh

echo "==> test broker (tansu)"
scripts/broker.sh install

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo test (unit, property, integration and doc tests; benches are built by clippy above)"
cargo test --locked

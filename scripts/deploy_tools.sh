#!/usr/bin/env bash
# What tests/deploy.rs needs beyond the Rust toolchain, installed when missing:
#   systemd-analyze       Debian's `systemd` package (the units in deploy/systemd/ are verified with it)
#   kubernetes-validate   from PyPI, in a virtualenv at target/deploy-venv (deploy/kubernetes/)
#   check-jsonschema      from PyPI, same virtualenv; its vendored compose-spec schema checks
#                         docker/docker-compose.yaml
#   promtool              Debian's `prometheus` package (deploy/prometheus/cronq-rules.yaml is checked
#                         and unit-tested with `promtool check rules` and `promtool test rules`)
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VALIDATE=1.37.0
CHECK_JSONSCHEMA=0.39.0
VENV=target/deploy-venv

command -v systemd-analyze >/dev/null 2>&1 || scripts/deps.sh only systemd
command -v promtool >/dev/null 2>&1 || scripts/deps.sh only prometheus
command -v python3 >/dev/null 2>&1 || scripts/deps.sh only python3
python3 -c 'import ensurepip, venv' 2>/dev/null || scripts/deps.sh only python3-venv

if [[ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]] ||
  ! "$VENV/bin/check-jsonschema" --version 2>/dev/null | grep -q "$CHECK_JSONSCHEMA"; then
  echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE and check-jsonschema $CHECK_JSONSCHEMA into $VENV (pip)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE" "check-jsonschema==$CHECK_JSONSCHEMA"
fi

#!/usr/bin/env bash
# What tests/monitor.rs needs beyond the Rust toolchain, installed when missing:
#   kafka-python   from PyPI, in a virtualenv at target/monitor-venv: a Kafka client cronq did not
#                  write, which reads the results topic back for the `cronq history` check
set -euo pipefail
cd "$(dirname "$0")/.."
KAFKA_PYTHON=3.0.12
VENV=target/monitor-venv

command -v python3 >/dev/null 2>&1 || scripts/deps.sh only python3
python3 -c 'import ensurepip, venv' 2>/dev/null || scripts/deps.sh only python3-venv

if [[ "$("$VENV/bin/python" -c 'import kafka; print(kafka.__version__)' 2>/dev/null)" != "$KAFKA_PYTHON" ]]; then
  echo "==> installing kafka-python $KAFKA_PYTHON into $VENV (pip)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kafka-python==$KAFKA_PYTHON"
fi

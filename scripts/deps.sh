#!/usr/bin/env bash
# System packages the build needs beyond the Rust toolchain: OpenSSL's headers and pkg-config, for
# librdkafka's TLS/SASL (rdkafka's `ssl` feature). Installed with apt when missing.
set -euo pipefail
if dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing libssl-dev and pkg-config (apt) for librdkafka's TLS/SASL"
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq libssl-dev pkg-config

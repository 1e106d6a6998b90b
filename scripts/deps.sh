#!/usr/bin/env bash
# System packages the build and the tests need beyond the Rust toolchain, installed with apt when
# missing:
# - libssl-dev, pkg-config: librdkafka's TLS/SASL (rdkafka's `ssl` feature);
# - with `test` as argument, chromium: the status pages are tested in a real headless browser.
set -euo pipefail
packages=(libssl-dev pkg-config)
if [[ "${1:-}" == "test" ]]; then packages+=(chromium); fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
echo "==> installing ${missing[*]} (apt)"
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
$sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# System packages the build and the tests need beyond the Rust toolchain, installed with apt when
# missing, as root or through sudo:
#   scripts/deps.sh              libssl-dev, pkg-config: librdkafka's TLS/SASL (rdkafka's `ssl` feature)
#   scripts/deps.sh test         the same, plus chromium: the status pages are tested in a real
#                                headless browser; and faketime (libfaketime): the dispatcher's
#                                clock-step test steps a live process's wall clock
#   scripts/deps.sh only PKG...  just the named packages (scripts/deploy_tools.sh uses this)
set -euo pipefail
case "${1:-}" in
  "") packages=(libssl-dev pkg-config) ;;
  test) packages=(libssl-dev pkg-config chromium faketime) ;;
  only) shift; packages=("$@") ;;
  *) echo "usage: $0 [test | only PKG...]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
# As root, apt-get runs directly; otherwise through sudo. `env` keeps DEBIAN_FRONTEND an
# assignment in both cases (a bare `$sudo VAR=value cmd` with an empty $sudo runs `VAR=value` as a
# command).
as_root=()
if [[ "$(id -u)" -ne 0 ]]; then as_root=(sudo); fi
echo "==> installing ${missing[*]} (apt)"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

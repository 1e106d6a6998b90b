#!/usr/bin/env bash
# A local Kafka-protocol broker for development and tests: tansu (Apache-Kafka-compatible, in Rust).
#   scripts/broker.sh install        install tansu 0.6.0 once per machine (docs/ci.md: how long)
#   scripts/broker.sh start [PORT]   start it on 127.0.0.1:PORT (default 9092), data in .broker/
#   scripts/broker.sh stop           stop it
#   scripts/broker.sh status
set -euo pipefail

TANSU_VERSION=0.6.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/.broker"
export PATH="$HOME/.cargo/bin:$PATH"

installed() {
  command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

install() {
  if installed; then
    echo "broker: tansu $TANSU_VERSION already installed ($(command -v tansu))"
    return
  fi
  echo "broker: installing tansu $TANSU_VERSION with cargo (once per machine; docs/ci.md has how long it takes)..."
  local start=$SECONDS
  # Unoptimised, without debuginfo: the install is the longest step of a fresh machine's test run,
  # and a test broker does not need the speed (docs/ci.md: 17 CPU-minutes, against 25 at opt-level 1
  # and about 31 at the release profile's 3; the whole suite passes against it).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql 2>&1 |
    while IFS= read -r line; do
      case "$line" in
        *Compiling*) n=$((${n:-0} + 1)); if (( n % 50 == 0 )); then echo "broker: ...compiled $n crates ($((SECONDS - start)) s)"; fi ;;
        error*|*Installed*|*Finished*) echo "broker: $line" ;;
      esac
    done
  installed || { echo "broker: tansu install failed" >&2; exit 1; }
  echo "broker: tansu installed in $((SECONDS - start)) s"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  local port="${1:-9092}"
  installed || install
  if port_open "$port"; then
    echo "broker: something already listens on 127.0.0.1:$port; using it"
    return
  fi
  mkdir -p "$DIR"
  # setsid: the broker leaves the terminal's process group, so a Ctrl-C reaches the dispatcher first and
  # the broker is stopped by `stop` after it (the dispatcher writes its cursors on the way out).
  # `cd` on its own line: `cd DIR && tansu ... &` would send the cd to the background with tansu and
  # leave the pid file in the caller's directory.
  (cd "$DIR"
    setsid nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" >broker.log 2>&1 &
    echo $! >broker.pid)
  for _ in $(seq 1 100); do
    if port_open "$port"; then
      index_headers
      echo "broker: tansu listening on 127.0.0.1:$port (pid $(cat "$DIR/broker.pid"), log $DIR/broker.log)"
      return
    fi
    sleep 0.1
  done
  echo "broker: tansu did not start; its log:" >&2
  cat "$DIR/broker.log" >&2 || true
  exit 1
}

# tansu 0.6's sqlite schema lacks an index on header (topition, offset_id): every fetched record
# scans the whole header table, so a topic with tens of thousands of records (3 headers each)
# becomes unreadable. Adding the index changes no data.
index_headers() {
  python3 - "$DIR/tansu.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
c.execute("create index if not exists cronq_header_record on header (topition, offset_id)")
c.commit()
PY
}

stop() {
  if [[ -f "$DIR/broker.pid" ]]; then
    kill -TERM "$(cat "$DIR/broker.pid")" 2>/dev/null || true
    rm -f "$DIR/broker.pid"
    echo "broker: stopped"
  else
    echo "broker: not running (no $DIR/broker.pid)"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-9092}" ;;
  stop) stop ;;
  status) if installed; then echo "tansu $TANSU_VERSION installed"; else echo "tansu not installed"; fi ;;
  *) echo "usage: $0 install | start [PORT] | stop | status" >&2; exit 2 ;;
esac

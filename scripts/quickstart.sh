#!/usr/bin/env bash
# One command, end to end: build cronq, start a local Kafka-protocol broker (tansu; installed on
# first use) unless CRONQ_BROKERS points at one, run the dispatcher on schedule/schedule.json, and
# show what it dispatches with `cronq tail`. Ctrl-C stops everything.
#
#   ./scripts/quickstart.sh                          # local tansu broker on 127.0.0.1:9092
#   CRONQ_BROKERS=kafka-1:9092 ./scripts/quickstart.sh  # your own Kafka
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/deps.sh
echo "==> building cronq (release)"
cargo build --release --locked
CRONQ=target/release/cronq

started_broker=""
if [[ -z "${CRONQ_BROKERS:-}" ]]; then
  scripts/broker.sh start 9092
  started_broker=yes
  export CRONQ_BROKERS=127.0.0.1:9092
fi

echo "==> checking schedule/schedule.json"
$CRONQ validate schedule/schedule.json

pids=()
cleanup() {
  trap - EXIT INT TERM   # once, whichever of them fired
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "$started_broker" ]]; then scripts/broker.sh stop; fi
}
trap cleanup EXIT INT TERM

echo "==> starting the dispatcher (logs on stderr) and tailing topic 'jobs' (stdout)"
echo "    every minute at :00 the due jobs appear below; Ctrl-C to stop"
$CRONQ run --schedule schedule/schedule.json &
pids+=($!)
$CRONQ tail --topic jobs &
pids+=($!)
wait -n "${pids[@]}"

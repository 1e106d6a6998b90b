#!/bin/bash
# Time from `cronq run --schedule-topic` starting to /readyz 200 for one member that owns every
# shard of a group whose schedule topic is filled already (`cronq apply FILE --group G --shards S`),
# and the member's CPU seconds by then. Run it twice: the second start finds the cursors the
# first one wrote (a restart).
#
# Usage: scripts/restart_time.sh BROKER GROUP SHARDS [RUNS]     (CRONQ= the binary to time)
set -euo pipefail
broker=$1 group=$2 shards=$3 runs=${4:-3}
cronq=${CRONQ:-target/release/cronq}
port=18080
for _ in $(seq "$runs"); do
  t0=$(date +%s.%N)
  "$cronq" run --schedule-topic --brokers "$broker" --group "$group" --shards "$shards" \
    --member-id restart-time --http "127.0.0.1:$port" --topic "$group.jobs" \
    --session-timeout 10s >/dev/null 2>"${TMPDIR:-/tmp}/restart_time.log" &
  pid=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "cronq exited; see ${TMPDIR:-/tmp}/restart_time.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$pid/stat")
  echo "ready after $(echo "$t1 - $t0" | bc) s, $cpu s of CPU"
  kill -TERM "$pid"
  wait "$pid" || true
done

#!/usr/bin/env bash
# The whole loop in one command: build cronq, start a local Kafka-protocol broker (tansu; installed
# on first use) unless CRONQ_BROKERS points at one, run a dispatcher on examples/schedule.json and a
# worker with the example handlers of examples/handlers/ and a monitor (run history and alerts in
# .quickstart/monitor.db), print the URLs of the three status pages, and show every result and dead
# letter as it arrives. Ctrl-C stops everything.
#
#   ./scripts/quickstart.sh                                # local tansu broker on 127.0.0.1:9092
#   CRONQ_BROKERS=kafka-1:9092 ./scripts/quickstart.sh     # your own Kafka
#
# Every minute at :00 the three example jobs are dispatched: `write-line` appends a line to
# .quickstart/lines.txt, `sleep 20` keeps an executor busy, `fail 3` fails, is retried and ends in
# the dead letter topic. Logs of the dispatcher, the worker and the monitor go to .quickstart/*.log.
#
# Knobs (tests use them): QUICKSTART_BIN (a cronq binary; skips the release build), QUICKSTART_DIR
# (default .quickstart), QUICKSTART_DISPATCHER_HTTP, QUICKSTART_WORKER_HTTP and
# QUICKSTART_MONITOR_HTTP (the --http addresses, default 127.0.0.1:9464, :9465 and :9466).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [[ -n "${QUICKSTART_BIN:-}" ]]; then
  CRONQ="$QUICKSTART_BIN"
else
  scripts/deps.sh
  echo "==> building cronq (release)"
  cargo build --release --locked
  CRONQ=target/release/cronq
fi

STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
DIR="${QUICKSTART_DIR:-.quickstart}"
DISPATCHER_HTTP="${QUICKSTART_DISPATCHER_HTTP:-127.0.0.1:9464}"
WORKER_HTTP="${QUICKSTART_WORKER_HTTP:-127.0.0.1:9465}"
MONITOR_HTTP="${QUICKSTART_MONITOR_HTTP:-127.0.0.1:9466}"
SCHEDULE=examples/schedule.json
HANDLERS=examples/handlers
JOBS=quickstart.jobs
RESULTS=quickstart.results
DLQ=quickstart.dlq
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

started_broker=""
if [[ -z "${CRONQ_BROKERS:-}" ]]; then
  scripts/broker.sh start 9092
  started_broker=yes
  export CRONQ_BROKERS=127.0.0.1:9092
fi

echo "==> checking $SCHEDULE"
"$CRONQ" validate "$SCHEDULE"

# The worker refuses handlers that group or other may write (anyone who could change them could run
# commands as the worker); a checkout made under umask 002 has such modes.
chmod go-w "$HANDLERS" "$HANDLERS"/*

pids=()
cleanup() {
  trap - EXIT INT TERM # once, whichever of them fired
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "$started_broker" ]]; then scripts/broker.sh stop; fi
}
trap cleanup EXIT INT TERM

# One readable line per JobResult or dead letter (`cronq tail --json` gives one JSON value a line),
# leaving out those of earlier quickstarts: the tails read their topics from the beginning, since
# on a first run the worker creates them and may report before a tail waiting for them notices.
# shellcheck disable=SC2016
SHOW='
import json, sys
from datetime import datetime
kind, since = sys.argv[1], datetime.fromisoformat(sys.argv[2].replace("Z", "+00:00"))
def before_start(result):
    at = (result or {}).get("finishedAt")
    return bool(at) and datetime.fromisoformat(at.replace("Z", "+00:00")) < since
for line in sys.stdin:
    try:
        v = json.loads(line)
    except ValueError:
        print(kind, line.rstrip(), flush=True)
        continue
    if before_start(v if kind == "result" else v.get("lastResult")):
        continue
    if kind == "result":
        out = (v.get("stdoutTail") or v.get("stderrTail") or "").strip().splitlines()
        print("result  %-13s %s attempt %s  %-9s exit %-4s %6s ms  %s" % (
            v.get("jobName"), v.get("scheduledAt"), v.get("attempt"), v.get("status"),
            v.get("exitCode"), v.get("durationMs"), out[-1] if out else ""), flush=True)
    else:
        last = v.get("lastResult") or {}
        print("DLQ     %-13s %s %s after attempt %s (%s, offset %s)" % (
            (v.get("message") or {}).get("jobName"), (v.get("message") or {}).get("scheduledAt"),
            v.get("reason"), last.get("attempt"), v.get("topic"), v.get("offset")), flush=True)
'

# Answers `GET PATH` on HOST:PORT with a 2xx? (bash's /dev/tcp: no curl needed)
http_ok() {
  local host="${1%:*}" port="${1##*:}" path="$2" status
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$1" >&3
  IFS=' ' read -r _ status _ <&3 || true
  exec 3<&-
  [[ "$status" == 2* ]]
}

# A replay of the minute that just ended (`run --from --until` dispatches a window and exits): the
# first results show at once instead of at the next :00, and the job topic exists before the worker
# subscribes (a worker subscribed to a missing topic sees it only at its next metadata refresh).
# On a second quickstart that slot may have run already: write-line, keyed on CRONQ_DISPATCH_ID,
# then says "already written", as an idempotent handler should.
until_s=$(($(date -u +%s) / 60 * 60))
from=$(date -u -d "@$((until_s - 60))" +%Y-%m-%dT%H:%M:%SZ)
until=$(date -u -d "@$until_s" +%Y-%m-%dT%H:%M:%SZ)
echo "==> replaying the slot $from now, so results show without waiting for the next minute"
CRONQ_HTTP="$DISPATCHER_HTTP" "$CRONQ" run --schedule "$SCHEDULE" --topic "$JOBS" \
  --from "$from" --until "$until" 2>>"$DIR/dispatcher.log"

# Waits (up to 5 s) for NAME's /healthz at ADDR, then prints its status page's URL.
announce() { # NAME ADDR
  for _ in $(seq 1 25); do
    if http_ok "$2" /healthz 2>/dev/null; then
      echo "==> $1 status page: http://$2/   (metrics: http://$2/metrics, readiness: http://$2/readyz)"
      return
    fi
    sleep 0.2
  done
  echo "==> $1 status page: http://$2/ does not answer (yet); see $DIR/$1.log"
}

echo "==> starting the dispatcher (log: $DIR/dispatcher.log)"
CRONQ_HTTP="$DISPATCHER_HTTP" "$CRONQ" run --schedule "$SCHEDULE" --topic "$JOBS" \
  --group quickstart-dispatchers 2>>"$DIR/dispatcher.log" &
pids+=($!)
announce dispatcher "$DISPATCHER_HTTP"

echo "==> starting a worker with the handlers in $HANDLERS/ (log: $DIR/worker.log)"
WRITE_LINE_FILE="$DIR/lines.txt" CRONQ_HTTP="$WORKER_HTTP" "$CRONQ" worker \
  --topic "$JOBS" --results-topic "$RESULTS" --dlq-topic "$DLQ" --group quickstart-workers \
  --handlers "$HANDLERS" --pass-env WRITE_LINE_FILE --max-attempts 3 --retry-backoff 1s \
  2>>"$DIR/worker.log" &
pids+=($!)
"$CRONQ" tail --json --from-beginning --topic "$RESULTS" 2>>"$DIR/tail.log" \
  > >(python3 -u -c "$SHOW" result "$STARTED") &
pids+=($!)
"$CRONQ" tail --json --from-beginning --topic "$DLQ" 2>>"$DIR/tail.log" \
  > >(python3 -u -c "$SHOW" dlq "$STARTED") &
pids+=($!)
announce worker "$WORKER_HTTP"

echo "==> starting a monitor: every run and its outcome, late and missed runs (log: $DIR/monitor.log)"
CRONQ_HTTP="$MONITOR_HTTP" "$CRONQ" monitor --schedule "$SCHEDULE" --topic "$JOBS" \
  --results-topic "$RESULTS" --dlq-topic "$DLQ" --group quickstart-dispatchers \
  --db "$DIR/monitor.db" 2>>"$DIR/monitor.log" &
pids+=($!)
announce monitor "$MONITOR_HTTP"
echo "    (the history: $CRONQ history write-line --db $DIR/monitor.db; $CRONQ runs --status failed --db $DIR/monitor.db)"

echo "==> every minute at :00 the jobs of $SCHEDULE run; their results appear below"
echo "    (write-line appends to $DIR/lines.txt; fail is retried 3 times, then dead-lettered). Ctrl-C stops."
wait -n "${pids[@]}"

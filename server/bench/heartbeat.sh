#!/usr/bin/env bash
# Heartbeat ingestion benchmark.
#
#   server/bench/heartbeat.sh            # SQLite, then PostgreSQL, then the do-nothing ceiling
#
# Drives POST /heartbeat with 64 connections for DURATION seconds (default 20) using wrk, and
# prints requests/s, p50/p99 latency, errors, idle RSS and peak RSS under load for each backend,
# the ratio to a do-nothing axum handler on the same machine, and the time of
# GET /v2/services?limit=100 with 10,000 services registered.
#
# Needs: wrk (apt-get install wrk), curl, python3; PostgreSQL at MEDIC_BENCH_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres; a fresh database medic_bench is created).
# Set BACKENDS="sqlite" to skip PostgreSQL, LIST=off to skip the 10,000-service listing,
# CEILING=off to skip the do-nothing ceiling. NICE=-10 runs the server, wrk and the ceiling at
# that niceness (negative values need root). MEDIC_BENCH_SERVER_BIN with CEILING=off builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
BACKENDS=${BACKENDS:-"sqlite postgres"}
PG_ADMIN_URL=${MEDIC_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18181}
LIST=${LIST:-on}
CEILING=${CEILING:-on}
RUN=()
[ -n "${NICE:-}" ] && RUN=(nice -n "$NICE")
# With autogroup scheduling (sched_autogroup_enabled), niceness only orders the processes of one
# session against each other; the session's own autogroup niceness is what counts against other
# sessions. Set it too (run the script under `setsid` so that only its own session changes).
if [ -n "${NICE:-}" ] && [ -w "/proc/$$/autogroup" ]; then
  echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || echo "could not set the autogroup niceness" >&2
fi
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)"; exit 1; }
if [ -z "${MEDIC_BENCH_SERVER_BIN:-}" ] || [ "$CEILING" != off ]; then
  cargo build --release --locked -p medic-server --bin medic-server --example baseline >&2
fi
# MEDIC_BENCH_SERVER_BIN: measure another build of the server (e.g. the static one of the image).
BIN="${MEDIC_BENCH_SERVER_BIN:-$CARGO_TARGET_DIR/release/medic-server}"
BASELINE="$CARGO_TARGET_DIR/release/examples/baseline"
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

wait_up() {
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2; exit 1
}

api() { # method path [json]
  curl -fsS -X "$1" "http://127.0.0.1:$PORT$2" -H "Authorization: Bearer $ADMIN_KEY" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}

run_load() { # label -> prints RESULT line, tracks peak RSS of $PID
  local peak=0 out
  "${RUN[@]}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s server/bench/heartbeat.lua \
    "http://127.0.0.1:$PORT" >"$WORK/wrk.out" 2>&1 &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    local r; r=$(rss_kb "$PID" || echo 0)
    [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  wait "$wrk_pid"
  out=$(grep '^RESULT' "$WORK/wrk.out")
  echo "$out peak_rss_mb=$((peak / 1024))"
}

declare -A RPS
for backend in $BACKENDS; do
  case $backend in
    sqlite) DB="sqlite://$WORK/bench.db" ;;
    postgres)
      psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS medic_bench WITH (FORCE)" >/dev/null
      psql "$PG_ADMIN_URL" -qc "CREATE DATABASE medic_bench" >/dev/null
      DB="${PG_ADMIN_URL%/*}/medic_bench" ;;
  esac
  DATABASE_URL=$DB PORT=$PORT MEDIC_LOG_LEVEL=warn MEDIC_ADMIN_API_KEY=$ADMIN_KEY \
    RATE_LIMIT_HEARTBEAT_REQUESTS=1000000000 RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 \
    "${RUN[@]}" "$BIN" >"$WORK/server-$backend.log" 2>&1 &
  PID=$!
  wait_up /health/live
  sleep 1
  idle=$(rss_kb "$PID")
  for i in $(seq 1 100); do
    api POST /v2/services "{\"heartbeat_name\":\"bench-$i\",\"interval_seconds\":60}" >/dev/null
  done
  export MEDIC_BENCH_KEY
  MEDIC_BENCH_KEY=$(api POST /v2/api-keys '{"name":"bench","scopes":"write"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["key"])')
  export MEDIC_BENCH_SERVICES=100
  result=$(run_load "$backend")
  echo "[$backend] POST /heartbeat: $result idle_rss_mb=$((idle / 1024))"
  RPS[$backend]=$(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$result")
  if [ "$LIST" = off ]; then
    kill -TERM "$PID"; wait "$PID" || true; PID=""
    continue
  fi

  # GET /v2/services with 10,000 services.
  python3 - "$PORT" "$ADMIN_KEY" <<'PY'
import http.client, json, sys
port, key = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port)
h = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
for i in range(101, 10_001):
    c.request("POST", "/v2/services", json.dumps({"heartbeat_name": f"bench-{i}", "interval_seconds": 60}), h)
    r = c.getresponse(); r.read()
    assert r.status in (201, 409), r.status
PY
  times=()
  for offset in 0 2500 5000 7500 9900 0 2500 5000 7500 9900; do
    times+=("$(curl -fs -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $ADMIN_KEY" \
      "http://127.0.0.1:$PORT/v2/services?limit=100&offset=$offset")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v b="$backend" \
    '{a[NR]=$1} END {printf "[%s] GET /v2/services?limit=100 with 10000 services: median=%.1fms max=%.1fms\n", b, a[int((NR+1)/2)]*1000, a[NR]*1000}'
  kill -TERM "$PID"; wait "$PID" || true; PID=""
done

[ "$CEILING" = off ] && exit 0
PORT=$PORT "${RUN[@]}" "$BASELINE" >"$WORK/baseline.log" 2>&1 &
PID=$!
for _ in $(seq 1 50); do curl -fs -XPOST "http://127.0.0.1:$PORT/heartbeat" >/dev/null 2>&1 && break; sleep 0.1; done
unset MEDIC_BENCH_KEY
result=$(run_load baseline)
echo "[ceiling] do-nothing axum POST /heartbeat: $result"
ceiling=$(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$result")
for backend in $BACKENDS; do
  awk -v b="$backend" -v r="${RPS[$backend]}" -v c="$ceiling" \
    'BEGIN {printf "[%s] ratio to ceiling: %.2f\n", b, r / c}'
done

#!/usr/bin/env bash
# Monitor benchmark: detection lag, monitor cost and memory with many services.
#
#   server/bench/monitor.sh                       # 100,000 and 10,000 services, SQLite and PostgreSQL
#   SIZES="10000" BACKENDS="sqlite" server/bench/monitor.sh
#
# For each backend and size: starts a release medic-server, registers the services (interval
# INTERVAL seconds, default 60, grace GRACE, default 5), keeps them all beating once per interval
# at a random phase, silences 1%
# at random moments, and after DURATION seconds (default 240) prints detection lag p50/p99
# (deadline → alert opened), missed and false alerts, the monitor's pass durations and time per
# minute, and the server's CPU seconds per minute and RSS. On PostgreSQL the API and the monitor
# run as two processes (--role api / --role worker), so the worker's CPU is the monitor's own.
#
# Needs: curl, psql; PostgreSQL at MEDIC_BENCH_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres; a database medic_bench_mon is recreated).
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${SIZES:-"100000 10000"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
DURATION=${DURATION:-240}
INTERVAL=${INTERVAL:-60}
GRACE=${GRACE:-5}
PG_ADMIN_URL=${MEDIC_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18182}
WPORT=$((PORT + 1))
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release --locked -p medic-server --bin medic-server --example monitor_load >&2
BIN="$CARGO_TARGET_DIR/release/medic-server"
LOAD="$CARGO_TARGET_DIR/release/examples/monitor_load"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$1/health/live" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not come up" >&2; exit 1
}

serve() { # port role db log
  DATABASE_URL=$3 PORT=$1 MEDIC_ROLE=$2 MEDIC_LOG_LEVEL=warn MEDIC_ADMIN_API_KEY=$ADMIN_KEY \
    MEDIC_ALLOW_ANONYMOUS_HEARTBEATS=true \
    RATE_LIMIT_HEARTBEAT_REQUESTS=1000000000 RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 \
    "$BIN" >"$4" 2>&1 &
  PIDS+=($!)
  wait_up "$1"
}

for size in $SIZES; do
  for backend in $BACKENDS; do
    PIDS=()
    case $backend in
      sqlite)
        rm -f "$WORK"/mon.db*
        serve "$PORT" all "sqlite://$WORK/mon.db" "$WORK/server.log"
        pids="${PIDS[0]}"; metrics="http://127.0.0.1:$PORT" ;;
      postgres)
        psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS medic_bench_mon WITH (FORCE)" >/dev/null
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE medic_bench_mon" >/dev/null
        db="${PG_ADMIN_URL%/*}/medic_bench_mon"
        serve "$PORT" api "$db" "$WORK/api.log"
        serve "$WPORT" worker "$db" "$WORK/worker.log"
        pids="${PIDS[0]},${PIDS[1]}"; metrics="http://127.0.0.1:$WPORT"
        # Every heartbeat rewrites its service's row, so the table needs vacuum and fresh
        # statistics while it grows from empty to $size rows (a plan made on an empty table
        # scans it). A server with autovacuum off (some test installations) gets the same
        # from this loop, as production PostgreSQL gets it from autovacuum.
        if [ "$(psql "$db" -tAc 'SHOW autovacuum')" != on ]; then
          echo "   (autovacuum is off on this server: VACUUM ANALYZE every 10 s instead)"
          ( while sleep 10; do psql "$db" -qc "VACUUM ANALYZE services, heartbeat_events, alerts" >/dev/null 2>&1 || true; done ) &
          PIDS+=($!)
        fi ;;
    esac
    echo "== $backend, $size services, interval ${INTERVAL}s, ${DURATION}s (pids $pids: api first)"
    "$LOAD" --base "http://127.0.0.1:$PORT" --metrics-base "$metrics" --key "$ADMIN_KEY" \
      --services "$size" --interval "$INTERVAL" --grace "$GRACE" --duration "$DURATION" --pids "$pids" \
      | sed "s/^RESULT/[$backend $size]/"
    for p in "${PIDS[@]}"; do kill -TERM "$p"; wait "$p" || true; done
    PIDS=()
  done
done

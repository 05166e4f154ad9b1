#!/usr/bin/env bash
# Memory soak benchmark: does the server's memory stay flat under steady load?
#
#   server/bench/soak.sh                                   # every configuration, 15 min each
#   BACKENDS=sqlite SERVICES=100 SCRAPE=off MINUTES=5 server/bench/soak.sh
#
# For each backend × service count × scrape setting it starts a release server on a fresh
# database, registers the services, creates a `write` API key and runs `server/examples/soak.rs`:
# RATE heartbeats/s (default 2,000) for MINUTES (default 15), RSS of the server process sampled
# every 10 s, `/metrics` read every 15 s when SCRAPE=15 ("off" = never). Each run ends with a
# RESULT line: achieved rate, failures, peak RSS and the least-squares slope of RSS over the
# second half of the run in MB/min (target ≤ 0.1).
#
# Needs: curl, python3; PostgreSQL at MEDIC_BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; a fresh database SOAK_DB, default medic_soak, is
# created for each run — give two concurrent series different SOAK_DB and BENCH_PORT values).
# NICE=-10 runs the server and the load generator at that niceness (negative values need root),
# so other work on the machine takes less of their CPU (see the autogroup note below).
# MEDIC_SERVER_BIN runs another server binary (e.g. an older build, to measure a regression);
# with MEDIC_SOAK_BIN as well, nothing is built.
set -euo pipefail
cd "$(dirname "$0")/../.."

MINUTES=${MINUTES:-15}
RATE=${RATE:-2000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
SERVICES=${SERVICES:-"100 10000"}
SCRAPE=${SCRAPE:-"off 15"}
PG_ADMIN_URL=${MEDIC_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${BENCH_PORT:-18183}
SOAK_DB=${SOAK_DB:-medic_soak}
NICE=${NICE:-}
RUN=()
[ -n "$NICE" ] && RUN=(nice -n "$NICE")
# With autogroup scheduling (sched_autogroup_enabled), niceness only orders the processes of one
# session against each other; the session's own autogroup niceness is what counts against other
# sessions. Set it too (run the script under `setsid` so that only its own session changes).
if [ -n "${NICE:-}" ] && [ -w "/proc/$$/autogroup" ]; then
  echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || echo "could not set the autogroup niceness" >&2
fi
ADMIN_KEY="soak-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

if [ -z "${MEDIC_SERVER_BIN:-}" ] || [ -z "${MEDIC_SOAK_BIN:-}" ]; then
  cargo build --release --locked -p medic-server --bin medic-server --example soak >&2
fi
BIN=${MEDIC_SERVER_BIN:-$CARGO_TARGET_DIR/release/medic-server}
SOAK=${MEDIC_SOAK_BIN:-$CARGO_TARGET_DIR/release/examples/soak}
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2; exit 1
}

for backend in $BACKENDS; do
  for services in $SERVICES; do
    for scrape in $SCRAPE; do
      case $backend in
        sqlite) rm -f "$WORK"/soak.db*; DB="sqlite://$WORK/soak.db" ;;
        postgres)
          psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $SOAK_DB WITH (FORCE)" >/dev/null
          psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $SOAK_DB" >/dev/null
          DB="${PG_ADMIN_URL%/*}/$SOAK_DB" ;;
      esac
      DATABASE_URL=$DB PORT=$PORT MEDIC_LOG_LEVEL=warn MEDIC_ADMIN_API_KEY=$ADMIN_KEY \
        RATE_LIMIT_HEARTBEAT_REQUESTS=1000000000 RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 \
        RATE_LIMIT_METRICS_REQUESTS=1000000 \
        "${RUN[@]}" "$BIN" >"$WORK/server.log" 2>&1 &
      PID=$!
      wait_up
      key=$(curl -fsS -X POST "http://127.0.0.1:$PORT/v2/api-keys" \
        -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        -d '{"name":"soak","scopes":"write"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["key"])')
      scrape_flag=()
      [ "$scrape" != off ] && scrape_flag=(--scrape "$scrape")
      echo "== $backend, $services services, scrape $scrape, $RATE/s, $MINUTES min"
      "${RUN[@]}" "$SOAK" --base "http://127.0.0.1:$PORT" --key "$ADMIN_KEY" --beat-key "$key" --pid "$PID" \
        --services "$services" --rate "$RATE" --minutes "$MINUTES" "${scrape_flag[@]}" |
        sed -u "s/^RESULT /RESULT backend=$backend /"
      kill -TERM "$PID"; wait "$PID" || true; PID=""
    done
  done
done

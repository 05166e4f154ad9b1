#!/usr/bin/env bash
# Agent fleet benchmark: many simulated agent sessions against one server.
#
#   server/bench/fleet.sh                       # 10,000 sessions, SQLite
#   AGENTS=2000 RATE=50 DURATION=30 server/bench/fleet.sh
#
# Builds medic-server and the load tool (server/examples/agent_fleet.rs), starts the server on a
# fresh SQLite file (plain HTTP, ws:// for the agents), opens AGENTS (default 10,000)
# protocol-level agent sessions from one process, each heartbeating every 20 s at a random
# phase, lets them idle IDLE seconds (default 40), then creates RATE runs/s (default 20) for
# DURATION seconds (default 60) on random agents through POST /v2/runs, which the simulated agents
# answer at once. Prints the server's RSS and CPU (idle with every session open, and during the
# runs) and created -> dispatched, dispatched -> result stored and created -> result stored
# p50/p99. Targets: server RSS <= 1 GB at 10,000 sessions, dispatch -> result p99 <= 50 ms.
#
# The load tool runs on the same machine as the server, so both share its cores. Each session is a
# socket at both ends: the file-descriptor limit of both processes is raised to NOFILE (default
# the hard limit, at most 65536; it must exceed AGENTS + 1000).
set -euo pipefail
cd "$(dirname "$0")/../.."

AGENTS=${AGENTS:-10000}
RATE=${RATE:-20}
DURATION=${DURATION:-60}
IDLE=${IDLE:-40}
HARD=$(ulimit -Hn)
NOFILE=${NOFILE:-$([ "$HARD" = unlimited ] && echo 65536 || echo $((HARD < 65536 ? HARD : 65536)))}
PORT=${BENCH_PORT:-18190}
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

ulimit -n "$NOFILE" || { echo "cannot raise the file-descriptor limit to $NOFILE (ulimit -Hn: $HARD)"; exit 1; }
[ "$NOFILE" -gt $((AGENTS + 1000)) ] || { echo "NOFILE=$NOFILE is too low for $AGENTS sessions"; exit 1; }
cargo build --release --locked -p medic-server --bin medic-server --example agent_fleet >&2
SERVER="$CARGO_TARGET_DIR/release/medic-server"
FLEET="$CARGO_TARGET_DIR/release/examples/agent_fleet"
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

DATABASE_URL="sqlite://$WORK/medic.db" PORT=$PORT MEDIC_LOG_LEVEL=warn \
  MEDIC_ADMIN_API_KEY=$ADMIN_KEY RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 \
  "$SERVER" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
echo "server idle before any session: rss=$(awk '/^VmRSS/ {print int($2/1024)}' "/proc/$PID/status")MiB"

"$FLEET" --base "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" --agents "$AGENTS" \
  --rate "$RATE" --duration "$DURATION" --idle "$IDLE" --pid "$PID"
grep -c '"level":"ERROR"\|ERROR' "$WORK/server.log" | sed 's/^/server log errors: /' || true

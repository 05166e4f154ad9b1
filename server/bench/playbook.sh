#!/usr/bin/env bash
# Playbook engine benchmark, on PostgreSQL.
#
#   server/bench/playbook.sh                                  # 1,000 executions, 5 s wait, 10,000-service burst
#   EXECUTIONS=200 WAIT=5 IDLE=30 BURST=1000 server/bench/playbook.sh   # scaled down
#   SERVER_BIN=/tmp/a/medic-server LOAD_BIN=/tmp/a/playbook_load server/bench/playbook.sh   # no build
#
# Builds medic-server and the load tool (server/examples/playbook_load.rs) in release, creates a
# fresh database `medic_bench_pb` (BENCH_DB) on PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test),
# starts one server on it, and has the tool:
#   1. start EXECUTIONS executions at once (webhook to a local recorder, a WAIT-second wait, a
#      condition) and print due -> step started p50/p99 (the condition against the wait's
#      deadline) from the stored step timelines, and how
#      often the recorder saw each Idempotency-Key;
#   2. after SETTLE seconds (default 15: PostgreSQL flushes its statistics late), sit IDLE
#      seconds with nothing due and print the database transactions per minute (the
#      whole server: engine, monitor, dispatchers) and the reads of the executions table per
#      minute (the engine's share);
#   3. with AGENTS real agents (default 10; 0 skips this), each connected with its own key and
#      the label role=bench, start AGENT_EXECUTIONS executions (default 200) at AGENT_RATE per
#      second (default 20) of a playbook whose one script step runs `true` on every such agent,
#      and print execution start -> first agent run dispatched p50/p99 (the run's dispatched_at);
#   4. register BURST services that never beat (interval BURST_INTERVAL s, no grace), matched by
#      a playbook with an alert trigger and circuit_breaker max_per_hour BURST_LIMIT, and print
#      how many executions the alerts started and skipped, over how long, and the breaker
#      trips counted.
# Each phase prints the server's CPU seconds per minute and RSS (from /proc).
#
# The load tool and the recorder run on the same machine as the server and PostgreSQL, so they
# share its cores. The server runs with the breaker's global limit raised (MEDIC_PLAYBOOK_BREAKER_GLOBAL,
# default 1000000 here) so that phase 1 is not skipped; phase 3's breaker is the playbook's own.
set -euo pipefail
cd "$(dirname "$0")/../.."

EXECUTIONS=${EXECUTIONS:-1000}
WAIT=${WAIT:-5}
IDLE=${IDLE:-60}
SETTLE=${SETTLE:-15}
BURST=${BURST:-10000}
AGENTS=${AGENTS:-10}
AGENT_EXECUTIONS=${AGENT_EXECUTIONS:-200}
AGENT_RATE=${AGENT_RATE:-20}
BURST_LIMIT=${BURST_LIMIT:-100}
BURST_INTERVAL=${BURST_INTERVAL:-30}
CONCURRENCY=${CONCURRENCY:-32}
GLOBAL=${GLOBAL:-1000000}
PORT=${BENCH_PORT:-18195}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
BENCH_DB=${BENCH_DB:-medic_bench_pb}
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

# SERVER_BIN / LOAD_BIN / AGENT_BIN: run binaries built elsewhere (e.g. two builds compared side
# by side) instead of building these.
if [ -z "${SERVER_BIN:-}" ] || [ -z "${LOAD_BIN:-}" ]; then
  cargo build --release --locked -p medic-server --bin medic-server --example playbook_load >&2
fi
if [ "$AGENTS" -gt 0 ] && [ -z "${AGENT_BIN:-}" ]; then
  cargo build --profile release-agent --locked -p medic-agent >&2
fi
AGENT=${AGENT_BIN:-"$CARGO_TARGET_DIR/release-agent/medic-agent"}
BIN=${SERVER_BIN:-"$CARGO_TARGET_DIR/release/medic-server"}
LOAD=${LOAD_BIN:-"$CARGO_TARGET_DIR/release/examples/playbook_load"}
WORK=$(mktemp -d)
chmod 0755 "$WORK" # the agents run as nobody when this runs as root
PID=""
AGENT_PIDS=()
cleanup() {
  for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null
psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
DB="${PG_ADMIN_URL%/*}/$BENCH_DB"

DATABASE_URL=$DB PORT=$PORT MEDIC_LOG_LEVEL=warn MEDIC_ADMIN_API_KEY=$ADMIN_KEY \
  MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS=true MEDIC_PLAYBOOK_BREAKER_GLOBAL=$GLOBAL \
  MEDIC_PLAYBOOK_CONCURRENCY=$CONCURRENCY MEDIC_MAX_CONNECTIONS_PER_IP=0 \
  RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 RATE_LIMIT_HEARTBEAT_REQUESTS=1000000000 \
  "$BIN" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { echo "the server did not come up"; cat "$WORK/server.log"; exit 1; }

# The agents: each with its own key granting role=bench, its allowlist pinning the script `true`.
if [ "$AGENTS" -gt 0 ]; then
  AS_USER=()
  if [ "$(id -u)" = 0 ]; then
    # As the packaged unit runs it: an unprivileged user (here nobody), scripts as that user.
    cp "$AGENT" "$WORK/medic-agent"
    AGENT="$WORK/medic-agent"
    AS_USER=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  fi
  for i in $(seq 1 "$AGENTS"); do
    dir="$WORK/agent-$i"
    mkdir -m 0700 "$dir"
    curl -fsS -X POST "http://127.0.0.1:$PORT/v2/api-keys" -H "Authorization: Bearer $ADMIN_KEY" \
      -H 'Content-Type: application/json' \
      -d "{\"name\":\"bench-agent-$i\",\"scopes\":\"agent\",\"labels\":{\"role\":\"bench\"}}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["key"])' >"$dir/credential"
    chmod 0600 "$dir/credential"
    cat >"$dir/agent.toml" <<TOML
server_url = "ws://127.0.0.1:$PORT"
allow_insecure_ws = true
credential_file = "$dir/credential"
agent_id = "bench-$i"
work_dir = "$dir/work"

[labels]
role = "bench"

[[allow]]
script = "bench-true"
sha256 = "$(printf 'true\n' | sha256sum | cut -d' ' -f1)"
interpreter = "sh"
TOML
    mkdir -m 0700 "$dir/work"
    [ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$dir"
    "${AS_USER[@]}" "$AGENT" --config "$dir/agent.toml" run 2>"$dir/agent.log" &
    AGENT_PIDS+=($!)
  done
  # The script's approval: another person's admin key (keys made through the API belong to
  # their creator's owner, and nobody approves their own script).
  APPROVER_KEY=$(DATABASE_URL=$DB MEDIC_LOG_LEVEL=warn "$BIN" api-key create --name bench-approver \
    --scopes admin --owner bench-approver)
  connected() {
    curl -fsS "http://127.0.0.1:$PORT/v2/agents?label.role=bench&connected=1&limit=1" -H "Authorization: Bearer $ADMIN_KEY" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["total_count"])'
  }
  for _ in $(seq 1 200); do [ "$(connected)" -ge "$AGENTS" ] && break; sleep 0.1; done
  [ "$(connected)" -ge "$AGENTS" ] || { echo "only $(connected) of $AGENTS agents connected"; tail -5 "$WORK"/agent-*/agent.log; exit 1; }
fi

echo "== medic-server pid $PID on $DB, MEDIC_PLAYBOOK_CONCURRENCY=$CONCURRENCY, $(nproc) cores"
"$LOAD" --base "http://127.0.0.1:$PORT" --key "$ADMIN_KEY" --db "$DB" --pid "$PID" \
  --executions "$EXECUTIONS" --wait "$WAIT" --idle "$IDLE" --settle "$SETTLE" --burst "$BURST" \
  --burst-limit "$BURST_LIMIT" --burst-interval "$BURST_INTERVAL" \
  --agents "$AGENTS" --agent-executions "$AGENT_EXECUTIONS" --agent-rate "$AGENT_RATE" \
  ${APPROVER_KEY:+--approver-key "$APPROVER_KEY"}
grep -ciE '"level":"(ERROR|WARN)"|ERROR|WARN' "$WORK/server.log" | sed 's/^/server log warnings and errors: /' || true
# The commonest of them, by message (each alert the burst opens logs "alert opened" at WARN).
grep -iE '"level":"(ERROR|WARN)"' "$WORK/server.log" |
  python3 -c 'import json,sys,collections; c=collections.Counter(json.loads(l).get("message", "?") for l in sys.stdin); [print(f"  {n} x {m}") for m,n in c.most_common(5)]' || true
kill -TERM "$PID"; wait "$PID" || true; PID=""
psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null

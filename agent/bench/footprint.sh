#!/usr/bin/env bash
# Agent footprint: the stripped binary's size, and the agent's idle memory and threads while it
# is connected over TLS to a real medic-server and sending heartbeats.
#
#   agent/bench/footprint.sh              # IDLE=60 seconds connected before measuring
#   TARGET=x86_64-unknown-linux-gnu agent/bench/footprint.sh   # the glibc build, to compare
#
# Builds `medic-agent` with the shipping profile (release-agent) for TARGET (default: the
# static x86_64-unknown-linux-musl binary the packages ship; needs musl-tools) and
# `medic-server` (release),
# starts the server on a fresh SQLite file (plain HTTP on 127.0.0.1), puts a TLS terminator in
# front of it (socat with OpenSSL, the test certificate in agent/tests/fixtures/tls), starts the
# agent against wss://localhost:<port> trusting the test CA, with its metrics listener on, waits
# until the server lists it connected, lets it idle IDLE seconds (the server asks for a heartbeat
# every 20 s), checks that its heartbeats reached the server, and prints the binary size, the
# agent's RSS (VmRSS), peak RSS (VmHWM) and thread count from /proc, and one metrics scrape.
# Targets: binary <= 2.5 MB (2,621,440 bytes), idle RSS <= 4 MB, one thread when idle.
#
# Needs: curl, python3, socat built with OpenSSL (apt-get install socat). Linux (/proc).
set -euo pipefail
cd "$(dirname "$0")/../.."

IDLE=${IDLE:-60}
PORT=${BENCH_PORT:-18185}
TLS_PORT=$((PORT + 1))
METRICS_PORT=$((PORT + 2))
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
TLS=agent/tests/fixtures/tls

command -v socat >/dev/null || { echo "socat is required (apt-get install socat)"; exit 1; }
TARGET=${TARGET:-x86_64-unknown-linux-musl}
cargo build --profile release-agent --locked -p medic-agent --target "$TARGET" >&2
# With an example, like the other benchmark scripts, so they all share one server build (building
# examples turns on dev-dependency features, which would otherwise mean a second build).
# SERVER=path uses a medic-server built already (any profile): the agent's figures do not
# depend on it.
if [ -z "${SERVER:-}" ]; then
  cargo build --release --locked -p medic-server --bin medic-server --example agent_roundtrip >&2
  SERVER="$CARGO_TARGET_DIR/release/medic-server"
fi
AGENT="$CARGO_TARGET_DIR/$TARGET/release-agent/medic-agent"

WORK=$(mktemp -d)
chmod 0755 "$WORK"   # scripts run as `run_as` (nobody) when this runs as root
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

api() { # method path [json]
  curl -fsS -X "$1" "http://127.0.0.1:$PORT$2" -H "Authorization: Bearer $ADMIN_KEY" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['results']$1)"; }

DATABASE_URL="sqlite://$WORK/medic.db" PORT=$PORT MEDIC_LOG_LEVEL=warn \
  MEDIC_ADMIN_API_KEY=$ADMIN_KEY "$SERVER" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done

socat "OPENSSL-LISTEN:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$TLS/server.pem,key=$TLS/server.key,verify=0" \
  "TCP:127.0.0.1:$PORT" 2>"$WORK/socat.log" &
PIDS+=($!)

api POST /v2/api-keys '{"name":"footprint-agent","scopes":"agent"}' | field "['key']" >"$WORK/credential"
RUN_AS=""
[ "$(id -u)" = 0 ] && RUN_AS='run_as = "nobody"'
cat >"$WORK/agent.toml" <<TOML
server_url = "wss://localhost:$TLS_PORT"
credential_file = "$WORK/credential"
ca_file = "$PWD/$TLS/ca.pem"
agent_id = "footprint"
work_dir = "$WORK/agent-work"
metrics_listen = "127.0.0.1:$METRICS_PORT"
$RUN_AS
TOML
"$AGENT" --config "$WORK/agent.toml" run 2>"$WORK/agent.log" &
APID=$!
PIDS+=($APID)

for _ in $(seq 1 100); do
  [ "$(api GET /v2/agents/footprint 2>/dev/null | field "['connected']" 2>/dev/null)" = True ] && break
  sleep 0.1
done
[ "$(api GET /v2/agents/footprint | field "['connected']")" = True ] ||
  { echo "the agent did not connect"; cat "$WORK/agent.log"; exit 1; }
seen0=$(api GET /v2/agents/footprint | field "['last_seen_at']")
echo "agent connected over TLS (socat -> medic-server); idling ${IDLE}s..." >&2
sleep "$IDLE"
seen1=$(api GET /v2/agents/footprint | field "['last_seen_at']")
[ "$seen0" != "$seen1" ] || { echo "no heartbeat reached the server in ${IDLE}s"; exit 1; }
status=$(cat "/proc/$APID/status")
rss=$(awk '/^VmRSS/ {print $2}' <<<"$status")
hwm=$(awk '/^VmHWM/ {print $2}' <<<"$status")
threads=$(awk '/^Threads/ {print $2}' <<<"$status")
size=$(stat -c %s "$AGENT")
stripped=$(objcopy --strip-all "$AGENT" "$WORK/stripped" 2>/dev/null && stat -c %s "$WORK/stripped" || echo "$size")

echo "target:  $TARGET ($(file -b "$AGENT" | cut -d, -f1-5))"
printf 'binary:  %s bytes (%.2f MB; after strip --strip-all: %s bytes)  target <= 2.5 MB\n' \
  "$size" "$(echo "$size / 1048576" | bc -l)" "$stripped"
printf 'idle:    RSS %s KiB (%.2f MiB), peak RSS %s KiB, %s thread(s)  target <= 4 MB, 1 thread\n' \
  "$rss" "$(echo "$rss / 1024" | bc -l)" "$hwm" "$threads"
echo "         connected over TLS ${IDLE}s; heartbeats seen by the server: last_seen_at $seen0 -> $seen1"
echo "metrics: $(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^medic_agent_(connected|reconnects_total) ' | tr '\n' ' ')"

#!/usr/bin/env bash
# Run round trip on loopback with the real agent: run created -> result stored.
#
#   agent/bench/roundtrip.sh              # RUNS=300 sequential runs of a script that is `true`
#
# Builds `medic-agent` (release-agent) and `medic-server` (release) with the round-trip timer
# (server/examples/agent_roundtrip.rs), starts the server on a fresh SQLite file, starts one real
# agent dialling ws://127.0.0.1 (loopback, so no TLS) whose allowlist pins the script, then has
# the timer register and approve the script and run it RUNS times, one after the other, each
# timed from `POST /v2/runs` sent to the answer of one `GET /v2/runs/{id}?wait_seconds=30`
# (which the server gives as soon as the result is stored).
# Every run really forks `sh` with the script file, as the agent always does.
# Targets: p50 <= 5 ms, p99 <= 20 ms.
#
# To look inside, AGENT_WRAP / SERVER_WRAP prefix the agent / server command, e.g.
# AGENT_WRAP="strace -f -tt -o /tmp/agent.trace" RUNS=30 agent/bench/roundtrip.sh
# AGENT_BIN=/path/to/medic-agent runs another build of the agent (to compare two side by side).
#
# Needs: curl, python3, sha256sum. Linux.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-300}
PORT=${BENCH_PORT:-18191}
ADMIN_KEY="bench-admin-key-0123456789abcdef0123456789"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --profile release-agent --locked -p medic-agent >&2
cargo build --release --locked -p medic-server --bin medic-server --example agent_roundtrip >&2
AGENT="${AGENT_BIN:-$CARGO_TARGET_DIR/release-agent/medic-agent}"
SERVER="$CARGO_TARGET_DIR/release/medic-server"
TIMER="$CARGO_TARGET_DIR/release/examples/agent_roundtrip"

WORK=$(mktemp -d)
chmod 0755 "$WORK"   # the agent runs as nobody when this runs as root
PIDS=()
cleanup() { # (children too: a *_WRAP command leaves its child running when killed)
  for p in "${PIDS[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"
}
trap cleanup EXIT

api() { # method path [json]
  curl -fsS -X "$1" "http://127.0.0.1:$PORT$2" -H "Authorization: Bearer $ADMIN_KEY" \
    -H 'Content-Type: application/json' ${3:+-d "$3"}
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['results']$1)"; }

DATABASE_URL="sqlite://$WORK/medic.db" PORT=$PORT MEDIC_LOG_LEVEL=warn \
  MEDIC_ADMIN_API_KEY=$ADMIN_KEY RATE_LIMIT_MANAGEMENT_REQUESTS=1000000000 \
  ${SERVER_WRAP:-} "$SERVER" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done

api POST /v2/api-keys '{"name":"roundtrip-agent","scopes":"agent"}' | field "['key']" >"$WORK/credential"
AS_USER=()
if [ "$(id -u)" = 0 ]; then
  # As the packaged systemd unit runs it: as its own unprivileged user, scripts as that user
  # too (no `run_as`). Here that user is `nobody`, so the binary and its files move into $WORK.
  cp "$AGENT" "$WORK/medic-agent"
  AGENT="$WORK/medic-agent"
  mkdir -m 0700 "$WORK/agent-work"
  chmod 0600 "$WORK/credential"
  chown nobody:nogroup "$WORK/agent-work" "$WORK/credential"
  AS_USER=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi
cat >"$WORK/agent.toml" <<TOML
server_url = "ws://127.0.0.1:$PORT"
allow_insecure_ws = true
credential_file = "$WORK/credential"
agent_id = "roundtrip"
work_dir = "$WORK/agent-work"

[[allow]]
script = "bench-true"
sha256 = "$(printf 'true\n' | sha256sum | cut -d' ' -f1)"
interpreter = "sh"
TOML
${AGENT_WRAP:-} "${AS_USER[@]}" "$AGENT" --config "$WORK/agent.toml" run 2>"$WORK/agent.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  [ "$(api GET /v2/agents/roundtrip 2>/dev/null | field "['connected']" 2>/dev/null)" = True ] && break
  sleep 0.1
done

"$TIMER" --base "http://127.0.0.1:$PORT" --admin-key "$ADMIN_KEY" --agent roundtrip --runs "$RUNS"

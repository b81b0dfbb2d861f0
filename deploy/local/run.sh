#!/usr/bin/env bash
# The whole local pipeline on the embedded engine: installs moto (first run), starts it on
# 127.0.0.1, creates every AWS resource, creates a demo tenant, starts every process built so
# far, sends a few demo submissions, and prints where to look. Ctrl-C stops everything cleanly.
set -euo pipefail
source "$(dirname "$0")/engine.sh"
cd "$ROOT"

PORT="${FORMBRIDGE_LOCAL_PORT:-4566}"
if python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1',$PORT))==0 else 1)"; then
  echo "port $PORT is already in use (is another run.sh running?). Set FORMBRIDGE_LOCAL_PORT to use another." >&2
  exit 1
fi

ensure_engine_installed
echo "==> building" >&2
cargo build --workspace --bins --quiet
BIN="$ROOT/target/debug"

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  echo >&2; echo "==> stopping" >&2
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_engine
  echo "==> stopped" >&2
}
trap cleanup INT TERM EXIT

start_engine "$PORT"
echo "==> local engine at $AWS_ENDPOINT_URL" >&2
"$BIN/formbridge-admin" bootstrap >"$STATE/bootstrap.json"
"$BIN/formbridge-admin" tenant show --id demo >/dev/null 2>&1 \
  || "$BIN/formbridge-admin" tenant create --id demo --name "Demo Agency" --shards 4 >/dev/null

"$BIN/formbridge-persister" >"$STATE/persister.log" 2>&1 &
PIDS+=($!)

"$BIN/formbridge-admin" demo enqueue --tenant demo --count 20 >/dev/null

cat >"$STATE/env" <<ENV
export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export PATH="$BIN:\$PATH"
ENV

cat <<MSG

Form-Bridge is running locally.
  engine     $AWS_ENDPOINT_URL (moto server; state lives in memory until Ctrl-C)
  resources  $STATE/bootstrap.json
  persister  logs in $STATE/persister.log
  tenant     demo (4 write shards); 20 demo submissions were queued

In another terminal:
  source $STATE/env
  formbridge-admin submissions list --tenant demo --limit 5     # stored, decoded, newest first
  formbridge-admin demo enqueue --tenant demo --count 100       # more traffic onto the queue
  formbridge-admin tenant show --id demo                        # shard history, retention

Ctrl-C here stops everything.
MSG

wait "${PIDS[@]}"

#!/usr/bin/env bash
# The whole local pipeline on the embedded engine: installs moto (first run), starts it on
# 127.0.0.1, creates every AWS resource, creates a demo tenant, starts every process built so
# far, sends a few demo submissions, runs a short gentle load (formbridge-loadtest, with its own
# verifying receiver) and prints where to look. Ctrl-C stops everything cleanly.
set -euo pipefail
source "$(dirname "$0")/engine.sh"
cd "$ROOT"

PORT="${FORMBRIDGE_LOCAL_PORT:-4566}"
INGEST_PORT="${FORMBRIDGE_INGEST_PORT:-8080}"
RECEIVER_PORT="${FORMBRIDGE_RECEIVER_PORT:-9000}"
API_PORT="${FORMBRIDGE_API_PORT:-8090}"
# The load run's own receiver, and the workers' metrics listeners (the load run reads their
# AWS request counters).
LOAD_RECEIVER_PORT=$((RECEIVER_PORT + 100))
PERSISTER_METRICS=$((RECEIVER_PORT + 101))
AGGREGATOR_METRICS=$((RECEIVER_PORT + 102))
DELIVERY_METRICS=$((RECEIVER_PORT + 103))
for p in "$PORT" "$INGEST_PORT" "$API_PORT" "$RECEIVER_PORT" "$LOAD_RECEIVER_PORT" "$PERSISTER_METRICS" "$AGGREGATOR_METRICS" "$DELIVERY_METRICS"; do
  if python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1',$p))==0 else 1)"; then
    echo "port $p is already in use (is another run.sh running?). Set FORMBRIDGE_LOCAL_PORT / FORMBRIDGE_INGEST_PORT / FORMBRIDGE_API_PORT / FORMBRIDGE_RECEIVER_PORT." >&2
    exit 1
  fi
done

ensure_engine_installed
echo "==> building" >&2
# FORMBRIDGE_PROFILE=release builds optimised binaries (for load measurements; slower to build).
PROFILE="${FORMBRIDGE_PROFILE:-debug}"
case "$PROFILE" in
  debug) cargo build --workspace --bins --quiet ;;
  release) cargo build --workspace --bins --quiet --release ;;
  *) echo "FORMBRIDGE_PROFILE must be debug or release, not '$PROFILE'" >&2; exit 2 ;;
esac
BIN="$ROOT/target/$PROFILE"

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

# The master key that seals signing secrets: made once for this checkout, never committed.
mkdir -p "$STATE"
if [ ! -s "$STATE/master.keys" ]; then
  python3 -c 'import os,base64; print("local1:" + base64.b64encode(os.urandom(32)).decode())' >"$STATE/master.keys"
  chmod 600 "$STATE/master.keys"
fi
export FORMBRIDGE_MASTER_KEYS_FILE="$STATE/master.keys"
export INGEST_LISTEN="127.0.0.1:$INGEST_PORT"

start_engine "$PORT"
echo "==> local engine at $AWS_ENDPOINT_URL" >&2
"$BIN/formbridge-admin" bootstrap >"$STATE/bootstrap.json"
"$BIN/formbridge-admin" tenant show --id demo >/dev/null 2>&1 \
  || "$BIN/formbridge-admin" tenant create --id demo --name "Demo Agency" --shards 4 >/dev/null

"$BIN/formbridge-admin" site add --tenant demo --domain demo.example.com \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["sites"][0]["signing_secret"])' >"$STATE/demo-site.secret"
chmod 600 "$STATE/demo-site.secret"

# A destination for the demo tenant: the demo webhook receiver below, which verifies every
# delivery's signature with this destination's secret.
"$BIN/formbridge-admin" destination create --tenant demo --name "Demo receiver" \
  --url "http://127.0.0.1:$RECEIVER_PORT/hook" --retry-schedule 5s,30s,2m \
  | python3 -c 'import json,sys; c=json.load(sys.stdin)["created"][0]; print(c["signing_secret"]); print(c["destination"]["destination_id"], file=sys.stderr)' \
  >"$STATE/demo-destination.secret" 2>"$STATE/demo-destination.id"
chmod 600 "$STATE/demo-destination.secret"
DEST_ID="$(cat "$STATE/demo-destination.id")"
: >"$STATE/receiver.log"
"$BIN/formbridge-admin" demo receive --listen "127.0.0.1:$RECEIVER_PORT" \
  --secret-file "$STATE/demo-destination.secret" --log "$STATE/receiver.log" >/dev/null 2>"$STATE/receiver.err" &
PIDS+=($!)

PERSISTER_METRICS_ADDR="127.0.0.1:$PERSISTER_METRICS" "$BIN/formbridge-persister" >"$STATE/persister.log" 2>&1 &
PIDS+=($!)
"$BIN/formbridge-ingest" >"$STATE/ingest.log" 2>&1 &
PIDS+=($!)
# FORMBRIDGE_NO_AGGREGATOR=1 leaves the aggregator out (load measurements without the local
# engine's slow transactions; see loadtest/RESULTS.md).
if [ "${FORMBRIDGE_NO_AGGREGATOR:-0}" != 1 ]; then
  AGGREGATOR_METRICS_ADDR="127.0.0.1:$AGGREGATOR_METRICS" "$BIN/formbridge-aggregator" >"$STATE/aggregator.log" 2>&1 &
  PIDS+=($!)
fi
# Loopback destinations are refused unless allowed: this is a local demo.
DELIVERY_ALLOW_LOOPBACK=true DELIVERY_METRICS_ADDR="127.0.0.1:$DELIVERY_METRICS" \
  "$BIN/formbridge-delivery" >"$STATE/delivery.log" 2>&1 &
PIDS+=($!)
# The tenant API and dashboard. Plain HTTP on loopback, so the session cookie is not Secure here.
API_LISTEN="127.0.0.1:$API_PORT" API_SECURE_COOKIES=false "$BIN/formbridge-api" >"$STATE/api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$INGEST_PORT/healthz" >/dev/null 2>&1 \
    && curl -fs "http://127.0.0.1:$API_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
# A one-time sign-in link for the demo tenant's dashboard, and an API key (both shown only now).
PORTAL_LINK="$("$BIN/formbridge-admin" portal-link --tenant demo --ttl 1h --base-url "http://127.0.0.1:$API_PORT" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])')"
"$BIN/formbridge-admin" api-key create --tenant demo --name "local demo" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])' >"$STATE/demo-api.key"
chmod 600 "$STATE/demo-api.key"

"$BIN/formbridge-admin" demo post --url "http://127.0.0.1:$INGEST_PORT" --secret-file "$STATE/demo-site.secret" --count 5 >/dev/null
"$BIN/formbridge-admin" demo enqueue --tenant demo --count 15 >/dev/null

# A short, gentle load through the real path (signed POSTs to ingest): 3 generated tenants with
# Zipf-skewed volume, 150 submissions at 5/s of real, human-written text (the committed held-out
# sample of loadtest/corpus/, never trained on), each delivered to the load run's own verifying
# receiver; then the engine's ceiling (1 s) and the report. It runs in the background.
rm -f "$STATE/loadtest-report.json"
"$BIN/formbridge-loadtest" run --target http --ingest-url "http://127.0.0.1:$INGEST_PORT" \
  --rate 5 --count 150 --duration-s 60 --tenants 3 --receiver "127.0.0.1:$LOAD_RECEIVER_PORT" \
  --ceiling-s 1 --quiet --report "$STATE/loadtest-report.json" --corpus "$ROOT/loadtest/corpus/sample/heldout.jsonl" \
  --metrics-url "http://127.0.0.1:$INGEST_PORT/metrics" --metrics-url "http://127.0.0.1:$PERSISTER_METRICS/metrics" \
  --metrics-url "http://127.0.0.1:$AGGREGATOR_METRICS/metrics" --metrics-url "http://127.0.0.1:$DELIVERY_METRICS/metrics" \
  >"$STATE/loadtest.log" 2>&1 &
PIDS+=($!)

cat >"$STATE/env" <<ENV
export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export FORMBRIDGE_MASTER_KEYS_FILE=$STATE/master.keys
export PATH="$BIN:\$PATH"
ENV

cat <<MSG

Form-Bridge is running locally.
  engine     $AWS_ENDPOINT_URL (moto server; state lives in memory until Ctrl-C)
  resources  $STATE/bootstrap.json
  ingest     http://127.0.0.1:$INGEST_PORT/v1/submissions   (health: /healthz, metrics: /metrics; logs $STATE/ingest.log)
  persister  logs in $STATE/persister.log
  aggregator logs in $STATE/aggregator.log (hourly and daily metric items from the table's stream)
  delivery   logs in $STATE/delivery.log (fans each submission out to the tenant's destinations, signed)
  receiver   http://127.0.0.1:$RECEIVER_PORT/hook, destination $DEST_ID of tenant demo
             (verifies each delivery; one JSON line per delivery in $STATE/receiver.log; counts at /stats)
  tenant     demo (4 write shards), site demo.example.com (secret in $STATE/demo-site.secret)
  traffic    5 signed posts through ingest and 15 messages straight onto the queue were sent
  load       a gentle load run is under way (150 signed posts at 5/s to 3 generated tenants, ~40 s):
             progress and then its report table in $STATE/loadtest.log, JSON in $STATE/loadtest-report.json
             (throughput, latency percentiles, losses, duplicates, storage, cost, engine ceiling, goals)
  dashboard  $PORTAL_LINK
             (a one-time sign-in link for tenant demo, valid 1 h; a new one: formbridge-admin portal-link --tenant demo)
  api        http://127.0.0.1:$API_PORT/v1/ (OpenAPI: http://127.0.0.1:$API_PORT/v1/openapi.json; key for demo in $STATE/demo-api.key; logs $STATE/api.log)
  metrics    Prometheus: ingest :$INGEST_PORT/metrics, persister :$PERSISTER_METRICS, aggregator :$AGGREGATOR_METRICS, delivery :$DELIVERY_METRICS

In another terminal:
  source $STATE/env
  formbridge-admin submissions list --tenant demo --limit 5     # stored, decoded, newest first
  curl -s -H "Authorization: Bearer \$(cat $STATE/demo-api.key)" "http://127.0.0.1:$API_PORT/v1/submissions?limit=5"  # the same, over the API
  curl -s -H "Authorization: Bearer \$(cat $STATE/demo-api.key)" "http://127.0.0.1:$API_PORT/v1/metrics?granularity=hour"
  formbridge-admin demo post --url http://127.0.0.1:$INGEST_PORT --secret-file $STATE/demo-site.secret --count 20
  curl -s http://127.0.0.1:$RECEIVER_PORT/stats                  # deliveries received, verified, duplicates
  tail -n 3 $STATE/receiver.log                                   # the latest deliveries, as the receiver saw them
  formbridge-admin delivery history --tenant demo --submission <id from the list>   # every attempt, per destination
  formbridge-admin delivery health --tenant demo --destination $DEST_ID
  formbridge-admin delivery replay --tenant demo --status failed --dry-run
  formbridge-admin metrics --tenant demo --granularity hour     # pre-aggregated counts, bytes, write units, per form
  formbridge-admin site show --domain demo.example.com           # site status (never its secret)
  formbridge-admin tenant show --id demo                         # shard history, retention
  cat $STATE/loadtest.log                                         # the load run's report, once it is done
  formbridge-admin metrics --tenant \$(python3 -c 'import json; print(json.load(open("$STATE/loadtest-report.json"))["tenants"][0])') --granularity hour
                                                                  # the hot load tenant's metrics (after the load run)
  curl -s -XPOST http://127.0.0.1:$INGEST_PORT/v1/submissions -H 'content-type: application/json' -d '{}'   # a 401, as JSON

Ctrl-C here stops everything.
MSG

wait "${PIDS[@]}"

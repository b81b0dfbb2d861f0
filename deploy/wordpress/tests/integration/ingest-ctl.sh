#!/usr/bin/env bash
# Starts or stops formbridge-ingest for the WordPress integration test (test.sh uses it, and so
# does the test itself to take ingest down and bring it back). Reads FORMBRIDGE_BIN_DIR,
# FB_IT_WORK (pid and log files), INGEST_LISTEN, and the AWS/master-key environment test.sh set.
set -euo pipefail
pidfile="$FB_IT_WORK/ingest.pid"
url="http://$INGEST_LISTEN/healthz"

up() { python3 -c "import urllib.request,sys; urllib.request.urlopen('$url', timeout=1)" 2>/dev/null; }

case "${1:-}" in
  start)
    # Output to a file, never to our caller's pipe: PHP's exec() would wait for it to close.
    "$FORMBRIDGE_BIN_DIR/formbridge-ingest" >>"$FB_IT_WORK/ingest.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      up && exit 0
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "ingest exited; see $FB_IT_WORK/ingest.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "ingest did not answer on $url" >&2; exit 1 ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; exit 0; }
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

# Sourced by run.sh and test.sh: installs the local AWS engine (moto server, pinned, in a
# project-local virtualenv) on first use and starts it on 127.0.0.1.
# After `start_engine`, AWS_ENDPOINT_URL and dummy credentials point every SDK at it.

MOTO_VERSION="5.2.5"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
STATE="$ROOT/.local"

ensure_engine_installed() {
  if ! [ -x "$VENV/bin/moto_server" ] || ! [ -f "$VENV/.moto-$MOTO_VERSION" ]; then
    echo "==> installing moto[server]==$MOTO_VERSION into $VENV (first run only)" >&2
    command -v python3 >/dev/null || { echo "python3 is required" >&2; return 1; }
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    touch "$VENV/.moto-$MOTO_VERSION"
  fi
  ensure_engine_patched
}

# ensure_engine_patched: our fixes to moto (deploy/local/formbridge_moto_patches.py), imported
# by every Python of the virtualenv through a .pth file, so each way of starting the engine
# (this script, the chaos run, the tests) gets them. Copied again whenever the file changed.
ensure_engine_patched() {
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return 1
  if ! cmp -s "$ROOT/deploy/local/formbridge_moto_patches.py" "$site/formbridge_moto_patches.py"; then
    cp "$ROOT/deploy/local/formbridge_moto_patches.py" "$site/formbridge_moto_patches.py"
  fi
  [ -f "$site/formbridge_moto_patches.pth" ] || echo "import formbridge_moto_patches" >"$site/formbridge_moto_patches.pth"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_engine [PORT]: starts moto in the background; sets ENGINE_PID and AWS_* variables.
start_engine() {
  local port="${1:-$(free_port)}"
  mkdir -p "$STATE"
  # Its own session: a Ctrl-C in the terminal must reach our processes first, not the engine
  # they are still writing to; stop_engine ends it last.
  setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$STATE/moto-$port.log" 2>&1 &
  ENGINE_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/', timeout=1)" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$ENGINE_PID" 2>/dev/null; then
      echo "moto server failed to start; see $STATE/moto-$port.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "moto server did not answer on $AWS_ENDPOINT_URL" >&2
  return 1
}

stop_engine() {
  if [ -n "${ENGINE_PID:-}" ] && kill -0 "$ENGINE_PID" 2>/dev/null; then
    kill "$ENGINE_PID" 2>/dev/null
    wait "$ENGINE_PID" 2>/dev/null
  fi
}

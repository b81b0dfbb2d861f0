#!/usr/bin/env bash
# Makes the dashboard's browser test runnable: Debian's Chromium (Playwright's own browser
# download does not work on these machines) and playwright-core from the lock file. Idempotent;
# ./deploy/local/test.sh runs it before the tests.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium from Debian" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "run as root, or install it first: apt-get install chromium" >&2
    exit 1
  fi
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    exit 1
  fi
  rm -f "$log"
fi

# Reinstall only when the lock file changed since the last install.
stamp="node_modules/.lock-sha256"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing the browser test's npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" >"$stamp"
fi

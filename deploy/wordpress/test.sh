#!/usr/bin/env bash
# Tests the WordPress plugin (deploy/wordpress/form-bridge/):
#   1. installs what it needs from Debian if missing (PHP 8.2 with mysqli/curl/xml/mbstring,
#      MariaDB, WordPress 6.1, PHPUnit 9.6);
#   2. runs the PHPUnit unit tests (no WordPress, no network);
#   3. starts a throwaway MariaDB (its own datadir and socket under a temp dir), installs WordPress
#      into it through PHP bootstrap scripts, activates the plugin and serves the site with
#      `php -S` on 127.0.0.1;
#   4. starts the local engine (deploy/local/engine.sh), creates the resources, a tenant and a
#      site, and runs the real formbridge-ingest and formbridge-persister;
#   5. runs the integration test (tests/integration/WordPressIntegrationTest.php) against it all.
# Exits non-zero on any failure and stops everything it started.
#
# It never builds Rust: the binaries must exist in $FORMBRIDGE_BIN_DIR (default target/debug;
# `cargo build --workspace --bins` makes them). Ports are free ones on 127.0.0.1.
# Arguments go to the integration PHPUnit run (e.g. --filter 422). FORMBRIDGE_WP_KEEP=1 keeps the
# temp dir (logs, database, WordPress) after the run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../local/engine.sh" # sets ROOT, free_port, ensure_engine_installed, start_engine, stop_engine
BIN="${FORMBRIDGE_BIN_DIR:-$ROOT/target/debug}"
TESTS="$HERE/tests"
TENANT="wp-it"
SITE="wp-it.example.test"

log() { echo "==> $*" >&2; }

# --- 1. packages --------------------------------------------------------------------------------

missing_packages() {
  local need=() modules=""
  command -v php >/dev/null && modules="$(php -m)" || need+=(php-cli)
  grep -qx mysqli <<<"$modules" || need+=(php-mysql)
  grep -qx curl <<<"$modules" || need+=(php-curl)
  grep -qx xml <<<"$modules" || need+=(php-xml)
  grep -qx mbstring <<<"$modules" || need+=(php-mbstring)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
  [ -f /usr/share/wordpress/wp-load.php ] || need+=(wordpress)
  command -v phpunit >/dev/null || need+=(phpunit)
  echo "${need[@]}"
}

ensure_packages() {
  local need
  need="$(missing_packages)"
  [ -z "$need" ] && return 0
  log "installing from Debian: $need"
  if [ "$(id -u)" != 0 ]; then
    echo "run as root, or install these first: apt-get install $need" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local apt_log
  apt_log="$(mktemp)"
  # shellcheck disable=SC2086 # a list of package names
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends $need; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    rm -f "$apt_log"
    exit 1
  fi
  rm -f "$apt_log"
  need="$(missing_packages)"
  [ -z "$need" ] || { echo "still missing after apt-get: $need" >&2; exit 1; }
}

# --- processes and clean-up ---------------------------------------------------------------------

WORK=""
PIDS=()
PHP_SERVER_GROUP=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$WORK" ]; then
    [ -x "$TESTS/integration/ingest-ctl.sh" ] && FB_IT_WORK="$WORK" "$TESTS/integration/ingest-ctl.sh" stop || true
    if [ -n "$PHP_SERVER_GROUP" ]; then
      kill -TERM -- "-$PHP_SERVER_GROUP" 2>/dev/null || true
      wait "$PHP_SERVER_GROUP" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  stop_engine
  if [ -n "$WORK" ]; then
    if [ "$status" != 0 ]; then
      for f in ingest.log persister.log php-server.log; do
        [ -s "$WORK/$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$WORK/$f" >&2; }
      done
      # WordPress 6.1 on PHP 8.2 logs many deprecations of its own; show only the rest.
      grep -v 'PHP Deprecated' "$WORK/wp-debug.log" 2>/dev/null | tail -n 15 >&2 || true
    fi
    if [ "${FORMBRIDGE_WP_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for DESCRIPTION COMMAND...: up to 20 s
  local what="$1"; shift
  for _ in $(seq 1 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "timed out waiting for $what" >&2
  return 1
}

# --- 3. MariaDB and WordPress -------------------------------------------------------------------

start_mariadb() {
  local dir="$WORK/mariadb"
  mkdir -p "$dir/data"
  DB_SOCKET="$dir/mysqld.sock"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
    --auth-root-authentication-method=normal --skip-test-db >"$WORK/mariadb-install.log" 2>&1
  mariadbd --no-defaults --datadir="$dir/data" --socket="$DB_SOCKET" --skip-networking \
    --user="$(id -un)" --pid-file="$dir/mysqld.pid" --log-error="$WORK/mariadb.err" \
    --innodb-buffer-pool-size=32M --skip-log-bin 2>>"$WORK/mariadb.err" &
  PIDS+=($!)
  wait_for "MariaDB" mariadb-admin --no-defaults --socket="$DB_SOCKET" -uroot ping
  mariadb --no-defaults --socket="$DB_SOCKET" -uroot -e 'CREATE DATABASE wordpress CHARACTER SET utf8mb4'
}

salt() { php -r 'echo bin2hex(random_bytes(32));'; }

write_wp_config() { # the site's own wp-config.php, replacing Debian's /etc/wordpress lookup
  local config="$WP_DIR/wp-config.php"
  rm -f "$config"
  {
    echo "<?php"
    echo "define( 'DB_NAME', 'wordpress' );"
    echo "define( 'DB_USER', 'root' );"
    echo "define( 'DB_PASSWORD', '' );"
    echo "define( 'DB_HOST', 'localhost:$DB_SOCKET' );"
    echo "define( 'DB_CHARSET', 'utf8mb4' );"
    echo "define( 'DB_COLLATE', '' );"
    for name in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
      echo "define( '$name', '$(salt)' );"
    done
    echo "\$table_prefix = 'wp_';"
    echo "define( 'WP_DEBUG', true );"
    echo "define( 'WP_DEBUG_DISPLAY', false );"
    echo "define( 'WP_DEBUG_LOG', '$WORK/wp-debug.log' );"
    echo "define( 'AUTOMATIC_UPDATER_DISABLED', true );"
    echo "define( 'WP_HTTP_BLOCK_EXTERNAL', true );" # this machine has no internet; only 127.0.0.1 is reached
    echo "define( 'FORM_BRIDGE_IT_TOKEN', '$IT_TOKEN' );"
    echo "define( 'FORM_BRIDGE_IT_FIXTURES', '$TESTS/fixtures/cases.php' );"
    echo "define( 'FORM_BRIDGE_IT_INGEST_PORT', $INGEST_PORT );"
    echo "if ( ! defined( 'ABSPATH' ) ) { define( 'ABSPATH', __DIR__ . '/' ); }"
    echo "require_once ABSPATH . 'wp-settings.php';"
  } >"$config"
}

install_wordpress() {
  WP_DIR="$WORK/wordpress"
  cp -a /usr/share/wordpress "$WP_DIR"
  write_wp_config
  cp -a "$HERE/form-bridge" "$WP_DIR/wp-content/plugins/form-bridge"
  mkdir -p "$WP_DIR/wp-content/mu-plugins"
  cp "$TESTS/integration/harness/form-bridge-it-harness.php" "$WP_DIR/wp-content/mu-plugins/"
  FB_WP_DIR="$WP_DIR" php "$TESTS/integration/wp-setup.php" install "$WP_URL"
  FB_WP_DIR="$WP_DIR" php "$TESTS/integration/wp-setup.php" activate "$WP_URL" \
    "http://$INGEST_LISTEN/v1/submissions" "$SITE" "$WORK/site.secret"
}

serve_wordpress() {
  # Several workers: WP-Cron's loopback request must be served while a page is still running.
  # Its own process group, so that clean-up stops the workers too, not only their parent.
  PHP_CLI_SERVER_WORKERS=4 setsid php -S "127.0.0.1:$WP_PORT" -t "$WP_DIR" >"$WORK/php-server.log" 2>&1 &
  PHP_SERVER_GROUP=$!
  wait_for "php -S on $WP_URL" curl -fs -o /dev/null "$WP_URL/wp-login.php"
}

# --- 4. the Form-Bridge side --------------------------------------------------------------------

check_binaries() {
  local bin
  for bin in formbridge-admin formbridge-ingest formbridge-persister; do
    if [ ! -x "$BIN/$bin" ]; then
      echo "$BIN/$bin is missing: build it first (cargo build --workspace --bins) or set FORMBRIDGE_BIN_DIR" >&2
      exit 1
    fi
  done
}

start_formbridge() {
  ensure_engine_installed
  start_engine
  log "local engine at $AWS_ENDPOINT_URL"
  python3 -c 'import os,base64; print("wpit:" + base64.b64encode(os.urandom(32)).decode())' >"$WORK/master.keys"
  export FORMBRIDGE_MASTER_KEYS_FILE="$WORK/master.keys"
  "$BIN/formbridge-admin" bootstrap >"$WORK/bootstrap.json"
  "$BIN/formbridge-admin" tenant create --id "$TENANT" --name "WordPress integration" --shards 2 >/dev/null
  "$BIN/formbridge-admin" site add --tenant "$TENANT" --domain "$SITE" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["sites"][0]["signing_secret"])' >"$WORK/site.secret"
  export FB_IT_WORK="$WORK" FORMBRIDGE_BIN_DIR="$BIN" INGEST_LISTEN
  "$TESTS/integration/ingest-ctl.sh" start
  PERSISTER_WAIT_SECONDS=1 "$BIN/formbridge-persister" >"$WORK/persister.log" 2>&1 &
  PIDS+=($!)
}

# --- main ---------------------------------------------------------------------------------------

started=$(date +%s)
ensure_packages

log "PHPUnit: unit tests"
phpunit -c "$TESTS/phpunit.xml.dist"

check_binaries
WORK="$(mktemp -d "${TMPDIR:-/tmp}/form-bridge-wp.XXXXXX")"
IT_TOKEN="$(salt)"
WP_PORT="$(free_port)"
WP_URL="http://127.0.0.1:$WP_PORT"
INGEST_PORT="$(free_port)"
INGEST_LISTEN="127.0.0.1:$INGEST_PORT"

log "Form-Bridge: engine, tenant $TENANT, site $SITE, ingest on $INGEST_LISTEN, persister"
start_formbridge
log "MariaDB (throwaway) and WordPress at $WP_URL"
start_mariadb
install_wordpress
serve_wordpress

log "PHPUnit: real-WordPress integration test"
FB_IT_WP_URL="$WP_URL" FB_IT_TOKEN="$IT_TOKEN" FB_IT_ADMIN="$BIN/formbridge-admin" \
  FB_IT_TENANT="$TENANT" FB_IT_SITE="$SITE" FB_IT_INGEST_CTL="$TESTS/integration/ingest-ctl.sh" \
  FB_IT_SECRET_FILE="$WORK/site.secret" \
  phpunit -c "$TESTS/phpunit-integration.xml.dist" "$@"

log "WordPress plugin tests passed in $(($(date +%s) - started)) s"

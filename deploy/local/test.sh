#!/usr/bin/env bash
# Runs every test: unit, property, schema and integration tests against the local engine, which
# this script installs (first run) and starts on a free 127.0.0.1 port, the dashboard in headless
# Chromium (installed from Debian on first run), cfn-lint on the AWS templates; then the WordPress
# plugin's tests (PHPUnit, and a real WordPress against the real ingest and persister:
# deploy/wordpress/test.sh, which installs its Debian packages on first use). Extra arguments go
# to `cargo test` only, and skip the WordPress part (e.g. ./deploy/local/test.sh short_run).
set -euo pipefail
source "$(dirname "$0")/engine.sh"
cd "$ROOT"

ensure_engine_installed
# cfn-lint on every CloudFormation template, clean.
"$ROOT/deploy/aws/lint.sh"
# The dashboard's browser test needs Debian's Chromium and playwright-core.
"$ROOT/processors/api/tests/browser/setup.sh"
start_engine
trap stop_engine EXIT
# The CloudFormation template deployed to the engine, every resource it models checked.
"$VENV/bin/python" "$ROOT/deploy/aws/deploy_test.py"
echo "==> local engine at $AWS_ENDPOINT_URL" >&2
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
if [ $# -eq 0 ]; then
  # The plugin's integration test runs the real binaries; it starts its own engine.
  cargo build --workspace --bins --quiet
  "$ROOT/deploy/wordpress/test.sh"
fi

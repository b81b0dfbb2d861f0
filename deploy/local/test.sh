#!/usr/bin/env bash
# Runs every test: unit, property, schema and integration tests against the local engine, which
# this script installs (first run) and starts on a free 127.0.0.1 port, the dashboard in headless
# Chromium (installed from Debian on first run), cfn-lint, parliament and the definition checks on
# the AWS template, its deployment to the engine, the IAM permissions nothing uses, and the Lambda
# zips (cargo-lambda); then the WordPress plugin's tests (PHPUnit, and a real WordPress against
# the real ingest and persister: deploy/wordpress/test.sh, which installs its Debian packages on
# first use). Extra arguments go
# to `cargo test` only, and skip the WordPress part (e.g. ./deploy/local/test.sh short_run).
set -euo pipefail
source "$(dirname "$0")/engine.sh"
cd "$ROOT"

ensure_engine_installed
# cfn-lint on every CloudFormation template, clean.
"$ROOT/deploy/aws/lint.sh"
# The template's alarms, budgets, metric filters and event source mappings, by their definitions
# (moto skips or does not run them).
"$VENV/bin/python" "$ROOT/deploy/aws/template_test.py"
# The dashboard's browser test needs Debian's Chromium and playwright-core.
"$ROOT/processors/api/tests/browser/setup.sh"
start_engine
trap stop_engine EXIT
# The CloudFormation template deployed to the engine, every resource it models checked.
"$VENV/bin/python" "$ROOT/deploy/aws/deploy_test.py"
echo "==> local engine at $AWS_ENDPOINT_URL" >&2
# Each test that checks a process against its IAM role leaves what it used here.
rm -rf "$ROOT/target/iam-usage"
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
if [ $# -eq 0 ]; then
  # Every permission of the process roles is used by the suite (the other way round is checked
  # in the tests themselves).
  (cd "$ROOT/deploy/aws" && "$VENV/bin/python" iam_unused.py)
  # The Lambda functions' zips, as a deployment uploads them.
  "$ROOT/deploy/aws/build_lambdas.sh"
  # The plugin's integration test runs the real binaries; it starts its own engine.
  cargo build --workspace --bins --quiet
  "$ROOT/deploy/wordpress/test.sh"
fi

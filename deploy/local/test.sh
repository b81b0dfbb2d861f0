#!/usr/bin/env bash
# Runs every test: unit, property, schema and integration tests against the local engine, which
# this script installs (first run) and starts on a free 127.0.0.1 port, the dashboard in headless
# Chromium (installed from Debian on first run), cfn-lint, parliament and the definition checks on
# the AWS template, its deployment to the engine, the IAM permissions nothing uses, and the Lambda
# zips (cargo-lambda); then the WordPress plugin's tests (PHPUnit, and a real WordPress against
# the real ingest and persister: deploy/wordpress/test.sh, which installs its Debian packages on
# first use), and a short run of every fuzz target (fuzz/run.sh). Extra arguments go
# to `cargo test` only, and skip the WordPress and fuzz parts (e.g. ./deploy/local/test.sh short_run).
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
  # The fuzz targets' short run: every parser of untrusted input, 20 s each, failing on any
  # crash or broken invariant (cargo fuzz on the nightly toolchain; see fuzz/README.md).
  if cargo +nightly --version >/dev/null 2>&1; then
    command -v jq >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends jq; } >/dev/null
    FUZZ_JOBS=2 "$ROOT/fuzz/run.sh" 20
  else
    echo "WARNING: no nightly toolchain here: the fuzz targets' short run is SKIPPED" >&2
  fi
fi

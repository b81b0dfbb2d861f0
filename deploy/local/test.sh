#!/usr/bin/env bash
# Runs every test: unit, property, schema and integration tests against the local engine, which
# this script installs (first run) and starts on a free 127.0.0.1 port. Extra arguments go to
# `cargo test` (e.g. ./deploy/local/test.sh -p formbridge-persister).
set -euo pipefail
source "$(dirname "$0")/engine.sh"
cd "$ROOT"

ensure_engine_installed
start_engine
trap stop_engine EXIT
echo "==> local engine at $AWS_ENDPOINT_URL" >&2
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"

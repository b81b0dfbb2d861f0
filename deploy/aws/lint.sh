#!/usr/bin/env bash
# Lints every CloudFormation template in deploy/aws/ with cfn-lint (pinned, in its own
# project-local virtualenv, .venv-lint/, made on first use: its dependencies must not meet moto's).
# Any finding, warnings included, fails. ./deploy/local/test.sh runs it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/.venv-lint"
CFN_LINT_VERSION="1.58.0"
if [ ! -x "$VENV/bin/cfn-lint" ] || [ ! -f "$VENV/.cfn-lint-$CFN_LINT_VERSION" ]; then
  echo "==> installing cfn-lint $CFN_LINT_VERSION into $VENV (first run only)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
  touch "$VENV/.cfn-lint-$CFN_LINT_VERSION"
fi
"$VENV/bin/cfn-lint" "$ROOT"/deploy/aws/*.yaml
echo "==> cfn-lint: every template clean" >&2

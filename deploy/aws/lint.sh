#!/usr/bin/env bash
# Lints the CloudFormation template: cfn-lint, and parliament on every IAM policy in it
# (deploy/aws/iam_lint.py). Both are pinned, in a project-local virtualenv, .venv-lint/, made on
# first use (their dependencies must not meet moto's). Any finding, warnings included, fails.
# ./deploy/local/test.sh runs it.
#
# cfn-lint reads the template once per deployment file in deploy/aws/lint/ (one per compute mode,
# and ECS with HTTPS): the parameters a deployment passes, so that the other mode's empty
# defaults (CodeBucket, VpcId, ...) are not resolved into resources that mode never creates.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/.venv-lint"
# cfn-lint, parliament and parliament's dependencies (cfn-lint's own are resolved by pip; the
# two share only PyYAML). parliament imports pkg_resources, gone from setuptools 81.
PINS=(
  "cfn-lint==1.58.0"
  "parliament==1.6.4" "json-cfg==0.4.2" "kwonly-args==1.0.10" "jmespath==1.1.0" "PyYAML==6.0.4"
  "boto3==1.44.8" "botocore==1.44.8" "s3transfer==0.19.3" "python-dateutil==2.9.0.post0" "six==1.17.0"
  "urllib3==2.8.0" "setuptools<81"
)
source "$ROOT/deploy/aws/tool_venv.sh"
tool_venv "$VENV" "${PINS[@]}"
cd "$ROOT"
"$VENV/bin/cfn-lint" --deployment-files deploy/aws/lint/*.yaml
echo "==> cfn-lint: the template clean in every deployment of deploy/aws/lint/" >&2
"$VENV/bin/python" deploy/aws/iam_lint.py

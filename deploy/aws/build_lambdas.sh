#!/usr/bin/env bash
# Builds the Lambda functions' zips with cargo-lambda (pinned, from PyPI, in its own project-local
# virtualenv .venv-lambda/, made on first use): x86_64, release, `--compiler cargo` (no Zig).
# Each lands as target/lambda-zips/<binary>.zip holding its `bootstrap`, the names the template
# expects under CodePrefix. ./deploy/local/test.sh runs it on a full run; it also checks each zip.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="$ROOT/.venv-lambda"
CARGO_LAMBDA_VERSION="1.9.2"
BINARIES=(formbridge-ingest-lambda formbridge-persister-lambda formbridge-aggregator-lambda formbridge-delivery-lambda formbridge-api-lambda)
source "$ROOT/deploy/aws/tool_venv.sh"
tool_venv "$VENV" "cargo-lambda==$CARGO_LAMBDA_VERSION"
cd "$ROOT"
args=()
for b in "${BINARIES[@]}"; do args+=(--bin "$b"); done
"$VENV/bin/cargo-lambda" lambda build --release --compiler cargo --x86-64 --output-format zip "${args[@]}"
mkdir -p target/lambda-zips
for b in "${BINARIES[@]}"; do
  zip="target/lambda/$b/bootstrap.zip"
  # A zip Lambda can run: one executable named bootstrap at its root.
  python3 - "$zip" <<'PY'
import stat, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
info = z.getinfo("bootstrap")
mode = info.external_attr >> 16
assert mode & stat.S_IXUSR, f"{sys.argv[1]}: bootstrap is not executable"
assert z.read("bootstrap")[:4] == b"\x7fELF", f"{sys.argv[1]}: bootstrap is not an ELF binary"
PY
  cp "$zip" "target/lambda-zips/$b.zip"
done
echo "==> Lambda zips in target/lambda-zips/: ${BINARIES[*]}" >&2

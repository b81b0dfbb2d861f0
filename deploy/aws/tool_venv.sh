# Sourced by lint.sh and build_lambdas.sh: `tool_venv DIR PIN...` makes (once) a project-local
# virtualenv DIR holding exactly these pinned packages, kept apart from moto's and each other's
# dependencies. A change of pins remakes it.
tool_venv() {
  local venv="$1"
  shift
  local marker="$venv/.pins-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
  if [ ! -f "$marker" ]; then
    echo "==> installing $* into $venv (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    touch "$marker"
  fi
}

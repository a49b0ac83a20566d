#!/usr/bin/env bash
# Create .venv if absent and install the project (editable) into it; `dev` adds the test tools.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
extra=${1:-}
spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.installed-${extra:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing $spec into .venv ..."
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi

#!/usr/bin/env bash
# Create .venv if absent and install the project (editable) into it exactly as uv.lock pins it; an argument
# names an extra to add (`dev`: the test tools; `gpu`: jax[cuda12]). Extras installed before are kept.
#
# Needs only python3 (with venv and pip): uv itself is pip-installed into .venv at the version pinned below,
# then `uv sync --locked` installs the lock into that same .venv. --locked refuses to run when pyproject.toml
# and uv.lock disagree (fix: `.venv/bin/uv lock`, review, commit both). Re-installs only when pyproject.toml,
# uv.lock or the uv pin changed since the last install (or a new extra is asked for).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "installing uv $UV_VERSION into .venv ..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
wanted=${1:-}
stamp=.venv/.uv-synced   # line 1: checksum of what was installed from; line 2: the extras installed
state="$UV_VERSION bytecode $(cat pyproject.toml uv.lock | cksum)"
had=""
[ -f "$stamp" ] && had=$(sed -n 2p "$stamp")
if [ -f "$stamp" ] && [ "$(sed -n 1p "$stamp")" = "$state" ] && { [ -z "$wanted" ] || [[ " $had " == *" $wanted "* ]]; }; then
  exit 0
fi
extras=$(printf '%s\n' $had $wanted | sort -u | tr '\n' ' ' | sed 's/ $//')
args=()
for e in $extras; do args+=(--extra "$e"); done
echo "installing the project${extras:+ with $extras} into .venv from uv.lock ..."
# An exact sync: whatever the lock does not name is removed (uv keeps pip and itself); the project is editable.
# --compile-bytecode writes the dependencies' .pyc now: where PYTHONDONTWRITEBYTECODE is set (this machine, many
# containers) Python never writes them itself, and every process (each Dagster run and step, each CLI call) would
# compile jax, dagster, optuna ... from source again on import.
export UV_PROJECT_ENVIRONMENT="$PWD/.venv" UV_PYTHON_DOWNLOADS=never
.venv/bin/uv sync --locked --compile-bytecode --quiet ${args[@]+"${args[@]}"}
printf '%s\n%s\n' "$state" "$extras" > "$stamp"
rm -f .venv/.installed-*   # the stamps of the pip-based bootstrap this one replaced

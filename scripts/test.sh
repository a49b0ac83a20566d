#!/usr/bin/env bash
# Command 2: install (into .venv, with the dev extra) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
exec .venv/bin/python -m pytest "$@"

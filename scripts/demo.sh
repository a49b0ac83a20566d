#!/usr/bin/env bash
# Command 1: install (into .venv) and run the demo pipeline on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m quant_assets.demo "$@"

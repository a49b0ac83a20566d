#!/usr/bin/env bash
# Start code server, webserver and daemon against PostgreSQL (run from the repo root).
# Needs: DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB and QUANT_DATABASE_URL in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home_pg}
# a deployment: the schedules and the new-candles sensor start running (off on the demo home)
export QUANT_AUTOMATION=${QUANT_AUTOMATION:-on}
mkdir -p "$DAGSTER_HOME"
cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
.venv/bin/dagster code-server start -m quant_assets.definitions -h 127.0.0.1 -p 4266 &
CODE=$!
.venv/bin/dagster-webserver -w deploy/local/workspace.yaml -h 127.0.0.1 -p "${WEB_PORT:-3000}" &
WEB=$!
.venv/bin/dagster-daemon run -w deploy/local/workspace.yaml &
DAEMON=$!
# the code server ignores SIGTERM (seen with dagster 1.13): escalate to SIGKILL on exit
trap 'kill $WEB $DAEMON 2>/dev/null; sleep 5; kill -9 $CODE 2>/dev/null' EXIT INT TERM
wait

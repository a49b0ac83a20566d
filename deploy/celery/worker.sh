#!/usr/bin/env bash
# Start one dagster-celery worker for this platform, on any machine that has the code (this repository
# installed: scripts/bootstrap.sh), the instance ($DAGSTER_HOME/dagster.yaml = deploy/celery/dagster.yaml with
# its DAGSTER_PG_* variables) and the shared candle/step storage ($QUANT_HOME, $DAGSTER_HOME/storage on a shared
# filesystem). The worker listens on $QUANT_CELERY_BROKER; its Celery settings come from the same code as the
# runs' executor (quant_assets/executor.py), so both sides agree.
#   QUANT_CELERY_BROKER=redis://broker-host:6379/0 bash deploy/celery/worker.sh gpu-box-1 4 training
# (name, concurrency: steps this worker runs at once, queues: comma-separated Celery queues it takes steps from;
# default the machine's name, 1 and `dagster`, the queue of every step. With QUANT_CELERY_TRAINING_QUEUE=training
# set for the runs, training steps go to the queue `training` and only workers listening on it run them.)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:-$(hostname -s)}
concurrency=${2:-1}
queues=()
IFS=',' read -ra names <<< "${3:-dagster}"
for q in "${names[@]}"; do queues+=(-q "$q"); done
: "${DAGSTER_HOME:?set DAGSTER_HOME (its dagster.yaml: deploy/celery/dagster.yaml)}"
export PATH="$PWD/.venv/bin:$PATH"   # dagster-celery runs `celery` from PATH
config="$DAGSTER_HOME/celery-worker.yaml"
.venv/bin/python -m quant_assets.executor > "$config"   # fails naming the variable if the broker is not set
exec .venv/bin/dagster-celery worker start -A dagster_celery.app -y "$config" -n "$name" "${queues[@]}" -- --concurrency "$concurrency"

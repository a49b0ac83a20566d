"""Which executor runs a run's steps: chosen by deployment configuration (environment), never by code.

QUANT_EXECUTOR (read when the definitions load):
- unset or `multiprocess`: every step in its own process on the machine that runs the run (Dagster's default);
- `k8s`: every step is its own Kubernetes Job (dagster-k8s's k8s_job_executor; the `k8s` extra), for runs
  launched by K8sRunLauncher (deploy/helm/values.yaml);
- `celery`: every step is a Celery task on a pool of `dagster-celery worker` processes, on this machine or on
  others (deploy/celery/). QUANT_CELERY_BROKER names the broker (e.g. `redis://host:6379/0`, required);
  QUANT_CELERY_BACKEND the result backend (default: the broker). The workers must listen on the same broker
  and load the same code and the same Dagster instance (PostgreSQL storage; shared $DAGSTER_HOME/storage and
  $QUANT_HOME).

Celery settings that make a worker's death cost only its step: a step's task is acknowledged when it ends, not
when it starts (`task_acks_late`), so a worker that dies mid-step leaves it on the broker and another worker
runs it again — at once when only the worker's child process died (`task_reject_on_worker_lost`), after the
broker's visibility timeout (QUANT_CELERY_VISIBILITY_TIMEOUT seconds, default 3600; it must exceed the longest
step, or a slow step is handed out twice) when the whole worker or its machine died.

QUANT_CELERY_TRAINING_QUEUE (celery only): the Celery queue of the training steps (a search's parts, the
walk-forward's folds and the steps that combine them), e.g. `training` for workers on GPU or large machines
(`deploy/celery/worker.sh NAME CONCURRENCY training`); every other step stays on the default queue `dagster`.
Unset: every step on `dagster`. A queue no worker listens on leaves its steps waiting, so start those workers.

A bad value fails the definitions load with a message that names the variable and the fix; an unreachable
broker fails the run before any step is submitted, naming the broker and QUANT_CELERY_BROKER.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

EXECUTOR_ENV = "QUANT_EXECUTOR"
BROKER_ENV = "QUANT_CELERY_BROKER"
BACKEND_ENV = "QUANT_CELERY_BACKEND"
VISIBILITY_ENV = "QUANT_CELERY_VISIBILITY_TIMEOUT"
TRAINING_QUEUE_ENV = "QUANT_CELERY_TRAINING_QUEUE"
GPU_ENV, NODE_SELECTOR_ENV = "QUANT_TRAINING_GPU", "QUANT_GPU_NODE_SELECTOR"
K8S_TAG = "dagster-k8s/config"
QUEUE_TAG = "dagster-celery/queue"  # the op tag dagster-celery routes a step's task by
BROKER_SCHEMES = ("redis", "rediss", "amqp", "pyamqp", "sqs")
CONNECT_SECONDS = 5


class ExecutorSettingsError(ValueError):
    """A deployment setting of the executor is wrong; the message names the variable and the fix."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def celery_settings(env: dict | None = None) -> dict:
    """The celery executor's config (the same block `dagster-celery worker start -y` reads) from the environment."""
    env = os.environ if env is None else env
    broker = env.get(BROKER_ENV, "").strip()
    if not broker:
        raise ExecutorSettingsError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, the Celery broker's URL, e.g. "
                                    f"{BROKER_ENV}=redis://127.0.0.1:6379/0 (the one the workers listen on)")
    for name, url in ((BROKER_ENV, broker), (BACKEND_ENV, env.get(BACKEND_ENV, "").strip() or broker)):
        scheme = urlsplit(url).scheme
        if scheme not in BROKER_SCHEMES and not (name == BACKEND_ENV and scheme in ("rpc", "db+postgresql")):
            raise ExecutorSettingsError(f"{name}={redact(url)!r}: not a broker URL; use e.g. "
                                        "redis://host:6379/0 (or amqp://user@host:5672//)")
    raw = env.get(VISIBILITY_ENV, "3600").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ExecutorSettingsError(f"{VISIBILITY_ENV}={raw!r}: a whole number of seconds (longer than the "
                                    "longest step), e.g. 3600")
    return {
        "broker": broker,
        "backend": env.get(BACKEND_ENV, "").strip() or broker,
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            # dagster_celery's defaults (bounded connection retries) plus how long an unacknowledged step waits
            # before the broker hands it to another worker
            "broker_transport_options": {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                                         "interval_max": 0.5, "visibility_timeout": int(raw)},
            "broker_connection_timeout": CONNECT_SECONDS,
            "redis_socket_connect_timeout": CONNECT_SECONDS,
        },
    }


def check_broker(broker: str, config_source: dict | None = None) -> None:
    """Connect to the broker once; a clear failure naming it and QUANT_CELERY_BROKER if that is impossible."""
    from celery import Celery

    app = Celery("quant_broker_check", broker=broker)
    if config_source:
        app.conf.update(config_source)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0, interval_step=0.5, interval_max=1,
                                   timeout=CONNECT_SECONDS)
    except Exception as exc:
        raise dg.Failure(
            f"the Celery broker {redact(broker)} ({BROKER_ENV}) is unreachable: {type(exc).__name__}: {exc}. "
            f"Start it, or point {BROKER_ENV} at the broker the workers listen on "
            "(deploy/celery/README: `dagster-celery worker start -y deploy/celery/worker.yaml`)"
        ) from None


def _checked_celery_executor():
    from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor

    class CheckedCeleryExecutor(CeleryExecutor):
        """dagster-celery's executor that first checks the broker answers (else every step would wait forever
        on a queue nobody can reach, or fail with a bare connection error)."""

        def execute(self, plan_context, execution_plan):
            check_broker(self.broker, vars(self.config_source))
            return super().execute(plan_context, execution_plan)

    @dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=dg.multiple_process_executor_requirements())
    def checked_celery_executor(init_context):
        from dagster._core.execution.retries import RetryMode

        cfg = init_context.executor_config
        return CheckedCeleryExecutor(broker=cfg.get("broker"), backend=cfg.get("backend"), include=cfg.get("include"),
                                     config_source=cfg.get("config_source"),
                                     retries=RetryMode.from_config(cfg["retries"]))

    return checked_celery_executor


def executor_from_env(env: dict | None = None) -> dg.ExecutorDefinition | None:
    """The executor QUANT_EXECUTOR names (None: Dagster's default, multiprocess)."""
    env = os.environ if env is None else env
    kind = env.get(EXECUTOR_ENV, "").strip().lower()
    if kind in ("", "multiprocess"):
        return None if not kind else dg.multiprocess_executor
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ExecutorSettingsError(f"{EXECUTOR_ENV}=k8s needs dagster-k8s: install the project's k8s extra "
                                        f"(bash scripts/bootstrap.sh k8s; the Docker image has it) ({exc})") from None
        return k8s_job_executor
    if kind == "celery":
        try:
            executor = _checked_celery_executor()
        except ImportError as exc:  # pragma: no cover - dagster-celery is a dependency of the project
            raise ExecutorSettingsError(f"{EXECUTOR_ENV}=celery needs dagster-celery installed ({exc})") from None
        return executor.configured(celery_settings(env), name="celery")
    raise ExecutorSettingsError(f"{EXECUTOR_ENV}={env[EXECUTOR_ENV]!r}: use 'multiprocess' (the default: every "
                                "step a process on the run's machine), 'celery' (steps on dagster-celery "
                                f"workers; set {BROKER_ENV} too) or 'k8s' (every step its own Kubernetes Job)")


def k8s_config(env: dict | None = None, *, gpu: bool | None = None) -> dict:
    """A `dagster-k8s/config` tag's value for training work: CPU/memory requests, and with QUANT_TRAINING_GPU=1 (at
    definitions load) a GPU limit and a node selector (QUANT_GPU_NODE_SELECTOR, `key=value`, default
    accelerator=nvidia). K8sRunLauncher reads it from run tags, k8s_job_executor from op tags too; other run
    launchers and executors ignore it."""
    env = os.environ if env is None else env
    gpu = env.get(GPU_ENV) == "1" if gpu is None else gpu
    resources: dict = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
    config: dict = {"container_config": {"resources": resources}}
    if gpu:
        resources["limits"]["nvidia.com/gpu"] = "1"
        key, sep, value = env.get(NODE_SELECTOR_ENV, "accelerator=nvidia").partition("=")
        if not (sep and key.strip() and value.strip()):
            raise ExecutorSettingsError(f"{NODE_SELECTOR_ENV}={env.get(NODE_SELECTOR_ENV)!r}: a node label as "
                                        "key=value, e.g. accelerator=nvidia")
        config["pod_spec_config"] = {"node_selector": {key.strip(): value.strip()}}
    return config


def _kind(env: dict) -> str:
    return env.get(EXECUTOR_ENV, "").strip().lower()


def k8s_run_tags(env: dict | None = None) -> dict:
    """`dagster-k8s/config` of retrain runs. Under the k8s executor each step is its own pod and the run's pod only
    orchestrates, so the GPU goes to the training steps' pods (training_step_tags), not to the run's."""
    env = os.environ if env is None else env
    return {K8S_TAG: json.dumps(k8s_config(env, gpu=False) if _kind(env) == "k8s" else k8s_config(env))}


def training_step_tags(env: dict | None = None) -> dict:
    """Op tags of the training steps: under the k8s executor, their pods' resources (and GPU); under celery, the
    queue QUANT_CELERY_TRAINING_QUEUE names (none when unset)."""
    env = os.environ if env is None else env
    tags = {K8S_TAG: json.dumps(k8s_config(env))} if _kind(env) == "k8s" else {}
    queue = env.get(TRAINING_QUEUE_ENV, "").strip()
    if not queue:
        return tags
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", queue):
        raise ExecutorSettingsError(f"{TRAINING_QUEUE_ENV}={queue!r}: a queue name (letters, digits, '_', '-', '.'), "
                                    "e.g. training")
    if _kind(env) != "celery":
        raise ExecutorSettingsError(f"{TRAINING_QUEUE_ENV}={queue!r} routes training steps to a Celery queue: it "
                                    f"needs {EXECUTOR_ENV}=celery (or unset {TRAINING_QUEUE_ENV})")
    return {QUEUE_TAG: queue}


def worker_config(env: dict | None = None) -> dict:
    """The YAML document `dagster-celery worker start -y` takes: the executor's own settings, so the workers
    listen where the runs submit and acknowledge steps the same way."""
    return {"execution": {"config": celery_settings(env)}}


if __name__ == "__main__":  # `python -m quant_assets.executor > worker.yaml` (deploy/celery/worker.sh)
    import sys

    import yaml

    try:
        yaml.safe_dump(worker_config(), sys.stdout, sort_keys=False)
    except ExecutorSettingsError as exc:
        sys.exit(str(exc))

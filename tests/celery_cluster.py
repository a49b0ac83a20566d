"""A real Celery deployment on this machine, for tests and benchmarks: its own redis-server on a free 127.0.0.1
port (installed with apt-get if missing), a PostgreSQL-backed Dagster instance (deploy/celery/dagster.yaml), the
test registry's candles, `dagster-celery worker` processes started as deploy/celery/worker.sh starts them, and
retrain runs launched with `dagster job execute` under QUANT_EXECUTOR=celery. Everything it starts it stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """redis-server, installed from Debian's archive when missing (as scripts/test.sh installs chromium)."""
    found = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server")
                                                  if os.path.exists(p)), None)
    if found:
        return found
    apt = ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        apt = ["sudo", *apt]
    out = subprocess.run(apt, capture_output=True, text=True, timeout=600)
    found = shutil.which("redis-server") or (os.path.exists("/usr/bin/redis-server") and "/usr/bin/redis-server")
    if not found:
        raise RuntimeError("redis-server is not installed and `apt-get install -y redis-server` failed "
                           f"(exit {out.returncode}): {out.stderr.strip()[-500:]}; install Debian's redis-server")
    return found


def wait_for(predicate, timeout: float, what: str, logs: Path | None = None, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    tails = ""
    if logs is not None:
        tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


@contextmanager
def redis_server(logs: Path) -> Iterator[str]:
    """A private redis-server (no persistence) on a free port; yields its URL."""
    port = free_port()
    log = (logs / "redis.log").open("w")
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        def answers():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(answers, 30, f"redis-server on 127.0.0.1:{port}", logs, every=0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a process started with start_new_session (its whole group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


class CeleryCluster:
    """The environment every process shares, the workers it started, and how to launch a retrain."""

    def __init__(self, tmp: Path, dagster_db: str, store_db: str, registry_text: str, broker: str,
                 visibility_timeout: int = 3600) -> None:
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.home = tmp / "dagster_home"
        self.home.mkdir(exist_ok=True)
        shutil.copy(ROOT / "deploy" / "celery" / "dagster.yaml", self.home / "dagster.yaml")
        registry = tmp / "registry.yaml"
        registry.write_text(registry_text)
        pg = make_url(dagster_db)
        # dagster-celery runs `celery` from PATH
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "DAGSTER_HOME": str(self.home), "DAGSTER_PG_HOST": pg.host,
                    "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_USER": pg.username,
                    "DAGSTER_PG_PASSWORD": pg.password or "", "DAGSTER_PG_DB": pg.database,
                    "QUANT_DATABASE_URL": store_db, "QUANT_REGISTRY": str(registry),
                    "QUANT_HOME": str(tmp / "quant"), "QUANT_EXECUTOR": "celery", "QUANT_CELERY_BROKER": broker,
                    "QUANT_CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
                    "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        self.workers: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str, concurrency: int = 1, queues: tuple[str, ...] = ("dagster",),
                     env: dict | None = None) -> None:
        """As deploy/celery/worker.sh: the worker config from quant_assets.executor, then dagster-celery, listening
        on `queues` (dagster-celery's default queue is `dagster`)."""
        config = self.tmp / "celery-worker.yaml"
        from quant_assets.executor import worker_config

        config.write_text(yaml.safe_dump(worker_config(self.env)))
        log = (self.logs / f"worker-{name}.log").open("w")
        self.workers[name] = subprocess.Popen(
            [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
             "-n", name, *(a for q in queues for a in ("-q", q)), "--", "--concurrency", str(concurrency)],
            cwd=ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        def ready():
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {name} exited with {proc.returncode}: "
                                       + (self.logs / f"worker-{name}.log").read_text()[-3000:])
            return all(" ready." in (self.logs / f"worker-{n}.log").read_text() for n in self.workers)

        wait_for(ready, timeout, "the celery workers to be ready", self.logs)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and its children: a machine lost mid-step."""
        stop(self.workers[name], signal.SIGKILL)

    def launch(self, job: str, partition_key: str, log_name: str = "run", env: dict | None = None,
               run_config: dict | None = None) -> subprocess.Popen:
        """`dagster job execute` of one partition (with `run_config`, as a YAML file): this process orchestrates;
        the steps go to the broker."""
        import json

        tags = {"dagster/partition": partition_key}
        log = (self.logs / f"{log_name}.log").open("w")
        config = []
        if run_config:
            path = self.tmp / f"{log_name}-config.yaml"
            path.write_text(yaml.safe_dump(run_config))
            config = ["-c", str(path)]
        return subprocess.Popen([str(BIN / "dagster"), "job", "execute", "-m", "quant_assets.definitions", "-a",
                                 "defs", "-j", job, "--tags", json.dumps(tags), *config], cwd=ROOT, env=env or self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @contextmanager
    def environment(self) -> Iterator[None]:
        """This process's environment set to the cluster's instance, store, registry and candles; then restored."""
        keys = ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                "DAGSTER_PG_DB", "QUANT_DATABASE_URL", "QUANT_REGISTRY", "QUANT_HOME")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys})
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @contextmanager
    def instance(self):
        """The shared (PostgreSQL) Dagster instance, opened from this process."""
        import dagster as dg

        with self.environment(), dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    def close(self) -> None:
        for proc in self.workers.values():
            stop(proc)


def backfill_candles(cluster: CeleryCluster, week: str) -> None:
    """The retrain's candle lookback (30 days x both markets), written in this process into the shared instance
    and QUANT_HOME (the cluster's environment is set while it runs, then restored)."""
    import dagster as dg

    with cluster.environment():
        from quant_assets.definitions import build_definitions
        from quant_assets.defs.market_data.assets import OHLCV_KEY

        defs = build_definitions()
        last = datetime.fromisoformat(week).replace(tzinfo=UTC) + timedelta(days=6)
        first = last - timedelta(days=29)
        with cluster.instance() as instance:
            res = dg.materialize(list(defs.assets), selection=[OHLCV_KEY], instance=instance,
                                 resources=dict(defs.resources),
                                 tags={"dagster/asset_partition_range_start": f"{first:%Y-%m-%d}|synth.AAA-USD.1d",
                                       "dagster/asset_partition_range_end": f"{last:%Y-%m-%d}|synth.BBB-USD.1d"})
            assert res.success


def steps_by_worker(instance, run_id: str) -> dict[str, list[str]]:
    """{step key: [celery worker hostname, ...]} from the run's event log (dagster-celery's engine event
    "Executing steps ... in celery worker" carries the worker's name), in order of execution."""
    import dagster as dg

    out: dict[str, list[str]] = {}
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        meta = event.engine_event_data.metadata if event and event.engine_event_data else {}
        if "Celery worker" in meta:
            out.setdefault(event.step_key, []).append(meta["Celery worker"].value)
    return out


def latest_week(registry_path: Path, universe: str) -> str:
    from quant_assets.partitions import latest_retrain_week
    from quant_core.universe import load_registry

    registry = load_registry(registry_path)
    return latest_retrain_week(registry, registry.universe(universe), datetime.now(UTC))

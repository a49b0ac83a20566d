"""A real deployment: PostgreSQL-backed dagster-daemon, webserver and gRPC code server as separate
processes on free ports (started once for this module). A candle backfill is launched through the
GraphQL API (as the UI's backfill dialog does); the daemon runs it, the retrain sensor requests the
universe's retrain, and the configuration row lands in PostgreSQL. A headless Chromium opens the asset
graph. Then everything is stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from test_platform import REGISTRY, U

from quant_core.store import ConfigurationStore
from quant_core.universe import load_registry

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "test-artifacts"

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""
RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
  ... on Runs { results { runId jobName status tags { key value } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    assert "errors" not in out, out
    return out["data"]


def _wait(predicate, timeout: float, what: str, logs: Path):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    tails = {p.name: p.read_text()[-3000:] for p in logs.glob("*.log")}
    pytest.fail(f"timed out waiting for {what}; process logs:\n" + "\n".join(f"== {k}\n{v}" for k, v in tails.items()))


@dataclass
class Deployment:
    web_port: int
    store_db: str
    registry_path: Path
    logs: Path


@pytest.fixture(scope="module")
def deployment(postgres_server, tmp_path_factory) -> Iterator[Deployment]:
    postgres_server.require()
    tmp_path = tmp_path_factory.mktemp("deployment")
    dagster_db, store_db = postgres_server.create_database(), postgres_server.create_database()
    procs: list[subprocess.Popen] = []
    try:
        registry_path = tmp_path / "registry.yaml"
        registry_path.write_text(REGISTRY)
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        code_port, web_port = _free_port(), _free_port()
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {code_port}, "
                             f"location_name: quant}}\n")
        pg = make_url(dagster_db)
        env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port),
               "DAGSTER_PG_USER": pg.username, "DAGSTER_PG_PASSWORD": pg.password or "",
               "DAGSTER_PG_DB": pg.database, "QUANT_DATABASE_URL": store_db, "QUANT_REGISTRY": str(registry_path),
               "QUANT_HOME": str(tmp_path / "quant"), "QUANT_AUTOMATION": "on"}  # a deployment: sensors run
        logs = tmp_path / "logs"
        logs.mkdir()
        commands = {
            "code_server": [str(BIN / "dagster"), "code-server", "start", "-m", "quant_assets.definitions",
                            "-h", "127.0.0.1", "-p", str(code_port)],
            "webserver": [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
            "daemon": [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        }
        for name, cmd in commands.items():
            log = (logs / f"{name}.log").open("w")
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

        def location_loaded():
            try:
                data = _graphql(web_port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                "locationOrLoadError { __typename } } } } }")
            except OSError:
                return False
            entries = data["workspaceOrError"]["locationEntries"]
            return entries and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

        _wait(location_loaded, 180, "the webserver to load the code location", logs)
        yield Deployment(web_port, store_db, registry_path, logs)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:  # the code server ignores SIGTERM in dagster 1.13
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
        assert all(p.poll() is not None for p in procs)
        postgres_server.drop_database(dagster_db)
        postgres_server.drop_database(store_db)


@pytest.mark.slow
def test_graphql_backfill_then_sensor_retrain_lands_in_postgres(deployment):
    web_port = deployment.web_port
    # the candles the latest retrain week reads: 2 markets x 28 days, as one partitioned backfill
    registry = load_registry(deployment.registry_path)
    from quant_assets.partitions import latest_retrain_week

    week = latest_retrain_week(registry, registry.universe(U), datetime.now(UTC))
    week_start = datetime.fromisoformat(week).replace(tzinfo=UTC)
    days = [f"{week_start + timedelta(days=i):%Y-%m-%d}" for i in range(-21, 7)]
    names = [f"{d}|synth.{m}-USD.1d" for d in days for m in ("AAA", "BBB")]
    launched = _graphql(web_port, LAUNCH, {"params": {
        "partitionNames": names, "assetSelection": [{"path": ["market_data", "ohlcv"]}], "fromFailure": False,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    def retrain_run():
        runs = _graphql(web_port, RUNS, {"tags": [{"key": "quant/trigger", "value": "new_candles"}]})
        results = runs["runsOrError"]["results"]
        failed = [r for r in results if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, failed
        # the same sensor also starts forward runs for the landed days past the universe's forward start
        return [r for r in results if r["status"] == "SUCCESS" and r["jobName"] == f"retrain_{U}"]

    done = _wait(retrain_run, 420, "the sensor-triggered retrain to succeed", deployment.logs)
    assert len(done) == 1
    tags = {t["key"]: t["value"] for t in done[0]["tags"]}
    assert tags["dagster/partition"] == week
    store = ConfigurationStore(deployment.store_db)
    try:
        rows = store.list_configurations(universe_key=U)
        assert len(rows) == 1 and rows[0].orchestrator_run_id == done[0]["runId"]
    finally:
        store.dispose()


@pytest.mark.slow
def test_browser_shows_the_asset_graph(deployment):
    """Headless Chromium (Debian's package; scripts/test.sh installs it) renders the webserver's asset
    graph; the DOM names the platform's assets and a screenshot is kept in test-artifacts/."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: scripts/test.sh installs Debian's chromium package")
        pytest.skip("chromium is not installed (scripts/test.sh installs it)")
    # the universe's asset group: its lineage graph, with the candle asset it reads
    url = f"http://127.0.0.1:{deployment.web_port}/locations/quant/asset-groups/{U}"
    flags = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--window-size=1600,1000", "--virtual-time-budget=20000"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "asset_graph.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], check=True, capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 10_000
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180).stdout
    for name in ("price_panel", "trained_parameters", "walk_forward_report", "configuration"):
        assert name in dom, f"{name} not on the asset graph page"

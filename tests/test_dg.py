"""Dagster's current tooling finds the project: `dg check defs` and `dg list defs` through [tool.dg] in
pyproject.toml (as `dg dev` does), and workspace.yaml still loads the same code location for `dagster dev -w`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
U = "momentum_btc_eth_usdc_1d"

pytestmark = pytest.mark.slow  # each command loads the whole platform in a fresh process (~10 s on 2 cores)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A throw-away Dagster home, candle home and store; the shipped registry."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k not in ("QUANT_REGISTRY", "QUANT_AUTOMATION", "VIRTUAL_ENV")}
    return {**env, "DAGSTER_HOME": str(home), "QUANT_HOME": str(tmp_path / "quant"),
            "QUANT_DATABASE_URL": f"sqlite:///{tmp_path / 'configs.db'}", "COLUMNS": "200"}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs(env: dict[str, str]) -> None:
    out = _run([str(BIN / "dg"), "check", "defs"], env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
    # [tool.dg.cli] suppresses the activated-venv warning: running .venv/bin/dg without activating is the README's way
    assert "does not match the virtual environment" not in out.stdout + out.stderr


def test_dg_list_defs(env: dict[str, str]) -> None:
    out = _run([str(BIN / "dg"), "list", "defs", "--json"], env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    listed = json.loads(out.stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {"market_data/ohlcv", f"{U}/trained_parameters", f"{U}/configuration", "live_configurations"} <= assets
    assert {"retrain_on_new_candles", "refresh_live_after_runs"} <= {s["name"] for s in listed["sensors"]}
    assert f"retrain_{U}_schedule" in {s["name"] for s in listed["schedules"]}
    # the table form a person reads names the same asset
    table = _run([str(BIN / "dg"), "list", "defs"], env)
    assert table.returncode == 0 and f"{U}/configuration" in table.stdout, table.stdout[-2000:] + table.stderr[-2000:]


def test_workspace_yaml_loads_the_same_location(env: dict[str, str]) -> None:
    """`dagster dev -w workspace.yaml` (and the deploy layouts) read workspace.yaml: it still loads."""
    out = _run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "quant" in out.stdout + out.stderr

"""The Dagster definitions load (the equivalent of `dagster definitions validate`)."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from quant_assets.definitions import build_definitions, defs

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_validate():
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_of_the_demo_universe():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    u = "momentum_btc_eth_usdc_1d"
    assert {"market_data/candles", f"{u}/price_panel", f"{u}/trained_parameters",
            f"{u}/walk_forward_report", f"{u}/configuration"} <= keys
    candles = defs.resolve_assets_def(dg.AssetKey(["market_data", "candles"]))
    assert set(candles.partitions_def.get_partition_keys()) == {
        "shipped.BTC-USD.1d", "shipped.ETH-USD.1d", "shipped.USDC-USD.1d"}


def test_registry_env_override(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("markets:\n  - {exchange: shipped, symbol: BTC/USD, timeframe: 1d}\nuniverses: []\n")
    monkeypatch.setenv("QUANT_REGISTRY", str(reg))
    d = build_definitions()
    assert {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()} == {"market_data/candles"}


def test_dagster_cli_validates_from_repo_root():
    """`dagster definitions validate` finds the code through [tool.dagster] in pyproject.toml."""
    exe = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(exe), "definitions", "validate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr

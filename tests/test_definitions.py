"""The Dagster definitions load (the equivalent of `dagster definitions validate`)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from quant_assets.definitions import build_definitions, defs
from quant_core.universe import load_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "quant_assets" / "registry.yaml"


def test_definitions_validate():
    dg.Definitions.validate_loadable(defs)


SWEEP_MARKETS = {f"{ex}.{base}-USDT.{tf}" for ex in ("binance", "kraken") for base in ("BTC", "ETH", "SOL")
                 for tf in ("5m", "15m", "1h", "4h")}


def test_asset_graph_of_the_demo_universe():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    u = "momentum_btc_eth_usdc_1d"
    assert {"market_data/ohlcv", f"{u}/price_panel", f"{u}/trained_parameters",
            f"{u}/walk_forward_report", f"{u}/configuration"} <= keys
    ohlcv = defs.resolve_assets_def(dg.AssetKey(["market_data", "ohlcv"]))
    dims = {d.name: d.partitions_def for d in ohlcv.partitions_def.partitions_defs}
    assert set(dims["market"].get_partition_keys()) == {
        "shipped.BTC-USD.1d", "shipped.ETH-USD.1d", "shipped.USDC-USD.1d"} | SWEEP_MARKETS
    assert len(SWEEP_MARKETS) == 24
    # the UI's backfill runs one market per run (Dagster splits market x day selections so): the policy says so
    assert ohlcv.backfill_policy == dg.BackfillPolicy.multi_run(366)
    def training_pools(asset: str) -> dict:  # the search's parts and their combination run in the training pool
        graph = defs.resolve_assets_def(dg.AssetKey([asset, "trained_parameters"])).node_def
        return {n.name: n.definition.pool for n in graph.nodes}

    assert training_pools(u) == {"plan_search": None, "search_part": "training", "combine_search": "training"}
    sweeps = [f"sweep_{m.split('.')[0]}_{m.split('.')[1].split('-')[0].lower()}_usdt_{m.split('.')[2]}"
              for m in sorted(SWEEP_MARKETS)]
    for s in sweeps:  # one universe per market, each with its four assets and a weekly retrain
        assert {f"{s}/{a}" for a in ("candles", "trained_parameters", "walk_forward_report", "configuration")} <= keys
        assert training_pools(s)["search_part"] == "training"
    # one weekly retrain per registry universe (pools and every CEX strategy alike), plus the ingest
    universes = [x.name for x in load_registry(REGISTRY).universes]
    assert {u, *sweeps} <= set(universes)
    assert {s.name for s in defs.schedules} == {"ingest_ohlcv_schedule", *(f"retrain_{x}_schedule" for x in universes)}
    assert [s.name for s in defs.sensors] == ["retrain_on_new_candles", "refresh_live_after_runs",
                                              "reconcile_training_jobs"]
    # the living lifecycle: a daily forward-performance asset per universe (its own job), one live overview
    assert {f"{x}/forward_performance" for x in universes} | {"live_configurations"} <= keys
    fwd = defs.resolve_assets_def(dg.AssetKey([u, "forward_performance"]))
    assert isinstance(fwd.partitions_def, dg.DailyPartitionsDefinition)
    assert {c.name for c in fwd.check_specs} == {"circuit_breakers"}
    assert {j.name for j in defs.jobs} >= {f"forward_{x}" for x in universes} | {"refresh_live_configurations"}
    assert set(defs.resources) == {"ohlcv_io_manager", "exchange", "config_store", "jax_settings"}


def test_registry_env_override(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("markets:\n  - {exchange: shipped, symbol: BTC/USD, timeframe: 1d}\nuniverses: []\n")
    monkeypatch.setenv("QUANT_REGISTRY", str(reg))
    d = build_definitions()
    assert {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()} == {"market_data/ohlcv"}


def test_dagster_cli_validates_from_repo_root():
    """`dagster definitions validate` finds the code through [tool.dagster] in pyproject.toml."""
    exe = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(exe), "definitions", "validate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_backfills_a_range_of_candles_in_one_run(tmp_path):
    """`python -m quant_assets.backfill` runs a markets x days rectangle in one run, on $DAGSTER_HOME's instance
    (`dagster asset materialize --partition-range` accepts single-run assets only; ohlcv's policy is multi_run)."""
    env = {**__import__("os").environ, "QUANT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    out = subprocess.run([sys.executable, "-m", "quant_assets.backfill", "--from", "2024-01-01", "--to", "2024-01-30",
                          "--market", "shipped.BTC-USD.1d", "--market", "shipped.ETH-USD.1d"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "60 candle partitions" in out.stdout and "1 run(s): ok" in out.stdout, \
        out.stdout[-2000:] + out.stderr[-3000:]
    files = sorted(tmp_path.glob("ohlcv/market_data/ohlcv/*/*.parquet"))
    assert len(files) == 60 and files[0].parent.name == "2024-01-01"


def test_retrain_runs_carry_kubernetes_resources(monkeypatch):
    import json

    from quant_assets.executor import k8s_run_tags

    cpu = json.loads(k8s_run_tags()["dagster-k8s/config"])
    assert "nvidia.com/gpu" not in cpu["container_config"]["resources"]["limits"]
    monkeypatch.setenv("QUANT_TRAINING_GPU", "1")
    gpu = json.loads(k8s_run_tags()["dagster-k8s/config"])
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["pod_spec_config"]["node_selector"] == {"accelerator": "nvidia"}
    job = build_definitions().resolve_job_def("retrain_momentum_btc_eth_usdc_1d")
    assert "dagster-k8s/config" in job.tags and job.tags["quant/kind"] == "retrain"


def test_a_bad_search_thread_count_fails_the_load_naming_it():
    """QUANT_SEARCH_THREADS (quant_core.train.threads) is checked when the code location loads, not in a step."""
    env = {**os.environ, "QUANT_SEARCH_THREADS": "0"}
    exe = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(exe), "definitions", "validate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode != 0 and "QUANT_SEARCH_THREADS='0' is not a positive integer" in out.stdout + out.stderr

"""The `quant` command on real files: simulate, db upgrade, configs list/export."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quant_core.cli import main
from quant_core.data.price_file import shipped_prices_path
from quant_core.lifecycle import LifecycleStage
from quant_core.store import ConfigurationStore, NewConfiguration

SPEC = """
rule: momentum
tokens: [USDC, BTC, ETH]
startDateString: "2024-01-01 00:00:00"
endDateString: "2024-03-01 00:00:00"
parameters: {memory_days: 7, k_per_day: [10, 20, 30]}
"""


def test_simulate_writes_one_row_per_step(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out.csv"
    assert main(["simulate", str(spec), "--prices", str(shipped_prices_path()), "--out", str(out)]) == 0
    df = pl.read_csv(out, try_parse_dates=True)
    assert df.height == 60  # 2024-01-01 .. 2024-02-29, end exclusive
    assert df.columns == ["timestamp", "value", "weight_USDC", "weight_BTC", "weight_ETH",
                          "reserve_USDC", "reserve_BTC", "reserve_ETH"]
    assert df["value"][0] == 1_000_000.0
    np.testing.assert_allclose(df.select(pl.sum_horizontal("^weight_.*$")).to_numpy().ravel(), 1.0, atol=1e-12)
    printed = capsys.readouterr().out
    assert "wrote 60 rows" in printed
    # the headline metrics are those of the written value path
    v = df["value"].to_numpy()
    shown = {line[:24].strip(): line[24:].strip() for line in printed.splitlines() if line.startswith("  ")}
    assert shown["total return"] == f"{100 * (v[-1] / v[0] - 1):.2f}%"
    dd = 1 - min(v[i] / v[: i + 1].max() for i in range(len(v)))
    assert shown["max drawdown"] == f"{100 * dd:.2f}%"  # a drawdown is reported positive
    assert {"days", "vs HODL", "annualised return", "Sharpe (annualised)"} <= set(shown)


def test_simulate_index_market_cap_reads_market_caps(tmp_path):
    prices = pl.read_csv(shipped_prices_path())
    supply = {"BTC": 19.5e6, "ETH": 120e6, "USDC": 30e9}
    caps = prices.with_columns(
        market_cap_usd=pl.col("price_usd") * pl.col("token").replace_strict(supply, return_dtype=pl.Float64))
    caps_file = tmp_path / "caps.csv"
    caps.select("date", "token", "market_cap_usd").write_csv(caps_file)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("rule: momentum", "rule: index_market_cap").replace(
        "parameters: {memory_days: 7, k_per_day: [10, 20, 30]}", "parameters: {memory_days: 3}"))
    out = tmp_path / "out.csv"
    argv = ["simulate", str(spec), "--prices", str(shipped_prices_path()), "--out", str(out)]
    assert main(argv + ["--market-caps", str(caps_file)]) == 0
    df = pl.read_csv(out)
    # the index moves towards the market-cap shares (BTC ~1 tn > ETH ~0.35 tn > USDC 30 bn)
    assert df["weight_BTC"][-1] > df["weight_ETH"][-1] > df["weight_USDC"][-1]
    # it starts at the guardrailed market-cap shares (as the reference does), not at the equal initial weights
    assert df["weight_BTC"][0] > 0.6
    assert main(argv) == 2  # without market caps: a clear error, exit code 2


def test_simulate_rvr_reads_spreads_from_a_file(tmp_path, capsys):
    """--spreads: a long file at any step; each minute takes the last quote at or before it. Equals the library
    call with the same per-minute spreads; refused for rules that do not use spreads, demanded by rvr__."""
    from quant_core.data.panel import panel_from_long_prices
    from quant_core.runspec import load_run_spec
    from quant_core.sim.simulate import simulate

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("rule: momentum", "rule: rvr__momentum") + "fees: 0.003\n")
    spreads = tmp_path / "spreads [daily].csv"
    spreads.write_text("date,token,spread\n2023-12-01,BTC,0.0004\n2023-12-01,ETH,0.0006\n2023-12-01,USDC,0\n"
                       "2024-02-01,BTC,0.002\n")
    out = tmp_path / "out.csv"
    argv = ["simulate", str(spec), "--prices", str(shipped_prices_path()), "--out", str(out)]
    assert main(argv + ["--spreads", str(spreads)]) == 0
    assert "RVR (final)" in capsys.readouterr().out
    run = load_run_spec(spec)
    minutes = 59 * 1440 + 1  # 60 daily steps, stepped through minutes
    expected = np.tile([0.0004, 0.0006, 0.0], (minutes, 1))
    expected[31 * 1440:, 0] = 0.002  # from 2024-02-01 00:00 (day 31 of the run) on
    ref = simulate(panel_from_long_prices(shipped_prices_path(), run.tokens), run, aux={"spread": expected})
    np.testing.assert_allclose(pl.read_csv(out)["value"].to_numpy(), ref.values, rtol=1e-12)
    assert main(argv) == 2
    assert "pass --spreads FILE" in capsys.readouterr().err
    late = tmp_path / "late.csv"
    late.write_text("date,token,spread\n2024-01-02,BTC,0.1\n2024-01-02,ETH,0.1\n2024-01-02,USDC,0.1\n")
    assert main(argv + ["--spreads", str(late)]) == 2
    assert "'BTC' has no spread at or before the run's start" in capsys.readouterr().err
    spec.write_text(SPEC)
    assert main(argv + ["--spreads", str(spreads)]) == 2
    assert "does not use spreads" in capsys.readouterr().err


def test_bad_spec_exits_2_naming_the_key(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "chunk_perid: 60\n")
    code = main(["simulate", str(spec), "--prices", str(shipped_prices_path()), "--out", str(tmp_path / "o.csv")])
    assert code == 2
    assert "chunk_perid: unknown key; did you mean 'chunk_period'" in capsys.readouterr().err


def test_db_upgrade_and_configs(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["db", "upgrade", "--url", url]) == 0
    d = datetime(2024, 1, 1, tzinfo=UTC)
    with ConfigurationStore(url) as store:
        cfg = store.add_version(NewConfiguration(
            universe_key="u1", strategy="momentum", method="optuna", exchanges=["shipped"], symbols=["BTC/USD"],
            timeframe="1d", parameters={"k_per_day": {"BTC": 1.0}}, metrics={"in_sample": {"daily_log_sharpe": 1.2},
                                                                           "walk_forward": {"oos_sharpe": 0.7}},
            lifecycle_stage=LifecycleStage.VALIDATION, stage_reason="r", stage_evidence={}, sample_size=40,
            train_start=d, train_end=d.replace(month=3), test_start=d.replace(month=3), test_end=d.replace(month=4),
            data_hash="h", code_version="v", seed=0, run_spec={}))
    capsys.readouterr()
    assert main(["configs", "list", "--url", url, "--stage", "VALIDATION"]) == 0
    listing = capsys.readouterr().out
    assert "u1" in listing and "VALIDATION" in listing and "0.700" in listing
    assert main(["configs", "export", str(cfg.id), "--url", url]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["parameters"] == {"k_per_day": {"BTC": 1.0}} and exported["lifecycle_stage"] == "VALIDATION"
    assert main(["configs", "export", "999", "--url", url]) == 2


def test_console_script_installed():
    exe = Path(sys.executable).parent / "quant"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "simulate" in out.stdout


def test_train_writes_the_result_json(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("parameters: {memory_days: 7, k_per_day: [10, 20, 30]}\n", "")
                    + "optimisation_settings: {method: optuna, optuna_settings: {n_jobs: 4, n_startup_trials: 4}}\n")
    out = tmp_path / "result.json"
    assert main(["train", str(spec), "--prices", str(shipped_prices_path()), "--budget", "8", "--seed", "1",
                 "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["rule"] == "momentum" and "trades" not in payload
    assert payload["tokens"] == ["BTC", "ETH", "USDC"] and payload["method"] == "optuna" and payload["seed"] == 1
    assert {"memory_days", "k_per_day"} <= set(payload["parameters"])
    assert all(len(v) == 3 for v in payload["parameters"].values())
    assert set(payload["metrics"]) >= {"initial_train", "train"}
    assert np.isfinite(payload["metrics"]["train"]["objective"])
    assert payload["metrics"]["train"]["objective"] == payload["metrics"]["train"]["daily_log_sharpe"]
    assert len(payload["history"]) == 8 and payload["timings"]["total_s"] > 0
    printed = capsys.readouterr().out  # result.summary(), as for CEX strategies
    assert "momentum, optuna (seed 1): trained on daily_log_sharpe (higher is better)" in printed
    assert "over the training window 2024-01-01..2024-03-01: starting parameters " in printed
    assert " -> trained " in printed and "search maximised daily_log_sharpe on the train part" in printed
    assert "trades:" not in printed and 'parameters: {"' in printed


def test_train_rejects_bad_budget_and_untrainable_rules(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with pytest.raises(SystemExit):
        main(["train", str(spec), "--prices", str(shipped_prices_path()), "--budget", "0"])
    assert "--budget must be >= 1" in capsys.readouterr().err
    cow = tmp_path / "cow.yaml"
    cow.write_text(SPEC.replace("rule: momentum", "rule: cow").replace("[USDC, BTC, ETH]", "[ETH, USDC]")
                   .replace("parameters: {memory_days: 7, k_per_day: [10, 20, 30]}\n", ""))
    assert main(["train", str(cow), "--prices", str(shipped_prices_path())]) == 2
    assert "optuna, grid or random" in capsys.readouterr().err


def test_train_reads_candle_parquet_per_token(tmp_path, capsys):
    """`--prices TOKEN=candles.parquet` (as `quant data fetch` writes) gives each token its closes."""
    from quant_core.data.synthetic import synthetic_candles

    args = []
    for i, token in enumerate(["AAA", "BBB", "CCC"]):
        path = tmp_path / f"{token}.parquet"
        synthetic_candles(24 * 90, "1h", start="2024-01-01", seed=i, start_price=10.0 * (i + 1)).write_parquet(path)
        args += ["--prices", f"{token}={path}"]
    spec = tmp_path / "spec.yaml"
    spec.write_text("rule: momentum\ntokens: [AAA, BBB, CCC]\nstartDateString: '2024-02-01'\n"
                    "endDateString: '2024-03-15'\nendTestDateString: '2024-03-30'\nmax_memory_days: 20\n"
                    "optimisation_settings: {method: grid, search_settings: {default_points: 3}}\n")
    out = tmp_path / "result.json"
    assert main(["train", str(spec), *args, "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["method"] == "grid" and len(payload["history"]) == 9
    assert set(payload["metrics"]) == {"initial_train", "train", "test"}
    assert len(payload["top"]) == 9 and payload["evaluations_per_second"] > 0
    assert "top" not in payload["details"] and "evaluations_per_second" not in payload["details"]
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"timestamp": [1, 2], "price": [1.0, 2.0]}).write_parquet(bad)
    assert main(["train", str(spec), "--prices", f"AAA={bad}"]) == 2
    assert "timestamp and close" in capsys.readouterr().err


def test_list_shows_every_rule_hook_and_strategy_from_the_schemas(capsys):
    from quant_core.sim.registry import available_rules
    from quant_core.strategies import available_strategies, get_strategy

    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed["rules"]] == available_rules()
    assert {"liquidity_sweep", "donchian_breakout"} <= {e["name"] for e in listed["strategies"]}
    assert [e["name"] for e in listed["strategies"]] == available_strategies()
    assert {e["name"] for e in listed["hooks"]} == {"lvr__", "rvr__", "bounded__", "ensemble__", "momentum_fee__"}
    donchian = next(e for e in listed["strategies"] if e["name"] == "donchian_breakout")
    schema = get_strategy("donchian_breakout")
    assert [p["name"] for p in donchian["parameters"]] == [p.name for p in schema.params]
    entry = next(p for p in donchian["parameters"] if p["name"] == "entry_period")
    assert (entry["default"], entry["range"], entry["unit"]) == ("20", "10 .. 100 (whole)", "bars")
    assert main(["list", "strategies"]) == 0
    text = capsys.readouterr().out
    assert "donchian_breakout:" in text and "liquidity_sweep:" in text and "momentum" not in text


def test_list_with_a_typo_names_the_close_one(capsys):
    assert main(["list", "--name", "momentm"]) == 2
    assert "did you mean 'momentum'" in capsys.readouterr().err

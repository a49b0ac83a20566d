"""`quant configs live / history / export --live / list` on a real SQLite store with a written timeline."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from quant_core.cli import main
from quant_core.lifecycle import LifecycleStage
from quant_core.store import ConfigurationStore, ForwardRecord, NewConfiguration, StoredConfiguration, TimelineEvent

S = LifecycleStage
D1 = datetime(2024, 4, 1, tzinfo=UTC)
D2 = datetime(2024, 5, 1, tzinfo=UTC)
V2_RETURNS = [0.01, -0.004, 0.02]
V2_BENCH = [0.005, 0.001, -0.002]


def version(store: ConfigurationStore, universe: str, test_end: datetime, seed: int = 0) -> StoredConfiguration:
    start = test_end - timedelta(days=90)
    return store.add_version(NewConfiguration(
        universe_key=universe, strategy="momentum", method="optuna", exchanges=["shipped"], symbols=["BTC/USD"],
        timeframe="1d", parameters={"k_per_day": {"BTC": 1.0 + seed}},
        metrics={"in_sample": {"daily_log_sharpe": 1.2}, "walk_forward": {"oos_sharpe": 0.7}},
        lifecycle_stage=S.VALIDATION, stage_reason="enough days", stage_evidence={}, sample_size=40,
        train_start=start, train_end=test_end - timedelta(days=30), test_start=test_end - timedelta(days=30),
        test_end=test_end, data_hash="h", code_version="v", seed=seed, run_spec={}))


def readings(loss: float, streak: float) -> dict:
    return {
        "max_daily_loss": {"value": loss, "limit": 0.02, "tripped": False, "action": "retire", "detail": ""},
        "consecutive_losses_limit": {"value": streak, "limit": 5, "tripped": False, "action": "retire",
                                     "detail": "losing days in a row"},
        "unusual_market_threshold": {"value": 3.5, "limit": 3.0, "tripped": True, "action": "pause",
                                     "detail": "largest move today (market 0), sigma: 3.5 > 3"},
        "regime_break_threshold": {"value": None, "limit": 0.3, "tripped": False, "action": "pause",
                                   "detail": "needs 20 forward and hold-out days, has 3 and 30"},
        "latency_threshold_ms": {"value": None, "limit": 250.0, "tripped": False, "action": "live_only",
                                 "detail": "applies to live execution"},
    }


def record(cid: int, day: datetime, r: float, b: float, value: float, **kw) -> ForwardRecord:
    return ForwardRecord(configuration_id=cid, universe_key="u1", day=day, role="live", log_return=r, value=value,
                         benchmark_log_return=b, **kw)


@pytest.fixture
def url(tmp_path) -> str:
    """u1: v1 live from D1, retired on D2 and replaced by v2 (paused on its last day); u2: one version, never
    live; u3: live, then retired (nothing live)."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with ConfigurationStore(url) as store:
        v1, v2 = version(store, "u1", D1), version(store, "u1", D2, seed=1)
        value = 1000.0
        records = [record(v1.id, D1 + timedelta(days=i), -0.001, 0.0, 1000.0) for i in range(3)]
        for i, (r, b) in enumerate(zip(V2_RETURNS, V2_BENCH, strict=True)):
            value *= math.exp(r)
            records.append(record(v2.id, D2 + timedelta(days=i), r, b, value, n_trades=i,
                                  readings=readings(max(0.0, -math.expm1(r)), float(r < 0))))
        last = D2 + timedelta(days=2)
        store.write_timeline("u1", records, [
            TimelineEvent(v1.id, "live", D1, "first version past the gate"),
            TimelineEvent(v1.id, "off", D2, "replaced by challenger", from_stage=S.VALIDATION, to_stage=S.RETIRED),
            TimelineEvent(v2.id, "live", D2, "beat the champion"),
            TimelineEvent(v2.id, "pause", last, "circuit breaker unusual_market_threshold: 3.5 > 3"),
        ])
        version(store, "u2", D1)
        v3 = version(store, "u3", D1)
        store.write_timeline("u3", [], [
            TimelineEvent(v3.id, "live", D1, "first version"),
            TimelineEvent(v3.id, "off", D2, "circuit breaker max_daily_loss tripped", from_stage=S.VALIDATION,
                          to_stage=S.RETIRED),
        ])
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_live_json_values(url, capsys):
    code, out, _ = run(capsys, "configs", "live", "--json", "--url", url)
    assert code == 0
    by = {s["universe"]: s for s in json.loads(out)}
    assert sorted(by) == ["u1", "u2", "u3"]
    u1 = by["u1"]
    assert (u1["configuration_id"], u1["stage"], u1["live_since"], u1["last_day"]) == (2, "VALIDATION",
                                                                                       "2024-05-01", "2024-05-03")
    assert u1["forward_days"] == 3 and u1["forward_trades"] == 0 + 1 + 2
    assert u1["forward_return"] == pytest.approx(math.expm1(sum(V2_RETURNS)))
    assert u1["forward_benchmark_return"] == pytest.approx(math.expm1(sum(V2_BENCH)))
    assert u1["max_drawdown"] == pytest.approx(-math.expm1(-0.004))  # a drawdown is reported positive
    assert u1["paused"] is True and u1["breakers"]["latency_threshold_ms"]["limit"] == 250.0
    assert by["u2"]["configuration_id"] is None and by["u2"]["why"] == "nothing is live yet"
    assert by["u3"]["why"] == "nothing is live: circuit breaker max_daily_loss tripped"
    code, out, _ = run(capsys, "configs", "live", "--json", "--universe", "u2", "--url", url)
    assert [s["universe"] for s in json.loads(out)] == ["u2"]


def test_live_table(url, capsys):
    code, out, _ = run(capsys, "configs", "live", "--url", url)
    assert code == 0
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:4] == ["universe", "config", "stage", "live"] and "paused" in header and "breakers" in header
    u1 = next(line for line in lines if line.startswith("u1 "))
    assert " 2 " in u1 and "VALIDATION" in u1 and "2024-05-01" in u1 and " yes " in u1
    assert f"{math.expm1(sum(V2_RETURNS)) * 100:.2f}%" in u1 and f"{math.expm1(sum(V2_BENCH)) * 100:.2f}%" in u1
    # the last day's readings: a gain (no loss), no losing streak; a tripped pause; unreadable; live only
    assert "max_daily_loss 0.0%/2%" in u1 and "consecutive_losses_limit 0/5" in u1
    assert "unusual_market_threshold 3.5/3!" in u1 and "regime_break_threshold -/0.3" in u1
    assert "latency_threshold_ms live only" in u1
    u2 = next(line for line in lines if line.startswith("u2 "))
    assert u2.split()[:2] == ["u2", "none"]
    assert "u2: nothing is live yet" in lines and "u1: live since 2024-05-01: beat the champion" in lines
    assert "u3: nothing is live: circuit breaker max_daily_loss tripped" in lines


def test_breaker_format():
    from quant_core.reporting import format_breaker

    assert format_breaker("max_daily_loss", {"value": 0.004, "limit": 0.02, "action": "retire"}) == \
        "max_daily_loss 0.4%/2%"
    assert format_breaker("max_adverse_selection", {"value": 0.75, "limit": 0.6, "tripped": True,
                                                    "action": "pause"}) == "max_adverse_selection 75.0%/60%!"
    assert format_breaker("latency_threshold_ms", {"value": None, "limit": 500, "action": "live_only"}) == \
        "latency_threshold_ms live only"


def test_history_orders_versions_events_and_periods(url, capsys):
    code, out, _ = run(capsys, "configs", "history", "u1", "--json", "--url", url)
    assert code == 0
    h = json.loads(out)
    assert [(v["id"], v["revision"], v["available"], v["stage"]) for v in h["versions"]] == [
        (1, 1, "2024-04-01", "RETIRED"), (2, 1, "2024-05-01", "VALIDATION")]
    assert h["versions"][1]["forward_return"] == pytest.approx(math.expm1(sum(V2_RETURNS)))
    assert [(e["day"], e["configuration_id"], e["kind"]) for e in h["events"]] == [
        ("2024-04-01", 1, "created"), ("2024-05-01", 2, "created"), ("2024-04-01", 1, "live"),
        ("2024-05-01", 1, "off"), ("2024-05-01", 2, "live"), ("2024-05-03", 2, "pause")]
    assert h["live_periods"] == [
        {"configuration_id": 1, "since": "2024-04-01", "until": "2024-05-01", "reason": "first version past the gate",
         "ended_because": "replaced by challenger"},
        {"configuration_id": 2, "since": "2024-05-01", "until": None, "reason": "beat the champion",
         "ended_because": None}]
    code, out, _ = run(capsys, "configs", "history", "u1", "--url", url)
    assert code == 0
    sections = [out.index(s) for s in ("\nversions\n", "\nevents\n", "\nlive periods\n")]
    assert sections == sorted(sections)
    events = out[sections[1]:sections[2]]
    assert events.index("first version past the gate") < events.index("replaced by challenger") \
        < events.index("beat the champion") < events.index("circuit breaker unusual_market_threshold")
    assert "VALIDATION -> RETIRED" in events and "live now" in out[sections[2]:]


def test_history_unknown_universe(url, capsys):
    code, _, err = run(capsys, "configs", "history", "uu1", "--url", url)
    assert code == 2
    assert "unknown universe 'uu1': no stored version names it (did you mean 'u1'?); stored universes: u1" in err
    code, _, err = run(capsys, "configs", "history", "zzzz", "--url", url)
    assert code == 2 and "did you mean" not in err and "unknown universe 'zzzz'" in err
    assert run(capsys, "configs", "live", "--universe", "nope", "--url", url)[0] == 2


def test_export_live(url, capsys):
    code, out, _ = run(capsys, "configs", "export", "--live", "u1", "--url", url)
    assert code == 0
    live = json.loads(out)
    code, out, _ = run(capsys, "configs", "export", "2", "--url", url)
    by_id = json.loads(out)
    assert {k: v for k, v in live.items() if k != "live"} == by_id
    assert live["id"] == 2 and live["parameters"] == {"k_per_day": {"BTC": 2.0}}
    info = live["live"]
    assert (info["since"], info["stage"], info["paused"]) == ("2024-05-01", "VALIDATION", True)
    # the readings' limits (the universe's), and the version's defaults for breakers not read
    assert info["breakers"]["latency_threshold_ms"] == {"limit": 250.0, "action": "live_only"}
    assert info["breakers"]["max_daily_loss"] == {"limit": 0.02, "action": "retire"}
    assert info["breakers"]["max_adverse_selection"] == {"limit": 0.6, "action": "pause"}


def test_export_live_errors(url, capsys):
    code, _, err = run(capsys, "configs", "export", "--live", "u3", "--url", url)
    assert code == 2 and "no live version (nothing is live: circuit breaker max_daily_loss tripped)" in err
    code, _, err = run(capsys, "configs", "export", "--live", "u2", "--url", url)
    assert code == 2 and "nothing is live yet" in err
    assert run(capsys, "configs", "export", "--live", "u7", "--url", url)[0] == 2
    with pytest.raises(SystemExit) as exc:
        main(["configs", "export", "--url", url])
    assert exc.value.code == 2 and "one of the arguments ID --live is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["configs", "export", "2", "--live", "u1", "--url", url])
    assert "not allowed with" in capsys.readouterr().err


def test_list_shows_current_stage_and_live(url, capsys):
    code, out, _ = run(capsys, "configs", "list", "--universe", "u1", "--url", url)
    assert code == 0
    header, _, *rows = out.splitlines()
    assert "stage now" in header and " live " in header
    assert [r.split()[:5] for r in rows] == [["1", "u1", "momentum", "RETIRED", "no"],
                                            ["2", "u1", "momentum", "VALIDATION", "yes"]]
    code, out, _ = run(capsys, "configs", "list", "--stage", "retired", "--url", url)
    assert [r.split()[:2] for r in out.splitlines()[2:]] == [["1", "u1"], ["4", "u3"]]
    assert run(capsys, "configs", "list", "--stage", "LIVE", "--url", url)[0] == 2


def test_typos_give_argparse_errors(url, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["configs", "liev"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'liev'" in err
    assert all(f"'{c}'" in err for c in ("list", "live", "history", "export"))
    with pytest.raises(SystemExit):
        main(["configs", "live", "--jsn"])
    assert "unrecognized arguments: --jsn" in capsys.readouterr().err


def test_breakers_in_definition_order(url, capsys):
    """Readings are shown, and limits exported, in BREAKERS' order whatever order the JSON column returns."""
    from quant_core.live.breakers import BREAKERS

    out = run(capsys, "configs", "export", "--live", "u1", "--url", url)[1]
    assert list(json.loads(out)["live"]["breakers"]) == list(BREAKERS)
    line = next(x for x in run(capsys, "configs", "live", "--url", url)[1].splitlines() if x.startswith("u1 "))
    shown = [n for n in BREAKERS if n in line]
    assert sorted(shown, key=line.index) == shown

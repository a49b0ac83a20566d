"""The strategy contract: automatic registration, `Prepared` checks, and the state machine's optional rules
(exit signals, a stop anchored at the fill, no target) on hand-derived trades.

The toy strategies here hand the state machine planted signal tables on a flat market (open 100, high
100.5, low 99.5, close 100, ATR 1 everywhere), so every trade below follows from the rules in
quant_core.strategies.backtest's docstring by hand.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import quant_core  # noqa: F401  (switches JAX to float64 before anything else)
from quant_core.params import Param
from quant_core.strategies import available_strategies, get_strategy
from quant_core.strategies.backtest import BacktestError, Bars, Costs, backtest
from quant_core.strategies.schema import Constraint, Prepared, Strategy

BARS_PER_DAY = 24
WARMUP = 24
T_WINDOW = 10 * BARS_PER_DAY
N_BARS = WARMUP + T_WINDOW
FRICTIONLESS = Costs(fee=0.0, slippage=0.0, position_fraction=0.25, initial_capital=5_000.0)
COSTS = Costs(fee=0.0006, slippage=0.0002, position_fraction=0.5, initial_capital=10_000.0)
FLAT = (100.0, 100.5, 99.5, 100.0)


def test_strategies_register_themselves():
    assert {"liquidity_sweep", "donchian_breakout"} <= set(available_strategies())
    for name in available_strategies():
        s = get_strategy(name)
        assert s.name == name
        assert sys.modules[f"quant_core.strategies.{name}"].STRATEGY is s


def test_discovery_imports_only_strategy_modules(tmp_path):
    """In a fresh interpreter: importing the package imports no strategy; discovery imports the modules that
    define STRATEGY (a new one needs no edit elsewhere) and never a module without it, nor the backtester."""
    (tmp_path / "toy_strategy.py").write_text(textwrap.dedent("""
        from quant_core.params import Param
        from quant_core.strategies.schema import Strategy

        STRATEGY = Strategy("toy", (Param("x", 0, 1, 0.5),))
    """))
    (tmp_path / "not_a_strategy.py").write_text("raise RuntimeError('discovery imported a helper module')\n")
    code = textwrap.dedent(f"""
        import sys
        import quant_core.strategies as s
        loaded = lambda: sorted(m for m in sys.modules if m.startswith("quant_core.strategies."))
        assert loaded() == ["quant_core.strategies.schema"], loaded()
        s.__path__.append({str(tmp_path)!r})
        names = s.available_strategies()
        assert {{"liquidity_sweep", "donchian_breakout", "toy"}} <= set(names), names
        assert s.get_strategy("toy").params[0].name == "x"
        assert "quant_core.strategies.not_a_strategy" not in sys.modules
        assert "quant_core.strategies.backtest" not in sys.modules, loaded()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_strategy_that_is_not_a_strategy_is_named(tmp_path):
    (tmp_path / "bad_strategy.py").write_text("STRATEGY = 3\n")
    code = (f"import quant_core.strategies as s; s.__path__.append({str(tmp_path)!r}); s.available_strategies()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "bad_strategy.STRATEGY is a int" in out.stderr


# ---------------------------------------------------------------------------------------------- toy strategies


def flat_bars(planted: dict[int, tuple[float, float, float, float]]) -> Bars:
    """The flat market with planted candles {window bar: (open, high, low, close)}."""
    data = {k: np.full(N_BARS, v) for k, v in zip(("open", "high", "low", "close"), FLAT, strict=True)}
    for k, bar in planted.items():
        for name, value in zip(("open", "high", "low", "close"), bar, strict=True):
            data[name][WARMUP + k] = value
    return Bars(timestamp=3_600_000 * np.arange(N_BARS, dtype=np.int64), volume=np.full(N_BARS, 1.0),
                window_start=WARMUP, bars_per_day=BARS_PER_DAY, **data)


def toy(entries: dict[int, int], exits: dict[int, int] | None, anchor: str = "fill",
        rr: float | None = None) -> Strategy:
    """One signal set of planted entry/exit signals {window bar: side}, ATR 1, stop_atr_mult 2 by default."""
    def prepare(bars: Bars, p: dict[str, np.ndarray]) -> Prepared:
        b = p["stop_atr_mult"].size
        ent = np.zeros((T_WINDOW, 1), dtype=np.int8)
        for k, side in entries.items():
            ent[k] = side
        ext = None
        if exits is not None:
            ext = np.zeros((T_WINDOW, 1), dtype=np.int8)
            for k, side in exits.items():
                ext[k] = side
        lanes = {"set": np.zeros(b, np.int32), "atr_row": np.zeros(b, np.int32),
                 "stop_atr_mult": p["stop_atr_mult"], "max_hold_bars": p["max_hold_bars"]}
        if rr is not None:
            lanes["rr_ratio"] = np.full(b, rr)
        win = {k: v[bars.window] for k, v in bars.ohlc().items()}
        return Prepared(bars=win, entries=ent, atr=np.ones((T_WINDOW, 1)), lanes=lanes, exits=ext, stop_anchor=anchor)

    params = (Param("stop_atr_mult", 1.0, 5.0, 2.0, hard_limits=True),
              Param("max_hold_bars", 1, 500, 24, kind="int", hard_limits=True))
    return Strategy("toy", params, prepare=prepare)


def summary(trades: list[dict]) -> list[tuple]:
    return [(t["entry_bar"], t["exit_bar"], t["side"], t["entry_price"], t["exit_price"], t["exit_reason"])
            for t in trades]


# planted events: (entry signals, exit signals, candles, expected trades); fill-anchored stop = fill -+ 2
EVENTS = [
    # the stop hangs from the fill (100 - 2 x 1), touched exactly; no target however high the price goes
    ({10: 1}, {}, {12: (100.0, 150.0, 99.5, 100.0), 13: (100.0, 100.5, 98.0, 100.0)},
     [(11, 13, "long", 100.0, 98.0, "stop")]),
    # the exit signal closes at the close; an exit of the other side is ignored
    ({30: 1}, {32: -1, 34: 1}, {34: (100.0, 101.5, 99.5, 101.0)}, [(31, 34, "long", 100.0, 101.0, "signal")]),
    # stop and exit signal in one bar: the stop (resting order inside the bar) comes first
    ({50: 1}, {55: 1}, {55: (100.0, 100.5, 97.5, 100.0)}, [(51, 55, "long", 100.0, 98.0, "stop")]),
    # reversal: a long's exit signal and a short entry signal at one close; the short's stop at 102
    ({70: 1, 74: -1}, {74: 1, 77: -1}, {}, [(71, 74, "long", 100.0, 100.0, "signal"),
                                            (75, 77, "short", 100.0, 100.0, "signal")]),
    # a short's stop (102) gapped through at the open fills at the open
    ({90: -1}, {}, {93: (103.0, 103.5, 102.5, 103.0)}, [(91, 93, "short", 100.0, 103.0, "stop")]),
    # exit signal and time exit on one bar: the signal names the reason; a time exit alone
    ({110: 1}, {134: 1}, {}, [(111, 134, "long", 100.0, 100.0, "signal")]),
    ({150: 1}, {}, {}, [(151, 174, "long", 100.0, 100.0, "time")]),
    # an entry signal while in the position is ignored; the window's end closes what is open
    ({T_WINDOW - 5: 1, T_WINDOW - 3: 1}, {}, {}, [(T_WINDOW - 4, T_WINDOW - 1, "long", 100.0, 100.0, "end")]),
]


def planted() -> tuple[Bars, Strategy, list[tuple]]:
    entries, exits, candles, want = {}, {}, {}, []
    for e, x, c, w in EVENTS:
        entries |= e
        exits |= x
        candles |= c
        want += w
    return flat_bars(candles), toy(entries, exits), want


def test_exit_signals_fill_anchored_stop_and_no_target_follow_the_rules():
    bars, strategy, want = planted()
    res = backtest(bars, {"stop_atr_mult": np.full(4, 2.0)}, FRICTIONLESS, strategy=strategy, trades=True)
    for j in range(4):
        assert summary(res.trades[j]) == want


def test_target_from_a_fill_anchored_stop():
    """rr_ratio 2 on a fill-anchored stop 2 ATRs away: the target is fill + 4."""
    bars = flat_bars({12: (100.0, 104.0, 99.5, 100.0), 31: (100.0, 103.9, 99.5, 100.0)})
    strategy = toy({10: 1, 30: 1}, None, rr=2.0)
    res = backtest(bars, {"max_hold_bars": [5.0]}, FRICTIONLESS, strategy=strategy, trades=True)
    assert summary(res.trades[0]) == [(11, 12, "long", 100.0, 104.0, "target"), (31, 35, "long", 100.0, 100.0, "time")]


def test_signal_bar_extreme_anchor():
    """The liquidity sweep's anchor on a toy: the long stop at the signal bar's low - 2 ATRs = 97.5."""
    bars = flat_bars({10: (100.0, 100.5, 99.5, 100.0), 13: (100.0, 100.5, 97.5, 100.0)})
    res = backtest(bars, {}, FRICTIONLESS, strategy=toy({10: 1}, None, anchor="extreme"), trades=True)
    assert summary(res.trades[0]) == [(11, 13, "long", 100.0, 97.5, "stop")]


def test_no_exit_table_equals_an_empty_one():
    """exits None (the scan compiled without exit signals) gives exactly what an all-zero table gives."""
    bars, strategy, _ = planted()
    entries = {k: v for e, _, _, _ in EVENTS for k, v in e.items()}
    params = {"stop_atr_mult": np.array([1.0, 2.0, 3.5]), "max_hold_bars": np.array([10.0, 24.0, 300.0])}
    a = backtest(bars, params, COSTS, strategy=toy(entries, None), trades=True)
    b = backtest(bars, params, COSTS, strategy=toy(entries, {}), trades=True)
    assert a.trades == b.trades and sum(len(t) for t in a.trades) > 5
    np.testing.assert_array_equal(a.bar_equity, b.bar_equity)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])


# ---------------------------------------------------------------------------------------------- contract checks


def broken(**changes) -> Strategy:
    base = toy({10: 1}, {12: 1})

    def prepare(bars, p):
        out = base.prepare(bars, p)
        if "lanes" in changes:
            return out._replace(lanes={k: v for k, v in out.lanes.items() if k != changes["lanes"]})
        if "exits" in changes:
            return out._replace(exits=np.zeros((T_WINDOW, 2), np.int8))
        if "anchor" in changes:
            return out._replace(stop_anchor=changes["anchor"])
        return tuple(out)[:4]

    return Strategy("broken", base.params, prepare=prepare)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"lanes": "max_hold_bars"}, "lanes miss ['max_hold_bars']"),
    ({"exits": True}, "exits have shape (240, 2), expected (240, 1)"),
    ({"anchor": "open"}, "stop_anchor 'open'"),
    ({}, "not a Prepared"),
])
def test_a_broken_prepare_is_named(changes, needle):
    with pytest.raises(BacktestError) as err:
        backtest(flat_bars({}), {}, FRICTIONLESS, strategy=broken(**changes))
    assert needle in str(err.value)


def test_constraints_are_checked_with_the_schema():
    s = Strategy("c", (Param("a", 0, 10, 1), Param("b", 0, 10, 5)),
                 constraints=(Constraint(("a", "b"), lambda a, b: a < b, "a must be below b"),))
    assert s.batch({"a": [1.0, 2.0]})["b"].tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match=r"parameters: a must be below b; got a=6, b=5 \(combination 1 of 2\)"):
        s.batch({"a": [1.0, 6.0]})
    with pytest.raises(ValueError, match="a=7, b=5"):
        s.resolve({"a": 7.0})
    assert s.valid({"a": np.array([1.0, 6.0]), "b": np.array([5.0, 5.0])}).tolist() == [True, False]

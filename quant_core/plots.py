"""PNG plots for reports (matplotlib, headless)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pool_plot(timestamps, values, hodl_values, weights, tokens, title: str, split=None) -> bytes:
    """Pool value vs HODL (top) and weights over time (bottom); `split` marks train/test."""
    t = np.asarray(timestamps).astype("datetime64[ms]")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, values, label="pool")
    ax1.plot(t, hodl_values, label="HODL", alpha=0.8)
    ax1.set_ylabel("value (USD)")
    ax1.legend()
    ax1.set_title(title)
    ax2.stackplot(t, np.asarray(weights).T, labels=list(tokens))
    ax2.set_ylabel("weight")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="upper left", fontsize="small")
    if split is not None:
        for ax in (ax1, ax2):
            ax.axvline(np.datetime64(split, "ms"), color="k", ls="--", lw=1)
    return _png(fig)


BENCHMARK_LABELS = {"hodl": "HODL", "uniform": "uniform static pool", "buy_and_hold": "buy and hold"}


def walk_forward_plot(report, what: str = "pool", benchmark: str | None = None) -> bytes:
    """Concatenated out-of-sample equity vs the benchmarks, and per-fold in-sample / out-of-sample Sharpe."""
    benchmark = benchmark or BENCHMARK_LABELS.get(report.benchmark, report.benchmark)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6))
    dates = np.asarray(report.oos_dates, dtype="datetime64[D]")
    ax1.plot(dates, report.oos_equity, label=f"{what} OOS (Sharpe {report.oos_sharpe:.2f})")
    ax1.plot(dates, report.oos_benchmark_equity, label=f"{benchmark} (Sharpe {report.oos_benchmark_sharpe:.2f})")
    for name, other in report.other_benchmarks.items():
        label = f"{BENCHMARK_LABELS.get(name, name)} (Sharpe {other['sharpe']:.2f})"
        ax1.plot(dates, other["equity"], label=label, alpha=0.8)
    sig = report.significance
    if sig:
        text = f"DSR {sig['deflated_sharpe']:.2f} (N={sig['n_configurations']})"
        if "pbo" in sig:
            text += f", PBO {sig['pbo']:.2f}"
        ax1.text(0.01, 0.02, text, transform=ax1.transAxes, fontsize="small")
    ax1.set_ylabel("growth of 1")
    ax1.legend()
    ax1.set_title("walk-forward: out-of-sample equity")
    idx = np.arange(len(report.folds))
    ax2.bar(idx - 0.2, [f.in_sample["daily_log_sharpe"] for f in report.folds], 0.4, label="in-sample")
    ax2.bar(idx + 0.2, [f.out_of_sample["daily_log_sharpe"] for f in report.folds], 0.4, label="out-of-sample")
    ax2.set_xticks(idx, [str(f.fold.index) for f in report.folds])  # whole folds, not 0.5 steps
    ax2.set_xlabel("fold")
    ax2.set_ylabel("daily log Sharpe")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.legend()
    return _png(fig)


def strategy_plot(timestamps, equity, closes, trades: list[dict], title: str, split=None) -> bytes:
    """A strategy's equity marked at every close vs buy-and-hold (top), the market with its trades (bottom):
    long entries ^, short entries v, exits x; `split` marks the end of training."""
    t = np.asarray(timestamps).astype("datetime64[ms]")
    closes = np.asarray(closes, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, equity, label="strategy")
    ax1.plot(t, equity[0] * closes / closes[0], label="buy and hold", alpha=0.7)
    ax1.set_ylabel("equity")
    ax1.legend()
    ax1.set_title(title)
    ax2.plot(t, closes, color="0.4", lw=0.8)
    for side, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:red")):
        picked = [tr for tr in trades if tr["side"] == side]
        if picked:
            ax2.scatter([t[tr["entry_bar"]] for tr in picked], [tr["entry_price"] for tr in picked], marker=marker,
                        color=color, s=25, label=f"{side} entry", zorder=3)
            ax2.scatter([t[tr["exit_bar"]] for tr in picked], [tr["exit_price"] for tr in picked], marker="x",
                        color=color, s=20, zorder=3)
    ax2.set_ylabel("close")
    if trades:
        ax2.legend(loc="upper left", fontsize="small")
    if split is not None:
        for ax in (ax1, ax2):
            ax.axvline(np.datetime64(split, "ms"), color="k", ls="--", lw=1)
    return _png(fig)


def forward_plot(universe: str, periods: list[dict], benchmark: str) -> bytes:
    """The universe's live forward equity (growth of 1, chained across live versions) against its benchmark;
    a vertical line where the live version changed. `periods`: [{"configuration_id", "days", "log_returns",
    "benchmark_log_returns"}] in time order."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    days = np.concatenate([np.asarray(p["days"], dtype="datetime64[D]") for p in periods]) if periods else []
    if len(days):
        r = np.concatenate([p["log_returns"] for p in periods])
        b = np.concatenate([p["benchmark_log_returns"] for p in periods])
        ax.plot(days, np.exp(np.cumsum(r)), label="live configuration")
        ax.plot(days, np.exp(np.cumsum(b)), label=BENCHMARK_LABELS.get(benchmark, benchmark), alpha=0.8)
        for p in periods[1:]:
            ax.axvline(np.datetime64(p["days"][0], "D"), color="k", ls="--", lw=0.8)
        ax.legend()
    ax.set_ylabel("growth of 1")
    ax.set_title(f"{universe}: forward performance while live")
    return _png(fig)

"""What a backtest keeps per combination for its trade metrics: cash equity, the marks' peak and deepest drawdown,
and sums over closed trades. Both engines (the bar scan of `backtest`, the trade-to-trade `trade_events`) carry it
and `backtest._metrics` reads it."""

from __future__ import annotations

from typing import NamedTuple

import jax


class Tally(NamedTuple):
    equity: jax.Array  # cash equity (after closed trades)
    peak: jax.Array  # highest mark so far
    max_dd: jax.Array  # deepest drawdown of the marks from their peak (a fraction)
    n: jax.Array  # closed trades
    wins: jax.Array
    sum_r: jax.Array
    sum_r2: jax.Array
    sum_win_r: jax.Array
    sum_loss_r: jax.Array
    gross_win: jax.Array
    gross_loss: jax.Array
    exposure: jax.Array  # bars in a position

    @classmethod
    def start(cls, capital: jax.Array) -> Tally:
        """Before any trade: equity and peak at the initial capital (any shape), the rest zero."""
        zero = jax.numpy.zeros_like(capital)
        return cls(capital, capital, *([zero] * 10))

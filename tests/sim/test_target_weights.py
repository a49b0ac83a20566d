"""Target-weight rules (min_variance, index_market_cap) start and move as the reference runs them.

The reference (quantammsim's calc_fine_weight_output with rule_outputs_are_weights) seeds its weight scan
with the guardrailed first target, so the initial weights are ignored and the initial reserves come from
that target, and it prepends no first-chunk hold: block c ramps in chunk c. `target_weights_start =
"initial_weights"` keeps the delta rules' start and timing instead. The NumPy restatement below follows
the reference's order of operations (docs: tfmm-reference-details.md, section 4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.data.panel import PricePanel
from quant_core.runspec import load_run_spec
from quant_core.sim.estimators import memory_days_to_lamb
from quant_core.sim.resolve import initial_weights, resolve_params
from quant_core.sim.settings import static_settings
from quant_core.sim.simulate import rows_past_end, simulate, values_at
from quant_core.sim.weights import chunk_weights, guardrail
from quant_core.sim.window import plan_window, sorted_panel_rows

CP = 1440
TOKENS = ("AAA", "BBB", "CCC")
MCAP_SUPPLY = np.array([2e7, 1e8, 5e9])
LOGITS = [0.0, 2.0, -1.0]  # far from every target: a start taken from them would show at once


def _minute_panel(days: int, seed: int = 0) -> PricePanel:
    rng = np.random.default_rng(seed)
    vol = np.array([1.0, 1.6, 0.3]) * 8e-4
    lp = np.cumsum(rng.normal(0.0, 1.0, (days * CP, 3)) * vol, axis=0) + np.log([300.0, 20.0, 1.0])
    ts = np.datetime64("2024-01-01", "ms") + np.arange(days * CP) * np.timedelta64(1, "m")
    return PricePanel(ts, TOKENS, np.exp(lp), 1, {})


PANEL = _minute_panel(12)
AUX = {"market_cap": PANEL.prices * MCAP_SUPPLY}


def _spec(rule: str, start: str | None = None, **kw):
    params = {"memory_days": 3.0, "memory_days_2": 2.0} if rule == "min_variance" else {"memory_days": 2.0}
    base = {"rule": rule, "tokens": list(TOKENS), "startDateString": "2024-01-05", "endDateString": "2024-01-10",
            "max_memory_days": 3, "initial_weights_logits": LOGITS, "parameters": params}
    spec = load_run_spec({**base, **kw})
    # RunSpec.target_weights_start: model_copy sets it whether or not the spec declares the field yet
    return spec if start is None else spec.model_copy(update={"target_weights_start": start})


def _aux(rule: str):
    return AUX if "index" in rule else None


# ---------------------------------------------------------------------------------------------
# the reference, restated in NumPy


def ref_variances(x, lamb):
    """calc_return_variances, CPU path: C-1 rows (row j after the price x_j+1), the first being ones."""
    r = np.diff(x, axis=0) / x[:-1]
    g_inf = 1.0 / (1.0 - lamb)
    ewma, var, out = r[0].copy(), np.zeros(x.shape[1]), [np.ones(x.shape[1])]
    for rc in r[1:]:
        d_old = rc - ewma
        ewma = ewma + d_old / g_inf
        var = lamb * var + d_old * (d_old * (1 - 1 / g_inf))
        out.append(var * (1 - lamb))
    return np.array(out)


def ref_guardrail(u, min_w):
    n = u.shape[0]
    low = u < min_w
    u = np.clip(u, min_w, 1.0 - (n - 1) * min_w)
    u = np.where(~low, u * (1 - low.sum() * min_w) / np.where(~low, u, 0.0).sum(), u)
    k = np.argmax(u)
    u[k] = u[k] - u.sum() + 1.0
    return u


def ref_coarse_step(w, out, blend, min_w, wip, max_change):
    """One step of the coarse scan (FW:908-1000): blend, normalise, guardrail, per-minute cap."""
    raw = blend * w + (1 - blend) * out
    target = ref_guardrail(raw / raw.sum(), min_w)
    d = (target - w) / wip
    if np.abs(d).max() > max_change:
        d = d * max_change / (np.abs(d).max() + 1e-10)
    return target, w + wip * d, d


def ref_fine_weights(outputs, start, blend, *, n_minutes, wip, max_change, hold, min_w=0.1 / 3):
    """Per-minute weights: the reference's (start None: seeded at the guardrailed first target, FW:346-369,
    no hold) or, with a start and hold, the delta rules' timing (W_0 for a chunk, block c in chunk c+1)."""
    w = ref_coarse_step(outputs[0], outputs[0], blend, min_w, wip, max_change)[0] if start is None else start
    blocks = [np.repeat(w[None], CP, axis=0)] if hold else []
    ramp = np.minimum(np.arange(CP), wip)[:, None]
    for out in outputs:
        _, w_next, d = ref_coarse_step(w, out, blend, min_w, wip, max_change)
        blocks.append(w + ramp * d)
        w = w_next
    return np.concatenate(blocks)[:n_minutes]


def ref_values(prices, weights, v0=1e6):
    """Zero-fee reserves (TB:222-248, QR:29-76) from R_0 = V_0 w_0 / p_0, and their value."""
    w0, p0, w1, p1 = weights[:-1], prices[:-1], weights[1:], prices[1:]
    price_move = np.prod((p1 / p0) ** w0, axis=1, keepdims=True) / (p1 / p0)
    weight_move = (w1 / w0) / np.prod((w1 / w0) ** w1, axis=1, keepdims=True)
    r0 = v0 * weights[0] / prices[0]
    reserves = np.vstack([r0, r0 * np.cumprod(price_move * weight_move, axis=0)])
    return (reserves * prices).sum(axis=1)


def reference_run(rule: str, spec, *, start=None, hold=False):
    """The reference's weights and values for `spec` on PANEL (start/hold: the opt-in timing)."""
    window = plan_window(PANEL, spec)
    rows = sorted_panel_rows(PANEL, spec)[window.first_row :]
    x = rows[::CP]
    s = window.warmup_rows // CP
    n_coarse = (window.n_steps + 1) // CP + 1  # int(bout_length / cp) + 1: bout_length = T + 1 is never a multiple
    p = spec.parameters
    if rule == "min_variance":
        precision = 1.0 / ref_variances(x, memory_days_to_lamb(np.full(3, p["memory_days"]), CP))
        outputs = precision / precision.sum(axis=1, keepdims=True)
        blend = np.asarray(memory_days_to_lamb(np.full(3, p["memory_days_2"]), CP))
    else:  # C rows, row j the market-cap shares at chunk j
        mcap = AUX["market_cap"][window.first_row :][::CP]
        outputs = mcap / mcap.sum(axis=1, keepdims=True)
        blend = np.asarray(memory_days_to_lamb(np.full(3, p["memory_days"]), CP))
    outputs = outputs[s : s + n_coarse]
    weights = ref_fine_weights(outputs, start, blend, n_minutes=window.n_steps, wip=spec.weight_interpolation_period,
                               max_change=spec.maximum_change, hold=hold)
    prices = rows[window.warmup_rows : window.warmup_rows + window.n_steps]
    return weights, ref_values(prices, weights)


# ---------------------------------------------------------------------------------------------
# the default: the reference's start and timing


@pytest.mark.parametrize("rule", ["min_variance", "index_market_cap"])
@pytest.mark.parametrize("wip,max_change", [(1440, 3e-4), (360, 5e-5)])
def test_target_rules_follow_the_reference(rule, wip, max_change):
    spec = _spec(rule, weight_interpolation_period=wip, maximum_change=max_change)
    res = simulate(PANEL, spec, aux=_aux(rule))
    weights, values = reference_run(rule, spec)
    np.testing.assert_allclose(res.weights, weights, rtol=0, atol=1e-14)
    np.testing.assert_allclose(res.values, values, rtol=1e-12)
    # the initial weights (here far from any target) are ignored: the pool starts at the first target
    np.testing.assert_allclose(res.reserves[0], 1e6 * weights[0] / res.prices[0], rtol=1e-14)
    assert np.abs(res.weights[0] - initial_weights(spec)).max() > 0.1


def test_the_first_target_seeds_the_scan():
    outputs = jnp.asarray([[0.9, 0.08, 0.02], [0.2, 0.5, 0.3]])
    blend = jnp.asarray([0.7, 0.7, 0.7])
    w, d = chunk_weights(jnp.full(3, 1 / 3), outputs, minimum_weight=0.1 / 3, maximum_change=3e-4,
                         interpolation_period=1440, blend=blend, start_at_first_target=True)
    np.testing.assert_allclose(np.asarray(w[0]), np.asarray(guardrail(outputs[0], 0.1 / 3)), atol=1e-16)
    assert np.abs(np.asarray(d[0])).max() < 1e-16  # the first block only re-targets its own start
    with pytest.raises(ValueError, match="target-weight rule"):
        chunk_weights(jnp.full(3, 1 / 3), outputs, minimum_weight=0.1 / 3, maximum_change=3e-4,
                      interpolation_period=1440, start_at_first_target=True)


def test_min_variance_reads_the_next_chunk_price_past_the_end():
    """As the reference, the last chunk ramps towards a target that holds the price at the window's end."""
    spec = _spec("min_variance")
    window = plan_window(PANEL, spec)
    st = static_settings(spec, window)
    assert rows_past_end(st) == 1
    assert rows_past_end(static_settings(_spec("min_variance", "initial_weights"), window)) == 0
    assert rows_past_end(static_settings(_spec("momentum", parameters={"memory_days": 3.0}), window)) == 0
    # data that ends at the window's end: the last chunk falls back on the window's last price (no cap and
    # no floor here, so that the last target shows in the weights)
    free = spec.model_copy(update={"maximum_change": 1.0, "minimum_weight": 1e-4})
    cut = PricePanel(PANEL.timestamps[: window.end_row], TOKENS, PANEL.prices[: window.end_row], 1, {})
    full, short = simulate(PANEL, free), simulate(cut, free)
    last = window.n_steps - CP
    np.testing.assert_array_equal(full.weights[: last + 1], short.weights[: last + 1])
    assert not np.allclose(full.weights[last + 1 :], short.weights[last + 1 :], rtol=0, atol=1e-9)


def test_values_at_matches_the_forward_pass():
    """The gradient trainer's per-chunk sums see the same schedule (first target, no hold)."""
    spec = _spec("min_variance")
    window = plan_window(PANEL, spec)
    st = static_settings(spec, window)
    rows = jnp.asarray(sorted_panel_rows(PANEL, spec)[window.first_row : window.end_row + rows_past_end(st)])
    params = {k: jnp.asarray(v) for k, v in resolve_params(spec).items()}
    days = jnp.arange(window.n_steps // CP) * CP
    got = values_at(st, rows, params, jnp.full(3, 1 / 3), jnp.float64(1e6), days)
    np.testing.assert_allclose(np.asarray(got), simulate(PANEL, spec).values[np.asarray(days)], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the opt-in: the delta rules' start and timing


@pytest.mark.parametrize("rule", ["min_variance", "index_market_cap"])
def test_initial_weights_start_holds_the_first_chunk(rule):
    spec = _spec(rule, "initial_weights")
    res = simulate(PANEL, spec, aux=_aux(rule))
    w0 = initial_weights(spec)  # softmax of the logits
    weights, values = reference_run(rule, spec, start=w0, hold=True)
    np.testing.assert_array_equal(res.weights[:CP], np.broadcast_to(w0, (CP, 3)))
    np.testing.assert_allclose(res.weights, weights, rtol=0, atol=1e-14)
    np.testing.assert_allclose(res.values, values, rtol=1e-12)


def test_reference_timing_looks_one_chunk_ahead_for_min_variance():
    """min_variance's output row c+1 holds the return into chunk c+1, and the reference ramps towards it
    during chunk c: a price at a chunk boundary moves the weights of the chunk before it. The opt-in
    start (one chunk later) and index_market_cap (shares at the chunk's start) never read ahead."""
    boundary = plan_window(PANEL, _spec("min_variance")).start_row + 2 * CP  # the start of bout chunk 2
    prices = PANEL.prices.copy()
    prices[boundary:] *= np.array([1.05, 0.9, 1.0])
    moved = PricePanel(PANEL.timestamps, TOKENS, prices, 1, {})
    moved_aux = {"market_cap": prices * MCAP_SUPPLY}
    before = slice(0, 2 * CP)  # bout minutes before the perturbed boundary
    for rule, start, reads_ahead in [("min_variance", None, True), ("min_variance", "initial_weights", False),
                                     ("index_market_cap", None, False)]:
        spec = _spec(rule, start)
        a = simulate(PANEL, spec, aux=_aux(rule)).weights[before]
        b = simulate(moved, spec, aux=moved_aux if "index" in rule else None).weights[before]
        assert np.array_equal(a, b) != reads_ahead, (rule, start)

"""reCLAMM engine: the reference simulator's own outputs, a plain NumPy restatement of its step, invariants.

Reference data (tests/reference_data/reclamm_reference.{npz,json}): quantammsim's ReClammPool run on a fixed
2000-minute path; the JSON holds every setting. Measured when written: zero fees 3e-13 elementwise; with fees
and invariant_tolerance=0 (the reference's knife-edge test) bitwise equal; with the default tolerance against
the reference whose test was made tolerant the same way, <= 6e-8 in value (the arc-length thermostat at the
edge of the range amplifies last-bit differences ~1e8). The knife-edge comparison holds because the kernel
does the reference's operations in its order inside one jit; if it alone fails after a JAX upgrade, rounding
now decides some knife-edge trades differently.
"""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quant_core  # noqa: F401  (float64)
from quant_core.params import find_param
from quant_core.sim.amm import reclamm_math as rm
from quant_core.sim.amm.reclamm import (
    DEFAULT_SHIFT_BASE,
    RECLAMM_PARAMS,
    reclamm_calibrated_speed,
    reclamm_initial_state,
    reclamm_pool_reserves,
    reclamm_price,
    reclamm_reserves,
)

REF = Path(__file__).resolve().parents[1] / "reference_data"
DUST = rm.DUST_VALUE
# the engine calibrates inside its compiled function; so do these tests (XLA rounds some steps differently)
calibrated_speed = jax.jit(reclamm_calibrated_speed, static_argnums=3)


def _path(n=400, seed=3, drift=1.5e-3, vol=2e-3):
    """Token A from 2500 up ~25%, then down ~35%, token B ~1: leaves a 1.3 price-ratio range both ways."""
    rng = np.random.default_rng(seed)
    d = np.where(np.arange(n) < 2 * n // 5, drift, -drift)
    log_a = np.log(2500.0) + np.cumsum(d + rng.normal(0.0, vol, n))
    log_b = np.cumsum(rng.normal(0.0, 1e-4, n))
    return np.stack([np.exp(log_a), np.exp(log_b)], axis=1)


PRICES = _path()


def _value_error(got, expected, prices):
    """Per row: sum_i |got - expected|_i p_i / (expected . p)."""
    return (np.abs(np.asarray(got) - expected) * prices).sum(1) / (expected * prices).sum(1)


# ---- plain NumPy restatement of quantammsim's reCLAMM step (reclamm_reserves.py) -------------------------

def np_initial(value, p0, ratio):
    target = p0[0] / p0[1]
    sq = math.sqrt(ratio)
    lo, hi = target / sq, target * sq
    s = math.sqrt(hi / lo)
    va = 1e6 / (s - 1.0)
    vb = lo * (va + 1e6)
    rb = math.sqrt(target * vb * (1e6 + va)) - vb
    ra = (rb + vb - va * target) / target
    k = value / (ra * p0[0] + rb * p0[1])
    return ra * k, rb * k, va * k, vb * k


def np_centeredness(ra, rb, va, vb):
    if ra == 0.0:
        return 0.0, False
    if rb == 0.0:
        return 0.0, True
    num, den = ra * vb, va * rb
    return (den / num, True) if num > den else (num / den, False)


def np_sqrt_ratio(ra, rb, va, vb):
    big_l = (ra + va) * (rb + vb)
    return math.sqrt((big_l / (va * va)) / ((vb * vb) / big_l))


def np_geometric(ra, rb, va, vb, above, base, seconds, sq):
    decay = base ** min(seconds, 30 * 86400.0)
    fourth = math.sqrt(sq) - 1.0
    if above:  # B dear: decay Vb
        vb = max(vb * decay, rb / fourth)
        return ra * (vb + rb) / ((sq - 1.0) * vb - rb), vb
    va = max(va * decay, ra / fourth)
    return va, rb * (va + ra) / ((sq - 1.0) * va - ra)


def np_vb_for_z(ra, rb, z, sq, market):
    s = math.sqrt(market)
    a = -(sq - 1.0) / s
    b = s * ra + rb / s - (sq - 1.0) * z
    c = s * ra * rb + z * rb
    root = math.sqrt(max(b * b - 4.0 * a * c, 1e-30))
    r2 = (-b - root) / (2.0 * a)
    return r2 if r2 > rb / (sq - 1.0) + 1e-8 else (-b + root) / (2.0 * a)


def np_arc(ra, rb, va, vb, above, speed, seconds, sq, market):
    fourth = math.sqrt(sq) - 1.0
    s = math.sqrt(market)
    z = s * va - vb / s
    dz = 2.0 * speed * math.sqrt(ra + va) * min(seconds, 30 * 86400.0)
    if above:
        vb = max(np_vb_for_z(ra, rb, z + dz, sq, market), rb / fourth)
        return ra * (vb + rb) / ((sq - 1.0) * vb - rb), vb
    vb = np_vb_for_z(ra, rb, z - dz, sq, market)
    va = ra * (vb + rb) / ((sq - 1.0) * vb - rb)
    if va < ra / fourth:
        va = ra / fourth
        vb = rb * (va + ra) / ((sq - 1.0) * va - ra)
    return va, vb


def np_calibrated_speed(ra, rb, va, vb, base, seconds, m):
    big_l = (ra + va) * (rb + vb)
    sq = np_sqrt_ratio(ra, rb, va, vb)
    qb, qc = va * (1.0 + m), va * va - big_l * va / vb
    ra_on = (-qb + math.sqrt(qb * qb - 4.0 * m * qc)) / (2.0 * m)
    rb_on = m * ra_on * vb / va
    p_on = (rb_on + vb) / (ra_on + va)
    _, above = np_centeredness(ra_on, rb_on, va, vb)
    va2, vb2 = np_geometric(ra_on, rb_on, va, vb, above, base, seconds, sq)
    s = math.sqrt(p_on)
    return abs((s * va2 - vb2 / s) - (s * va - vb / s)) / (2.0 * math.sqrt(ra_on + va)) / seconds


def np_fee_trade(e, p, gamma, tol):
    """The two one-in / one-out G3M candidates at weights 1/2 (A in, then B in); best valid one."""
    k = math.sqrt(e[0]) * math.sqrt(e[1])
    found = []
    for d in ((1, 0), (0, 1)):
        g = [gamma if di else 1.0 for di in d]
        t = np.array([(k * math.sqrt(0.5 * g[i] / p[i]) * math.sqrt(p[1 - i] / (g[1 - i] * 0.5)) - e[i]) / g[i]
                      for i in range(2)])
        ok = bool(np.all(e + t > 0))
        if ok:
            adj = e + t * np.where(t > 0, gamma, 1.0)
            ok = math.sqrt(adj[0]) * math.sqrt(adj[1]) >= (1.0 - tol) * k
        t = t if ok else np.zeros(2)
        found.append((-(t * p).sum(), t))
    top = max(pr for pr, _ in found)
    return sum(t for pr, t in found if pr == top)


def np_step(state, p, *, margin, base, speed, seconds, thermostat, scaling, costs, gamma, gas, arb_fees, split,
            tol=1e-9):
    """Thermostat (on the previous state), arbitrage with the new virtual balances, clamp, protocol fee."""
    ra, rb, va, vb = state
    market = p[0] / p[1]
    c, above = np_centeredness(ra, rb, va, vb)
    sq = np_sqrt_ratio(ra, rb, va, vb)
    if c < margin:
        mult = margin / max(c, 1e-10) if scaling else 1.0
        if thermostat == "constant_arc_length" and speed > 0:
            va, vb = np_arc(ra, rb, va, vb, above, speed * mult, seconds, sq, market)
        else:
            va, vb = np_geometric(ra, rb, va, vb, above, base, seconds * mult, sq)
    big_l = (ra + va) * (rb + vb)
    ea, eb = math.sqrt(big_l / market), math.sqrt(big_l * market)
    g = gamma if costs else 1.0
    if not costs:
        ra_new, rb_new = ea - va, eb - vb
    else:
        e = np.array([ra + va, rb + vb])
        trade = np_fee_trade(e, p, gamma, tol) if gamma != 1.0 else np.array([ea, eb]) - e
        if -(trade * p).sum() - gas < 0.5 * arb_fees * (np.abs(trade) * p).sum():
            trade = np.zeros(2)
        ra_new, rb_new = ra + trade[0], rb + trade[1]
    if ra_new < 0 or rb_new < 0:  # drain the token to DUST of it along the curve
        e_a, e_b = ra + va, rb + vb
        if ra_new < 0:
            out = max(ra - DUST / p[0], 0.0)
            ra_new, rb_new = ra - out, rb + (e_b / g) * (e_a / (e_a - out) - 1.0)
        else:
            out = max(rb - DUST / p[1], 0.0)
            ra_new, rb_new = ra + (e_a / g) * (e_b / (e_b - out) - 1.0), rb - out
    inbound = np.maximum([ra_new - ra, rb_new - rb], 0.0)
    protocol = inbound * (1.0 - g) * split
    revenue = float((inbound * (1.0 - g) * (1.0 - split) * p).sum())
    return (ra_new - protocol[0], rb_new - protocol[1], va, vb), revenue


def np_reclamm(prices, value, *, price_ratio, margin, base, thermostat="geometric", speed=None, scaling=False,
               fees=None, gas=0.0, arb_fees=0.0, split=0.0, freq=1):
    seconds = 60.0 * freq
    state = np_initial(value, prices[0], price_ratio)
    if thermostat == "constant_arc_length" and speed is None:
        speed = np_calibrated_speed(*state, base, seconds, margin)
    rows, revenue = [], []
    for p in prices[::freq]:
        state, rev = np_step(state, p, margin=margin, base=base, speed=speed or 0.0, seconds=seconds,
                             thermostat=thermostat, scaling=scaling, costs=fees is not None,
                             gamma=1.0 - (fees or 0.0), gas=gas, arb_fees=arb_fees, split=split)
        rows.append(state)
        revenue.append(rev)
    return np.array(rows), np.array(revenue)


NP_CASES = {
    "geometric_zero_fees": dict(price_ratio=1.3, margin=0.5, base=DEFAULT_SHIFT_BASE),
    "geometric_fees_costs": dict(price_ratio=1.3, margin=0.5, base=DEFAULT_SHIFT_BASE, fees=0.003, gas=0.3,
                                 arb_fees=0.0005, split=0.3),
    "geometric_scaled_fees": dict(price_ratio=1.3, margin=0.5, base=1 - 3 / 124649, scaling=True, fees=0.003),
    "arc_scaled_zero_fees": dict(price_ratio=1.3, margin=0.5, base=DEFAULT_SHIFT_BASE,
                                 thermostat="constant_arc_length", speed=0.016, scaling=True),
    "arc_fees_every_2": dict(price_ratio=1.3, margin=0.5, base=DEFAULT_SHIFT_BASE, thermostat="constant_arc_length",
                             speed=3e-2, fees=0.002, freq=2),
}


def _jax_kwargs(c):
    kw = dict(price_ratio=c["price_ratio"], centeredness_margin=c["margin"], daily_price_shift_base=c["base"],
              thermostat=c.get("thermostat", "geometric"), arc_length_speed=c.get("speed"),
              centeredness_scaling=c.get("scaling", False), arb_frequency=c.get("freq", 1))
    if "fees" in c:
        kw.update(fees=c["fees"], gas_cost=c.get("gas", 0.0), arb_fees=c.get("arb_fees", 0.0),
                  protocol_fee_split=c.get("split", 0.0))
    return kw


@pytest.fixture(scope="module")
def runs():
    """Each NumPy case run by the engine (full minute rows) and by the NumPy loop (its arbitrage rows)."""
    return {name: (reclamm_reserves(PRICES, 1e6, **_jax_kwargs(c)), *np_reclamm(PRICES, 1e6, **c))
            for name, c in NP_CASES.items()}


@pytest.mark.parametrize("name", list(NP_CASES))
def test_matches_numpy_restatement(runs, name):
    out, rows, revenue = runs[name]
    f = NP_CASES[name].get("freq", 1)
    acted = PRICES[::f]
    assert _value_error(np.asarray(out.reserves)[::f], rows[:, :2], acted).max() <= 1e-12
    virtual = np.asarray(out.virtual_balances)[::f]
    assert np.abs(virtual - rows[:, 2:]).max() <= 1e-12 * np.abs(rows[:, 2:]).max()
    # revenue is a difference of reserves (inbound legs), so compare it in pool value
    value = (rows[:, :2] * acted).sum(1)
    assert np.all(np.abs(np.asarray(out.fee_revenue)[::f] - revenue) <= 1e-12 * value)
    if "fees" in NP_CASES[name]:
        assert revenue.sum() > 0


def test_cases_cover_the_edges(runs):
    """The NumPy cases re-centre, and the zero-fee and costly geometric ones leave the range (dust rows)."""
    for name in ("geometric_zero_fees", "geometric_fees_costs"):
        _, rows, _ = runs[name]
        assert ((rows[:, :2] * PRICES) <= DUST * (1 + 1e-9)).any(1).sum() > 20, name
    for name, (_, rows, _) in runs.items():
        assert np.any(np.diff(rows[:, 3]) != 0), name  # the thermostat moved Vb


def test_calibrated_speed_matches_numpy():
    """|Delta Z| is a difference of two nearly equal Z's (one thermostat step), so last-bit differences of
    the inputs become ~1e-11 of the result (XLA inside jit rounds some operations differently)."""
    state = np_initial(1e6, PRICES[0], 1.3)
    expected = np_calibrated_speed(*state, DEFAULT_SHIFT_BASE, 60.0, 0.5)
    got = float(calibrated_speed(jnp.array(state), DEFAULT_SHIFT_BASE, 0.5))
    assert got == pytest.approx(expected, rel=1e-10)


# ---- against the reference simulator's outputs ------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    meta = json.loads((REF / "reclamm_reference.json").read_text())
    data = dict(np.load(REF / "reclamm_reference.npz"))
    return meta, data


def _run_reference_case(meta, data, name, tolerance):
    case = meta["cases"][name]
    fp, params = case["run_fingerprint"], case["params"]
    return reclamm_pool_reserves(
        data["prices"], fp["initial_pool_value"], params, fees=fp["fees"], gas_cost=fp["gas_cost"],
        arb_fees=fp["arb_fees"], protocol_fee_split=fp["protocol_fee_split"], arb_frequency=fp["arb_frequency"],
        interpolation_method=fp["reclamm_interpolation_method"], arc_length_speed=fp["reclamm_arc_length_speed"],
        centeredness_scaling=fp["reclamm_centeredness_scaling"], use_shift_exponent="shift_exponent" in params,
        learn_arc_length_speed="arc_length_speed" in params, learn_fees="fees" in params,
        invariant_tolerance=tolerance,
    )


ZERO_FEE_REF = ["geo_zero", "arc_auto_zero_scaled"]
FEE_REF = ["geo_fees", "geo_scaled_fees_shift_exp", "arc_fixed_fees_f3", "arc_learnt_fees"]


@pytest.mark.parametrize("name", ZERO_FEE_REF)
def test_reference_zero_fees(reference, name):
    meta, data = reference
    out = _run_reference_case(meta, data, name, 1e-9)
    prices = data["prices"]
    expected = data[f"{name}__reserves"]
    np.testing.assert_allclose(out.reserves, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(out.virtual_balances, data[f"{name}__virtual"], rtol=1e-9, atol=0)
    state = reclamm_initial_state(1e6, prices[0], meta["cases"][name]["params"]["price_ratio"])
    np.testing.assert_allclose(state[:2], data[f"{name}__initial_reserves"], rtol=1e-12)
    np.testing.assert_allclose(state[2:], data[f"{name}__initial_virtual"], rtol=1e-12)
    speed = float(data[f"{name}__arc_length_speed"])
    if speed > 0:  # calibrated: see test_calibrated_speed_matches_numpy for the tolerance
        params = meta["cases"][name]["params"]
        got = calibrated_speed(state, params["daily_price_shift_base"], params["centeredness_margin"])
        assert float(got) == pytest.approx(speed, rel=1e-9)


def _assert_fee_case(out, prices, f, expected, revenue, tol):
    acted = prices[::f]
    reserves = np.asarray(out.reserves)
    assert reserves.shape == (prices.shape[0], 2)
    assert _value_error(reserves[::f], expected, acted).max() <= tol
    got_rev = np.asarray(out.fee_revenue)
    assert np.all(got_rev[np.arange(prices.shape[0]) % f != 0] == 0.0)
    cum, cum_ref = np.cumsum(got_rev[::f]), np.cumsum(revenue)
    assert np.abs(cum - cum_ref).max() <= tol * cum_ref[-1]


@pytest.mark.parametrize("name", FEE_REF)
def test_reference_fees_knife_edge(reference, name):
    """invariant_tolerance=0 reproduces the reference's validity test, and its dropped trades."""
    meta, data = reference
    out = _run_reference_case(meta, data, name, 0.0)
    f = meta["cases"][name]["run_fingerprint"]["arb_frequency"]
    _assert_fee_case(out, data["prices"], f, data[f"{name}__reserves"], data[f"{name}__fee_revenue"], 1e-6)


@pytest.mark.parametrize("name", FEE_REF)
def test_reference_fees_tolerant(reference, name):
    """The default tolerance against the reference run with the same tolerant validity test."""
    meta, data = reference
    out = _run_reference_case(meta, data, name, 1e-9)
    f = meta["cases"][name]["run_fingerprint"]["arb_frequency"]
    _assert_fee_case(out, data["prices"], f, data[f"{name}__reserves__tolerant"],
                     data[f"{name}__fee_revenue__tolerant"], 1e-6)


# ---- invariants -------------------------------------------------------------------------------------

def _l(r, v):
    return (r[..., 0] + v[..., 0]) * (r[..., 1] + v[..., 1])


@pytest.mark.parametrize("name", ["geometric_zero_fees", "arc_scaled_zero_fees"])
def test_zero_fee_trades_keep_the_invariant(runs, name):
    """(Ra + Va)(Rb + Vb) is the same before and after each step's trade (the edge trades included);
    only the thermostat, which moves V, changes it."""
    out, _, _ = runs[name]
    r, v = np.asarray(out.reserves), np.asarray(out.virtual_balances)
    start = np.asarray(reclamm_initial_state(1e6, PRICES[0], 1.3))
    before = _l(np.concatenate([start[None, :2], r[:-1]]), v)
    np.testing.assert_allclose(_l(r, v), before, rtol=1e-12)


def test_fee_trades_never_lower_the_invariant(runs):
    """Fees stay in the pool: the trade's invariant change is >= -tolerance (no protocol share here)."""
    out, _, _ = runs["geometric_scaled_fees"]
    r, v = np.asarray(out.reserves), np.asarray(out.virtual_balances)
    start = np.asarray(reclamm_initial_state(1e6, PRICES[0], 1.3))
    before = _l(np.concatenate([start[None, :2], r[:-1]]), v)
    after = _l(r, v)
    assert np.all(after >= before * (1 - 2e-9))
    assert np.sum(after > before * (1 + 1e-9)) > 50  # fees grow it


def test_reserves_non_negative(runs, reference):
    meta, data = reference
    for out, _, _ in runs.values():
        assert np.all(np.asarray(out.reserves) >= 0.0)
    for name in FEE_REF:
        assert np.all(data[f"{name}__reserves"] >= 0.0)


@pytest.mark.parametrize("name", ["geometric_zero_fees", "arc_scaled_zero_fees"])
def test_pool_at_market_in_range_and_drained_out_of_range(runs, name):
    """Zero fees: in range the pool quotes the market price after arbitrage; out of range one real balance
    is dust (<= DUST of value, the clamp-to-edge remainder) and the pool quotes the edge on the right side."""
    out, _, _ = runs[name]
    r, v = np.asarray(out.reserves), np.asarray(out.virtual_balances)
    quote = (r[:, 1] + v[:, 1]) / (r[:, 0] + v[:, 0])
    market = PRICES[:, 0] / PRICES[:, 1]
    held = r * PRICES
    drained = held.min(1) <= DUST * (1 + 1e-9)
    assert np.all(np.abs(quote[~drained] / market[~drained] - 1) <= 1e-12)
    off = np.abs(quote / market - 1) > 1e-9
    assert np.all(drained[off])
    a_gone = off & (held[:, 0] <= DUST * (1 + 1e-9))
    assert np.all(quote[a_gone] < market[a_gone])  # market above the range: the pool sold its A
    b_gone = off & (held[:, 1] <= DUST * (1 + 1e-9))
    assert np.all(quote[b_gone] > market[b_gone])
    if name == "geometric_zero_fees":
        assert a_gone.sum() > 10 and b_gone.sum() > 10


@pytest.mark.parametrize("thermostat", ["geometric", "constant_arc_length"])
def test_recentring_moves_the_range_to_the_market(thermostat):
    """A jump of +40% out of a 1.3 range: the range's centre Vb / Va moves monotonically towards the market,
    both ends rise, and the pool comes back in range, centred beyond the margin, quoting the market."""
    p = np.ones((400, 2))
    p[:, 0] = 2500.0
    p[10:, 0] = 3500.0
    out = reclamm_reserves(p, 1e6, price_ratio=1.3, centeredness_margin=0.5, shift_exponent=100.0,
                           thermostat=thermostat)
    r, v = np.asarray(out.reserves), np.asarray(out.virtual_balances)
    big_l = _l(r, v)
    lo, hi = v[:, 1] ** 2 / big_l, big_l / v[:, 0] ** 2
    dist = np.abs(np.log(v[:, 1] / v[:, 0] / p[:, 0]))
    assert hi[10] < 3500.0  # out of range after the jump
    assert np.all(np.diff(dist[10:]) <= 1e-12) and dist[-1] < 0.2 * dist[10]  # stops at the margin
    assert np.all(np.diff(lo[10:]) >= 0) and np.all(np.diff(hi[10:]) >= 0)
    assert lo[-1] < 3500.0 < hi[-1]
    c, _ = rm.centeredness(*r[-1], *v[-1])
    assert float(c) >= 0.5
    assert reclamm_price(np.concatenate([r[-1], v[-1]])) == pytest.approx(3500.0, rel=1e-12)


def test_fees_beat_zero_fees_on_round_trips():
    """Nine round trips 2500 -> 2625 -> 2500 inside a wide range: the zero-fee pool ends where it began,
    the fee pool ends richer by most of its fee revenue (which it keeps)."""
    leg = np.linspace(2500.0, 2625.0, 21)
    a = np.full(len(PRICES), 2500.0)
    a[:360] = np.tile(np.concatenate([leg, leg[::-1][1:-1]]), 9)
    p = np.stack([a, np.ones_like(a)], axis=1)
    kw = dict(price_ratio=4.0, centeredness_margin=0.2)
    zero = reclamm_reserves(p, 1e6, **kw)
    fee = reclamm_reserves(p, 1e6, fees=0.003, **kw)
    v_zero = float((zero.reserves[-1] * p[-1]).sum())
    v_fee = float((fee.reserves[-1] * p[-1]).sum())
    assert v_zero == pytest.approx(1e6, rel=1e-12)
    assert v_fee > v_zero
    revenue = float(fee.fee_revenue.sum())
    assert revenue > 0 and np.all(np.asarray(fee.fee_revenue) >= 0)
    # not all of the revenue is extra value: the fee pool's price lags the market within the fee band
    assert 0.5 * revenue < v_fee - v_zero <= revenue
    split = reclamm_reserves(p, 1e6, fees=0.003, protocol_fee_split=1.0, **kw)
    assert float(split.fee_revenue.sum()) == 0.0
    assert float((split.reserves[-1] * p[-1]).sum()) < v_fee


def test_initial_state_is_centred_on_the_first_price():
    p0 = np.array([2500.0, 1.01])
    s = np.asarray(reclamm_initial_state(1e6, p0, 2.25))
    big_l = _l(s[:2], s[2:])
    assert s[:2] @ p0 == pytest.approx(1e6, rel=1e-12)
    assert reclamm_price(s) == pytest.approx(p0[0] / p0[1], rel=1e-12)
    assert s[3] ** 2 / big_l == pytest.approx(p0[0] / p0[1] / 1.5, rel=1e-12)
    assert big_l / s[2] ** 2 == pytest.approx(p0[0] / p0[1] * 1.5, rel=1e-12)
    assert float(rm.centeredness(*s)[0]) == pytest.approx(1.0, rel=1e-12)


def test_arb_frequency_and_do_arb(runs):
    out, _, _ = runs["arc_fees_every_2"]  # arb_frequency 2 (its values: test_matches_numpy_restatement)
    r, rev = np.asarray(out.reserves), np.asarray(out.fee_revenue)
    assert r.shape == PRICES.shape
    np.testing.assert_array_equal(r, np.repeat(r[::2], 2, axis=0))
    assert np.all(rev[1::2] == 0.0) and rev.sum() > 0
    held = reclamm_reserves(PRICES, 1e6, price_ratio=1.3, fees=0.003, do_arb=False)
    start = np.asarray(reclamm_initial_state(1e6, PRICES[0], 1.3))
    np.testing.assert_allclose(held.reserves, np.broadcast_to(start[:2], PRICES.shape), rtol=1e-14)
    assert float(held.fee_revenue.sum()) == 0.0


@pytest.mark.slow
def test_differentiable_in_the_tuned_parameters():
    """Reverse-mode gradients of final value + fee revenue in price_ratio, arc_length_speed and fees
    agree with central differences (small steps: no trade or thermostat decision flips)."""
    p = jnp.asarray(PRICES)
    c = NP_CASES["arc_fees_every_2"]  # the same compiled forward pass as that case

    def objective(x):
        out = reclamm_reserves(p, 1e6, **{**_jax_kwargs(c), "price_ratio": x[0], "arc_length_speed": x[1],
                                          "fees": x[2]})
        return (out.reserves[-1] * p[-1]).sum() + out.fee_revenue.sum()

    x0 = jnp.array([c["price_ratio"], c["speed"], c["fees"]])
    grad = np.asarray(jax.grad(objective)(x0))
    for i in range(3):
        h = float(x0[i]) * 1e-6
        e = jnp.zeros(3).at[i].set(h)
        fd = (float(objective(x0 + e)) - float(objective(x0 - e))) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-4), i
        assert grad[i] != 0.0


# ---- parameters and their resolution ----------------------------------------------------------------

def test_params_schema():
    names = [p.name for p in RECLAMM_PARAMS]
    assert names == ["price_ratio", "centeredness_margin", "daily_price_shift_base", "shift_exponent",
                     "arc_length_speed", "fees"]
    defaults = {p.name: p.initial_value() for p in RECLAMM_PARAMS}
    assert defaults == pytest.approx(dict(price_ratio=4.0, centeredness_margin=0.2, shift_exponent=1.0,
                                          daily_price_shift_base=1 - 1 / 124000, arc_length_speed=1e-4, fees=0.0025))
    for p in RECLAMM_PARAMS:
        for v in (p.low, p.initial_value(), p.high):
            assert float(p.from_unconstrained(p.to_unconstrained(v))) == pytest.approx(v, rel=1e-9), p.name
    assert find_param(RECLAMM_PARAMS, "shift_exponent", "reclamm").only_if == "reclamm_use_shift_exponent"


def test_pool_reserves_resolves_like_the_reference_pool():
    p = PRICES  # the shapes and static settings of the NumPy cases: no new compilations
    full = {pr.name: [pr.default, pr.default] for pr in RECLAMM_PARAMS}
    full.update(price_ratio=[1.3, 1.3], centeredness_margin=[0.5, 0.5], daily_price_shift_base=[0.9999, 0.9999],
                shift_exponent=[2.0, 2.0], arc_length_speed=[0.01, 0.01], fees=[0.004, 0.004])

    def same(a, b):
        np.testing.assert_array_equal(a.reserves, b.reserves)
        np.testing.assert_array_equal(a.fee_revenue, b.fee_revenue)

    geo = dict(price_ratio=1.3, centeredness_margin=0.5, daily_price_shift_base=0.9999)
    # every parameter is present (as the schema initialises them); the flags decide which are read
    same(reclamm_pool_reserves(p, 1e6, full, fees=0.001), reclamm_reserves(p, 1e6, fees=0.001, **geo))
    same(reclamm_pool_reserves(p, 1e6, full, fees=0.001, use_shift_exponent=True, learn_fees=True),
         reclamm_reserves(p, 1e6, price_ratio=1.3, centeredness_margin=0.5, shift_exponent=2.0, fees=0.004))
    # arc length: the learnt parameter, else the run's speed, else calibrated; geometric reads none
    arc = dict(thermostat="constant_arc_length", **geo)
    same(reclamm_pool_reserves(p, 1e6, full, arc_length_speed=0.5, interpolation_method="constant_arc_length",
                               learn_arc_length_speed=True),
         reclamm_reserves(p, 1e6, arc_length_speed=0.01, **arc))
    same(reclamm_pool_reserves(p, 1e6, full, arc_length_speed=0.5, interpolation_method="constant_arc_length"),
         reclamm_reserves(p, 1e6, arc_length_speed=0.5, **arc))
    calibrated = calibrated_speed(reclamm_initial_state(1e6, p[0], 1.3), 0.9999, 0.5)
    np.testing.assert_allclose(
        reclamm_pool_reserves(p, 1e6, full, interpolation_method="constant_arc_length").reserves,
        reclamm_reserves(p, 1e6, arc_length_speed=calibrated, **arc).reserves, rtol=1e-9)
    same(reclamm_pool_reserves(p, 1e6, full, learn_arc_length_speed=True), reclamm_reserves(p, 1e6, **geo))
    # missing parameters take their defaults
    same(reclamm_pool_reserves(p, 1e6, {}), reclamm_reserves(p, 1e6))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="two tokens"):
        reclamm_reserves(np.ones((5, 3)), 1.0)
    with pytest.raises(ValueError, match="thermostat"):
        reclamm_reserves(PRICES[:5], 1.0, thermostat="linear")
    with pytest.raises(ValueError, match="initial_value or initial_state"):
        reclamm_reserves(PRICES[:5])

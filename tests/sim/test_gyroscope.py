"""Gyroscope E-CLP engine: against a plain-NumPy restatement of the reference math, and invariants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quant_core  # noqa: F401  (float64)
from quant_core.sim.amm.gyroscope import (
    GYROSCOPE_PARAMS,
    gyroscope_initial_reserves,
    gyroscope_invariant,
    gyroscope_price,
    gyroscope_reserves,
)

POOL = dict(alpha=0.8, beta=1.25, lam=6.0, phi=math.atan(1.0))


def _price_path(n=300, seed=0, vol=0.01, start=1.0):
    rng = np.random.default_rng(seed)
    log_p = np.cumsum(rng.normal(0.0, vol, (n, 2)), axis=0)
    return np.exp(log_p) * np.array([start, 1.0])


def _assert_close_in_value(got, expected, prices, tol=1e-10):
    """max over steps of sum_i |got - expected|_i p_i / pool value <= tol.

    The E-CLP maps (invariant from reserves, reserves at a price) subtract nearly equal terms
    (t - L chi), so two correct float64 evaluations in a different operation order (XLA fuses and
    uses FMA; NumPy does not) differ by ~1e-10 relative in the smaller reserve after a few hundred
    recomputations of L. Measured in value, the agreement is what 1e-10 should mean."""
    got, expected, prices = np.asarray(got), np.asarray(expected), np.asarray(prices)
    err = (np.abs(got - expected) * prices).sum(1) / (expected * prices).sum(1)
    assert err.max() <= tol, err.max()


# ---- plain NumPy restatement of quantammsim's ECLP/gyroscope_reserves.py ------------------------

class NpEclp:
    def __init__(self, alpha, beta, lam, phi):
        c, s = math.cos(phi), math.sin(phi)
        self.alpha, self.beta = alpha, beta
        self.A = np.array([[c / lam, -s / lam], [s, c]])
        self.Ainv = np.array([[c * lam, s], [-s * lam, c]])
        self.chi = np.array([(self.Ainv @ self.tau(beta))[0], (self.Ainv @ self.tau(alpha))[1]])

    def tau(self, q):
        ap = self.A @ np.array([-1.0, q])
        zeta = ap[1] / -ap[0]
        return np.array([zeta, 1.0]) / math.sqrt(1 + zeta * zeta)

    def invariant(self, t):
        a_chi, a_t = self.A @ self.chi, self.A @ t
        k = a_chi @ a_chi - 1.0
        # (At.Achi)^2 - k |At|^2 written as |At|^2 - (At x Achi)^2 (Lagrange's identity; the
        # reference's form loses ~6 digits to cancellation)
        disc = a_t @ a_t - (a_t[0] * a_chi[1] - a_t[1] * a_chi[0]) ** 2
        return (a_t @ a_chi + math.sqrt(disc)) / k

    def at_price(self, L, q):
        return L * (self.chi - self.Ainv @ self.tau(q))

    def price(self, t, L):
        a = L * (self.Ainv @ self.tau(self.beta))[0]
        b = L * (self.Ainv @ self.tau(self.alpha))[1]
        t2 = self.A @ (t - np.array([a, b]))
        pc = np.array([t2[0] / t2[1], 1.0])
        return (pc @ (self.A @ [1.0, 0.0])) / (pc @ (self.A @ [0.0, 1.0]))


def _np_initial(e, value, p0, quirks):
    q = p0[0] / p0[1]
    if not quirks:
        q = min(max(q, e.alpha), e.beta)
    unit = e.at_price(1.0, q)
    return unit * value / (unit @ p0)


def _np_run(prices, value, pool, fees=0.0, thresh=0.0, arb_fees=0.0, freq=1, quirks=False):
    e = NpEclp(**pool)
    r = _np_initial(e, value, prices[0], quirks)
    gamma = 1 - fees
    zero = fees == 0 and thresh == 0 and arb_fees == 0
    L0 = e.invariant(r)
    out = []
    for p in prices[::freq]:
        P = p[0] / p[1]
        if zero and not quirks:
            r = np.maximum(e.at_price(L0, min(max(P, e.alpha), e.beta)), 0.0)
        elif zero:
            new = e.at_price(e.invariant(r), P)
            r = r if (new < 0).any() else new
        else:
            L = e.invariant(r)
            cur = r[1] / r[0] if quirks else e.price(r, L)
            below, above = cur <= P * gamma, P / gamma <= cur
            eff = P / gamma if above else (P * gamma if below else cur)
            if not quirks:
                eff = min(max(eff, e.alpha), e.beta)
            arb = e.at_price(L, eff) - r
            trade = np.zeros(2)
            if below:
                trade = arb * [1.0, 1 / gamma]
            if above:
                trade = arb * [1 / gamma, 1.0]
            ok = -(trade @ p) - thresh >= 0.5 * arb_fees * (np.abs(trade) @ p)
            new = r + trade if ok else r
            if quirks:
                r = r if (new < 0).any() else new
            else:
                r = np.maximum(new, 0.0)
        out.append(r)
    return np.repeat(np.array(out), freq, axis=0)[: len(prices)]


CASES = [
    dict(),
    dict(fees=0.003),
    dict(fees=0.01, thresh=20.0, arb_fees=0.002),
    dict(fees=0.0, thresh=5.0),
    dict(fees=0.003, freq=5),
    dict(freq=3),
]


@pytest.mark.parametrize("quirks", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_restatement(case, quirks):
    prices = _price_path()
    expected = _np_run(prices, 1e6, POOL, case.get("fees", 0.0), case.get("thresh", 0.0), case.get("arb_fees", 0.0),
                       case.get("freq", 1), quirks)
    got = gyroscope_reserves(prices, 1e6, **POOL, fees=case.get("fees", 0.0), gas_cost=case.get("thresh", 0.0),
                             arb_fees=case.get("arb_fees", 0.0), arb_frequency=case.get("freq", 1),
                             reference_quirks=quirks)
    assert got.shape == prices.shape
    _assert_close_in_value(got, expected, prices)


def test_price_leaves_the_range():
    """A path through both ends of the range: the pool is all token 0 below alpha and all token 1
    above beta, and follows the closed form exactly in between."""
    ratio = np.concatenate([np.linspace(1.0, 0.7, 40), np.linspace(0.7, 1.4, 80), np.linspace(1.4, 1.0, 40)])
    prices = np.stack([ratio, np.ones_like(ratio)], axis=1)
    r = np.asarray(gyroscope_reserves(prices, 1e6, **POOL))
    below, above = ratio <= POOL["alpha"], ratio >= POOL["beta"]
    assert np.all(r[below, 1] == 0.0) and np.all(r[below, 0] > 0)
    assert np.all(r[above, 0] == 0.0) and np.all(r[above, 1] > 0)
    _assert_close_in_value(r, _np_run(prices, 1e6, POOL), prices)
    # a jump past beta in one step: the pool is moved to the edge, the reference keeps the old reserves
    jump = np.array([[1.0, 1.0], [1.6, 1.0]])
    assert np.asarray(gyroscope_reserves(jump, 1e6, **POOL))[1, 0] == 0.0
    rq = np.asarray(gyroscope_reserves(jump, 1e6, **POOL, reference_quirks=True))
    np.testing.assert_array_equal(rq[1], rq[0])


def test_zero_fee_pool_is_at_market_price_with_constant_invariant():
    prices = _price_path(vol=0.004)
    market = prices[:, 0] / prices[:, 1]
    inside = (market > POOL["alpha"]) & (market < POOL["beta"])
    assert inside.sum() > 100
    r = gyroscope_reserves(prices, 1e6, **POOL)
    pool_price = jax.vmap(lambda t: gyroscope_price(t, **POOL))(r)
    # the quote is recomputed from reserves through L (ill-conditioned, see _assert_close_in_value)
    np.testing.assert_allclose(np.asarray(pool_price)[inside], market[inside], rtol=1e-7)
    inv = np.asarray(jax.vmap(lambda t: gyroscope_invariant(t, **POOL))(r))
    np.testing.assert_allclose(inv, inv[0], rtol=1e-12)


def test_price_formula_is_the_slope_of_the_curve():
    """-dy/dx along the curve of constant invariant (derivative by jax of the paper's t(q), written
    here in jnp) equals q and the quoted price, so t(q) really is where the pool quotes q."""
    c, s, lam = math.cos(POOL["phi"]), math.sin(POOL["phi"]), POOL["lam"]
    e = NpEclp(**POOL)

    def t_of_q(q):
        zeta = lam * (c * q - s) / (c + s * q)
        tau = jnp.stack([zeta, 1.0]) / jnp.sqrt(1 + zeta**2)
        return jnp.asarray(e.chi) - jnp.asarray(e.Ainv) @ tau

    for q in [0.85, 1.0, 1.2]:
        dx, dy = jax.jacfwd(t_of_q)(q)
        np.testing.assert_allclose(-dy / dx, q, rtol=1e-9)
        t = e.at_price(3.7, q)
        np.testing.assert_allclose(e.invariant(t), 3.7, rtol=1e-10)
        np.testing.assert_allclose(float(gyroscope_price(t, **POOL)), q, rtol=1e-8)


def test_initial_reserves_value_and_price():
    p0 = np.array([1.1, 1.0])
    r = np.asarray(gyroscope_initial_reserves(2.5e6, p0, **POOL))
    np.testing.assert_allclose(r @ p0, 2.5e6, rtol=1e-13)
    np.testing.assert_allclose(float(gyroscope_price(r, **POOL)), 1.1, rtol=1e-10)


def test_fees_never_decrease_the_invariant_and_leave_price_in_band():
    """With fees the curve trade keeps the invariant and the fee is added to the incoming token, so
    the invariant can only grow; the pool's quote ends inside the no-arbitrage band (or at an end of
    the range). Neither holds in the reference: it finds the trade direction from R1/R0, so the fee
    can land on the outgoing token."""
    prices = _price_path(vol=0.004)
    fees = 0.003
    r = gyroscope_reserves(prices, 1e6, **POOL, fees=fees)
    inv = np.asarray(jax.vmap(lambda t: gyroscope_invariant(t, **POOL))(r))
    assert np.all(np.diff(inv) >= -1e-12 * inv[1:])
    assert inv[-1] > inv[0]
    quote = np.asarray(jax.vmap(lambda t: gyroscope_price(t, **POOL))(r))
    ratio = prices[:, 0] / prices[:, 1]
    lower = np.clip(ratio * (1 - fees), POOL["alpha"], POOL["beta"])
    upper = np.clip(ratio / (1 - fees), POOL["alpha"], POOL["beta"])
    assert np.all(quote >= lower * (1 - 1e-9)) and np.all(quote <= upper * (1 + 1e-9))
    rq = gyroscope_reserves(prices, 1e6, **POOL, fees=fees, reference_quirks=True)
    inv_q = np.asarray(jax.vmap(lambda t: gyroscope_invariant(t, **POOL))(rq))
    assert np.diff(inv_q).min() < -1e-6 * inv_q[0]


def test_traced_zero_costs_match_closed_form():
    prices = _price_path()
    closed = gyroscope_reserves(prices, 1e6, **POOL)
    scanned = gyroscope_reserves(prices, 1e6, **POOL, fees=jnp.asarray(0.0))
    _assert_close_in_value(scanned, closed, prices, tol=1e-9)


def test_vmap_over_parameters_equals_separate_calls():
    prices = jnp.asarray(_price_path(n=150))
    alphas = jnp.array([0.7, 0.8, 0.9])
    betas = jnp.array([1.4, 1.25, 1.1])
    lams = jnp.array([1.0, 6.0, 30.0])
    phis = jnp.arctan(jnp.array([0.95, 1.0, 1.05]))
    fees = jnp.array([0.0, 0.003, 0.01])

    def run(a, b, lam, phi, f):
        return gyroscope_reserves(prices, 1e6, alpha=a, beta=b, lam=lam, phi=phi, fees=f)

    batched = jax.vmap(run)(alphas, betas, lams, phis, fees)
    for i in range(3):
        single = gyroscope_reserves(prices, 1e6, alpha=float(alphas[i]), beta=float(betas[i]), lam=float(lams[i]),
                                    phi=float(phis[i]), fees=float(fees[i]))
        _assert_close_in_value(batched[i], single, prices)
    zero = jax.vmap(lambda a, b, lam, phi: gyroscope_reserves(prices, 1e6, alpha=a, beta=b, lam=lam, phi=phi))(
        alphas, betas, lams, phis)
    single = gyroscope_reserves(prices, 1e6, alpha=0.9, beta=1.1, lam=30.0, phi=float(phis[2]))
    _assert_close_in_value(zero[2], single, prices, tol=1e-12)


def test_gradients_are_finite_and_match_finite_differences():
    ratio = np.linspace(1.0, 0.85, 50)
    prices = jnp.asarray(np.stack([ratio, np.ones_like(ratio)], axis=1))

    def final_value(lam, beta):
        pool = dict(POOL, lam=lam, beta=beta)
        return jnp.sum(gyroscope_reserves(prices, 1e6, **pool)[-1] * prices[-1])

    g_lam, g_beta = jax.grad(final_value, argnums=(0, 1))(6.0, 1.25)
    assert np.isfinite(g_lam)
    fd = (final_value(6.0, 1.2501) - final_value(6.0, 1.2499)) / 0.0002
    np.testing.assert_allclose(g_beta, fd, rtol=1e-5)


def test_param_schema():
    names = [p.name for p in GYROSCOPE_PARAMS]
    assert names == ["alpha", "beta", "lam", "phi"]
    for p in GYROSCOPE_PARAMS:
        assert p.low <= p.initial_value() <= p.high

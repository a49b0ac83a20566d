"""reCLAMM (Balancer's re-centring concentrated-liquidity AMM) reserves under arbitrage: two tokens.

Formulas and order of operations follow the reference simulator (quantammsim, `pools/reCLAMM/reclamm.py`,
`reclamm_reserves.py`, with the G3M arbitrage of `pools/G3M/optimal_n_pool_arb.py` and `G3M_trades.py`);
the code is our own. The per-step math is in `reclamm_math`.

The pool. Token 0 is "A", token 1 "B" (the caller's order, the reference's: sorted token names); P = pA / pB
is the price of A in B. Real balances (Ra, Rb) and virtual balances (Va, Vb) make effective balances
Ea = Ra + Va, Eb = Rb + Vb that trade as a 50/50 constant product, invariant L = Ea Eb. Only real balances
are paid out and valued (reserves = (Ra, Rb)). The pool quotes Eb / Ea, so its range is
[Vb^2 / L, L / Va^2]: at the bottom Rb = 0, at the top Ra = 0. Centredness
c = min(Ra Vb, Va Rb) / max(Ra Vb, Va Rb) (1 = centred); "above centre" is Ra Vb > Va Rb (A cheap).

Initial state (contract's theoretical balances): the range [P0 / sqrt(Q), P0 sqrt(Q)] around the first
price, Q = price_ratio, i.e. Va = 1e6 / (sqrt(Q) - 1), Vb = P0 / sqrt(Q) (Va + 1e6), Rb, Ra put the pool
price at P0; then everything is rescaled so that Ra pA + Rb pB = initial_value. (Or give initial_state.)

Per step t (arbitrage steps only: prices[::arb_frequency], dt = 60 arb_frequency seconds), from the state
(Ra, Rb, Va, Vb) the previous step left (so the thermostat reacts one step after the pool drifts):
  1. c, above, sqrt(Q) = sqrt(price ratio of the current state, L^2 / (Va Vb)^2) -- recomputed every
     step, so fee income (L grows, V do not) slowly widens the range;
  2. thermostat, only if c < centeredness_margin (re-centring towards the market; the range moves in
     the direction of the market price because the dear token's virtual balance shrinks):
     - "geometric" (the contract): the dear token's virtual balance (B when above centre) decays
       V <- max(V base^s, R / (Q^(1/4) - 1)), s = dt (capped at 30 days), base = daily_price_shift_base
       (per second; shift_exponent e gives base = 1 - e / 124649 (124649 ~ 86400 / ln 2), i.e. the
       virtual balance shrinks by 2^-e per day);
       the other is recomputed to keep the price ratio, Vu = Ru (Vo + Ro) / ((sqrt Q - 1) Vo - Ro);
     - "constant_arc_length" (the reference's experiment): Z = sqrt(P_t) Va - Vb / sqrt(P_t) (market
       price of this step) moves by +-2 arc_length_speed sqrt(Ra + Va) dt, Vb solves a quadratic for it,
       the same floors apply; arc_length_speed = 0 falls back to geometric. Without a speed the reference
       calibrates one: the geometric first step at the onset state (see `reclamm_calibrated_speed`);
     - centeredness_scaling multiplies the step by margin / max(c, 1e-10) (s for geometric, the speed for
       arc length): further off centre, faster re-centring;
  3. arbitrage against P_t on the effective balances with the NEW virtual balances:
     - zero costs (fees, gas_cost, arb_fees all Python zeros): E -> (sqrt(L / P), sqrt(L P)) and
       R = E - V, no profitability test (the reference's zero-fee scan);
     - otherwise the G3M optimal trade at weights (1/2, 1/2) and gamma = 1 - fees (the zero-fee trade
       when gamma == 1); executed if -Delta.p - gas_cost >= arb_fees / 2 sum |Delta| p; added to the
       REAL balances;
     - clamp to edge: if that would make a real balance negative, the pool instead sells that token down
       to DUST_VALUE (0.01 in price units: the reference's $0.01) of it along the curve,
       in = E_in / gamma (E_out / (E_out - out) - 1), with no profitability test; so out of range one real
       balance is worth 0.01, not 0 (the reference keeps the dust so that the arc-length thermostat's
       sqrt(Ra + Va) and its quadratic stay finite);
  4. fees (fee path): the executed inbound leg pays (1 - gamma) of itself; protocol_fee_split of that
     leaves the pool, the rest stays in the reserves and is reported as fee_revenue[t] = LP share x price.
Row t is the state after step t (row 0 is the step at the first price, a no-op for a fresh pool). With
arb_frequency f each row is repeated f times (cut to T) and fee_revenue is zero in the repeated rows, as
the reference's forward pass does.

Where we differ from the reference by default (`invariant_tolerance=0.0` reproduces it): its fee-path
trade is valid only if the fee-adjusted invariant after it is >= the one before, but the optimal trade
leaves it exactly equal, so rounding decides and drops a share of profitable trades; we accept
post >= (1 - 1e-9) pre (see shared/docs/tfmm-reference-details.md, "Knife-edge").

Differentiable (reverse mode; only scan and selects) in everything the reference tunes: price_ratio,
centeredness_margin, daily_price_shift_base / shift_exponent, arc_length_speed and fees (the reference
searches them with Optuna; its `reclamm_learn_*` flags add arc_length_speed and fees to the parameters).
Note that arc_length_speed is not scale-free: Z grows like the pool value and sqrt(Ra + Va) like its
square root, so the same speed moves a larger pool relatively more slowly.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from quant_core.params import LOG, Param, Transform
from quant_core.sim.amm import reclamm_math as rm


def _logit(v, _c):
    return jnp.log(v) - jnp.log1p(-v)


# price_ratio > 1 trains as log(Q - 1); the margin in (0, 1) as its logit; the shift base in (0, 1), close
# to 1, as the logit of 1 - base (its per-second decay rate)
LOG_EXCESS = Transform("log_excess", lambda v, _c: jnp.log(v - 1.0), lambda x, _c: 1.0 + jnp.exp(x), 1.0)
LOGIT = Transform("logit", _logit, lambda x, _c: jax.nn.sigmoid(x), 0.0, 1.0)
LOGIT_DECAY = Transform("logit_decay", lambda v, _c: jnp.log1p(-v) - jnp.log(v), lambda x, _c: jax.nn.sigmoid(-x),
                        0.0, 1.0)

DEFAULT_SHIFT_BASE = 1.0 - 1.0 / 124000.0

RECLAMM_PARAMS: tuple[Param, ...] = (
    Param("price_ratio", 1.01, 200.0, 4.0, log_scale=True, transform=LOG_EXCESS, scalar=True,
          initial_key="initial_price_ratio",
          description="max price / min price of the initial range, centred (geometrically) on the first price"),
    Param("centeredness_margin", 0.01, 0.99, 0.2, transform=LOGIT, scalar=True,
          initial_key="initial_centeredness_margin",
          description="the thermostat re-centres the range while the pool's centredness is below this (0-1)"),
    Param("daily_price_shift_base", 1.0 - 125.0 / rm.SHIFT_EXPONENT_DIVISOR, 1.0 - 1e-5 / rm.SHIFT_EXPONENT_DIVISOR,
          DEFAULT_SHIFT_BASE, transform=LOGIT_DECAY, scalar=True, unit="per second",
          initial_key="initial_daily_price_shift_base",
          description="per-second decay base of the dear token's virtual balance while re-centring "
          "(1 - 1/124000 halves it in a day); unused with reclamm_use_shift_exponent"),
    Param("shift_exponent", 1e-5, 125.0, 1.0, log_scale=True, transform=LOG, scalar=True,
          initial_key="initial_shift_exponent", only_if="reclamm_use_shift_exponent",
          description="re-centring speed as the contract's exponent: base = 1 - exponent / 124649, the dear "
          "token's virtual balance shrinks by 2^-exponent per day"),
    Param("arc_length_speed", 1e-7, 1e-2, 1e-4, log_scale=True, transform=LOG, scalar=True, unit="per second",
          initial_key="initial_arc_length_speed", only_if="reclamm_learn_arc_length_speed",
          description="constant-arc-length thermostat speed (Delta Z / (2 sqrt(Ra + Va)) per second); "
          "read only with reclamm_interpolation_method 'constant_arc_length'"),
    Param("fees", 1e-5, 0.05, 0.0025, log_scale=True, transform=LOG, scalar=True,
          initial=lambda spec: getattr(spec, "fees", 0.0025) or 0.0025, initial_key="fees",
          only_if="reclamm_learn_fees", description="swap fee as a trainable parameter (replaces the run's fees)"),
)

THERMOSTATS = ("geometric", "constant_arc_length")


class ReclammResult(NamedTuple):
    reserves: jax.Array  # [T, 2] real balances (Ra, Rb) after each minute's step
    fee_revenue: jax.Array  # [T] LP fee income per minute in the numeraire (zero at repeated minutes)
    virtual_balances: jax.Array  # [T, 2] (Va, Vb) after each minute's thermostat


def reclamm_initial_state(initial_value, first_prices, price_ratio) -> jax.Array:
    """(Ra, Rb, Va, Vb) [4] of a pool centred on the first price, worth initial_value there."""
    f = jnp.float64
    return jnp.stack(rm.initial_state(jnp.asarray(initial_value, f), jnp.asarray(first_prices, f),
                                      jnp.asarray(price_ratio, f)))


def reclamm_calibrated_speed(state, daily_price_shift_base, centeredness_margin, arb_frequency: int = 1):
    """The reference's automatic arc_length_speed: the geometric thermostat's first step at the onset
    state (same invariant and virtual balances, centredness = margin above centre), as |Delta Z| /
    (2 sqrt(Ra + Va)) per second."""
    s = jnp.asarray(state, jnp.float64)
    return rm.calibrated_arc_length_speed(s[0], s[1], s[2], s[3], jnp.asarray(daily_price_shift_base, jnp.float64),
                                          60.0 * int(arb_frequency), jnp.asarray(centeredness_margin, jnp.float64))


def reclamm_price(state) -> jax.Array:
    """The pool's quoted price of A in B, (Rb + Vb) / (Ra + Va), of a state (Ra, Rb, Va, Vb)."""
    s = jnp.asarray(state, jnp.float64)
    return (s[..., 1] + s[..., 3]) / (s[..., 0] + s[..., 2])


def _is_static_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


def reclamm_reserves(
    prices: jax.Array,
    initial_value=None,
    *,
    price_ratio=4.0,
    centeredness_margin=0.2,
    daily_price_shift_base=DEFAULT_SHIFT_BASE,
    shift_exponent=None,
    thermostat: str = "geometric",
    arc_length_speed=None,
    centeredness_scaling: bool = False,
    fees=0.0,
    gas_cost=0.0,
    arb_fees=0.0,
    protocol_fee_split=0.0,
    arb_frequency: int = 1,
    initial_state: jax.Array | None = None,
    invariant_tolerance=1e-9,
    do_arb: bool = True,
) -> ReclammResult:
    """Reserves [T, 2], fee revenue [T] and virtual balances [T, 2] of a reCLAMM pool under arbitrage.

    prices: [T, 2] in a common numeraire (token 0 = A, token 1 = B).
    initial_value: pool value at prices[0] (a fresh pool centred there with range ratio price_ratio), or
        give initial_state = (Ra, Rb, Va, Vb) (then price_ratio is not used).
    price_ratio, centeredness_margin, daily_price_shift_base (or shift_exponent, which replaces it),
        arc_length_speed, fees, gas_cost, arb_fees, protocol_fee_split: scalars (traceable, vmappable).
    thermostat: "geometric" | "constant_arc_length"; for the latter arc_length_speed=None calibrates the
        speed from the geometric thermostat (`reclamm_calibrated_speed`).
    invariant_tolerance: scalar, 0 = the reference's knife-edge test. centeredness_scaling (a Python bool),
        arb_frequency, do_arb: static settings.
    With Python-number zero fees, gas_cost and arb_fees the zero-fee scan runs (no profitability test);
    otherwise the fee scan (as the reference dispatches). do_arb=False: nothing trades or re-centres.
    """
    prices = jnp.asarray(prices, jnp.float64)
    if prices.ndim != 2 or prices.shape[1] != 2:
        raise ValueError(f"reCLAMM pools have exactly two tokens; prices has shape {prices.shape}")
    if int(arb_frequency) < 1:
        raise ValueError("arb_frequency must be >= 1")
    if thermostat not in THERMOSTATS:
        raise ValueError(f"thermostat must be one of {THERMOSTATS}, got {thermostat!r}")
    if initial_state is None and initial_value is None:
        raise ValueError("give initial_value or initial_state")
    f64 = partial(jnp.asarray, dtype=jnp.float64)
    given = initial_state is not None
    # The initial state and the calibration are computed inside the compiled function, as the reference does:
    # XLA rounds some of their operations differently from eager evaluation (last bits), and the arc-length
    # thermostat at the edge of the range amplifies last bits by ~1e8. Choices that need no separate code
    # (given state, calibration, centredness scaling) are traced flags: fewer compilations.
    state = f64(initial_state) if given else jnp.zeros(4)
    fresh = jnp.stack([f64(1.0 if given else initial_value), f64(4.0 if given else price_ratio)])
    base = daily_price_shift_base if shift_exponent is None else 1.0 - f64(shift_exponent) / rm.SHIFT_EXPONENT_DIVISOR
    calibrate = thermostat == "constant_arc_length" and arc_length_speed is None
    speed = 0.0 if thermostat == "geometric" or arc_length_speed is None else arc_length_speed
    zero_costs = all(_is_static_zero(x) for x in (fees, gas_cost, arb_fees))
    flags = jnp.array([given, calibrate, bool(centeredness_scaling)])
    return _engine(
        prices, state, fresh, flags, *(f64(x) for x in (centeredness_margin, base, speed, fees, gas_cost, arb_fees,
                                                        protocol_fee_split, invariant_tolerance)),
        arb_frequency=int(arb_frequency), thermostat=thermostat, zero_costs=zero_costs, do_arb=bool(do_arb),
    )


def reclamm_pool_reserves(
    prices: jax.Array,
    initial_value,
    params: dict,
    *,
    fees=0.0,
    gas_cost=0.0,
    arb_fees=0.0,
    protocol_fee_split=0.0,
    arb_frequency: int = 1,
    interpolation_method: str = "geometric",
    arc_length_speed=None,
    centeredness_scaling: bool = False,
    use_shift_exponent: bool = False,
    learn_arc_length_speed: bool = False,
    learn_fees: bool = False,
    initial_state=None,
    invariant_tolerance=1e-9,
    do_arb: bool = True,
) -> ReclammResult:
    """`reclamm_reserves` with the parameters resolved as the reference's ReClammPool resolves them.

    params: {name: [n] or scalar} in user units (RECLAMM_PARAMS; element 0 is read; a missing one takes its
    default). The keyword arguments are the run's settings (reference run-fingerprint keys in brackets):
      shift base: params["shift_exponent"] if use_shift_exponent [reclamm_use_shift_exponent], else
        params["daily_price_shift_base"];
      fees: params["fees"] if learn_fees [reclamm_learn_fees], else `fees`;
      thermostat: interpolation_method [reclamm_interpolation_method]; for "constant_arc_length" the speed is
        params["arc_length_speed"] if learn_arc_length_speed [reclamm_learn_arc_length_speed], else
        arc_length_speed [reclamm_arc_length_speed], else (None) calibrated from the geometric thermostat;
      centeredness_scaling [reclamm_centeredness_scaling], protocol_fee_split, gas_cost, arb_fees,
      arb_frequency, do_arb as named; initial_state (Ra, Rb, Va, Vb) [reclamm_initial_state] replaces the
      fresh pool built from initial_value [initial_pool_value] and price_ratio.
    """
    defaults = {p.name: p.default for p in RECLAMM_PARAMS}

    def scalar(name):
        value = params[name] if name in params else defaults[name]
        return jnp.reshape(jnp.asarray(value, jnp.float64), (-1,))[0]

    speed = None
    if interpolation_method == "constant_arc_length":
        speed = scalar("arc_length_speed") if learn_arc_length_speed else arc_length_speed
    return reclamm_reserves(
        prices, initial_value,
        price_ratio=scalar("price_ratio"), centeredness_margin=scalar("centeredness_margin"),
        daily_price_shift_base=None if use_shift_exponent else scalar("daily_price_shift_base"),
        shift_exponent=scalar("shift_exponent") if use_shift_exponent else None,
        thermostat=interpolation_method, arc_length_speed=speed, centeredness_scaling=centeredness_scaling,
        fees=scalar("fees") if learn_fees else fees, gas_cost=gas_cost, arb_fees=arb_fees,
        protocol_fee_split=protocol_fee_split, arb_frequency=arb_frequency, initial_state=initial_state,
        invariant_tolerance=invariant_tolerance, do_arb=do_arb,
    )


def _thermostat(ra, rb, va, vb, market, margin, base, speed, seconds, thermostat, scaling):
    """Step 2: the virtual balances after this step's re-centring (unchanged while c >= margin)."""
    c, above = rm.centeredness(ra, rb, va, vb)
    sqrt_q = jnp.sqrt(rm.price_ratio(ra, rb, va, vb))
    mult = jnp.where(scaling, margin / jnp.maximum(c, 1e-10), 1.0)
    new_va, new_vb = rm.geometric_update(ra, rb, va, vb, above, base, seconds * mult, sqrt_q)
    if thermostat == "constant_arc_length":
        cal_va, cal_vb = rm.arc_length_update(ra, rb, va, vb, above, speed * mult, seconds, sqrt_q, market)
        use = speed > 0.0
        new_va, new_vb = jnp.where(use, cal_va, new_va), jnp.where(use, cal_vb, new_vb)
    out = c < margin
    return jnp.where(out, new_va, va), jnp.where(out, new_vb, vb)


def _clamp(ra, rb, ra_new, rb_new, va, vb, prices, gamma):
    """Step 3's clamp to edge: a real balance that would go negative is drained to dust instead."""
    drain_a, drain_b = rm.edge_trades(ra + va, rb + vb, ra, rb, prices, gamma)
    clamp_a, clamp_b = ra_new < 0, rb_new < 0
    ra_out = jnp.where(clamp_a, ra + drain_a[0], jnp.where(clamp_b, ra + drain_b[0], ra_new))
    rb_out = jnp.where(clamp_a, rb + drain_a[1], jnp.where(clamp_b, rb + drain_b[1], rb_new))
    return ra_out, rb_out


def _zero_fee_arb(ra, rb, va, vb, prices, market):
    ea, eb = rm.zero_fee_effective(ra, rb, va, vb, market)
    ra_new, rb_new = _clamp(ra, rb, ea - va, eb - vb, va, vb, prices, 1.0)
    return ra_new, rb_new, jnp.zeros_like(ra)


def _fee_arb(ra, rb, va, vb, prices, market, per, other, gamma, gas_cost, arb_fees, split, tolerance):
    e = jnp.stack([ra + va, rb + vb])
    ea, eb = rm.zero_fee_effective(ra, rb, va, vb, market)
    zero_trade = jnp.stack([ea - (ra + va), eb - (rb + vb)])
    trade = jnp.where(gamma != 1.0, rm.fee_trade(e, prices, gamma, per, other, tolerance), zero_trade)
    profit = -(trade * prices).sum() - gas_cost
    cost = 0.5 * arb_fees * (jnp.abs(trade) * prices).sum()
    applied = jnp.where(profit >= cost, trade, 0.0)
    ra_new, rb_new = _clamp(ra, rb, ra + applied[0], rb + applied[1], va, vb, prices, gamma)
    fee_rate = 1.0 - gamma
    inbound = jnp.maximum(jnp.stack([ra_new - ra, rb_new - rb]), 0.0)
    protocol = inbound * fee_rate * split
    revenue = ((inbound * fee_rate * (1.0 - split)) * prices).sum()
    return ra_new - protocol[0], rb_new - protocol[1], revenue


@partial(jax.jit, static_argnames=("arb_frequency", "thermostat", "zero_costs", "do_arb"))
def _engine(prices, given_state, fresh, flags, margin, base, speed, fees, gas_cost, arb_fees, split, tolerance, *,
            arb_frequency, thermostat, zero_costs, do_arb):
    t_len = prices.shape[0]
    given, calibrate, scaling = flags[0], flags[1], flags[2]
    state = jnp.where(given, given_state, jnp.stack(rm.initial_state(fresh[0], prices[0], fresh[1])))
    if not do_arb:
        return ReclammResult(jnp.broadcast_to(state[:2], (t_len, 2)), jnp.zeros(t_len),
                             jnp.broadcast_to(state[2:], (t_len, 2)))
    if thermostat == "constant_arc_length":
        speed = jnp.where(calibrate, rm.calibrated_arc_length_speed(*state, base, 60.0 * arb_frequency, margin), speed)
    acted = prices[::arb_frequency]
    market = acted[:, 0] / acted[:, 1]
    seconds = 60.0 * arb_frequency
    gamma = 1.0 - fees
    if zero_costs:
        per = other = jnp.zeros((acted.shape[0], 2, 2))
    else:  # price-only factors of the fee candidates, vectorised before the scan as the reference does
        per, other = rm.fee_price_terms(acted, gamma)

    def step(carry, x):
        ra, rb, va, vb = carry
        p, m, per_t, other_t = x
        va, vb = _thermostat(ra, rb, va, vb, m, margin, base, speed, seconds, thermostat, scaling)
        if zero_costs:
            ra, rb, revenue = _zero_fee_arb(ra, rb, va, vb, p, m)
        else:
            ra, rb, revenue = _fee_arb(ra, rb, va, vb, p, m, per_t, other_t, gamma, gas_cost, arb_fees, split,
                                       tolerance)
        return (ra, rb, va, vb), (jnp.stack([ra, rb]), revenue, jnp.stack([va, vb]))

    _, (reserves, revenue, virtual) = jax.lax.scan(step, tuple(state), (acted, market, per, other))
    if arb_frequency != 1:
        reserves = jnp.repeat(reserves, arb_frequency, axis=0)[:t_len]
        virtual = jnp.repeat(virtual, arb_frequency, axis=0)[:t_len]
        revenue = jnp.zeros(t_len).at[::arb_frequency].set(revenue)
    return ReclammResult(reserves, revenue, virtual)

"""Gyroscope E-CLP: lam and phi solved from the value shares the pool should start with.

Why: people know the split of value a pool should open with (70 % ETH, 30 % USDC), not an ellipse's stretch
and angle. The reference does the same (quantammsim `pools/ECLP/gyroscope.py` `_get_lam_and_phi`, with
`optimize_lambda_and_tan_phi` of `pools/ECLP/gyroscope_weight_conversion.py`): at the first price of every
window it picks, among the (lam, tan phi) that give the non-numeraire token (the E-CLP's token 0) the target
value share, the one of least sqrt(lam^2 + tan^2 phi), by minimising 1e6 (share - target)^2 + that norm with
10,000 gradient steps of 0.001 (lam = 1 + softplus, tan phi = softplus) from the nearest point of a 10 x 10
grid, which it keeps when descent ends further off; a target it cannot reach passes silently.

Here the same choice is solved as a constrained problem: the share equals the target and lam^2 + tan^2 phi is
least, inside the parameters' ranges (1 <= lam <= 1e8, 1e-6 <= phi <= pi/2 - 1e-6). For each t = tan phi on a
log grid (the whole range plus [alpha, beta], where the extreme shares live) the smallest lam reaching the
target is bracketed on a log-lam grid and bisected (the share is not monotone in lam for every t); the best t
is refined on finer grids around it. Out of reach: NaN, and `check_target_weights` says why.

The share uses a form of our own that does not cancel (the engine's loses digits at large lam with t far from
the price: 1e-5 of the share by lam 100 at a price of 2000). With t = tan phi, E_p = sqrt((1 + t p)^2 +
lam^2 (p - t)^2), a_p = lam^2 (p - t) + t (1 + t p), b_p = (1 + t p) - lam^2 t (p - t), K = lam (1 + t^2), the
unit reserves at price q are, up to a common factor cos phi (a = alpha, b = beta),
    r0 = a_b / E_b - a_q / E_q = K^2 (b - q)(a_b + a_q) / (E_b E_q (a_b E_q + a_q E_b))
    r1 = b_a / E_a - b_q / E_q = K^2 (q - a)(a b_q + q b_a) / (E_a E_q (b_a E_q + b_q E_a))
(the second forms when the two terms share a sign), since a_p^2 = m00 E_p^2 - K^2 and b_p^2 = m11 E_p^2 -
K^2 p^2 for the ellipse's quadratic form m (det m = K^2).

Gradients: lam leaves through one Newton step from the solution held fixed, so its derivative in alpha and
beta is the implicit one that keeps the share on target with phi held.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from quant_core.sim.amm.gyroscope import GYROSCOPE_PARAMS, gyroscope_initial_reserves

_RANGE = {p.name: (p.low, p.high) for p in GYROSCOPE_PARAMS}
LAM_MAX = _RANGE["lam"][1]
_X_MAX = math.log(LAM_MAX)  # log lam runs over [0, _X_MAX]
_Y_LO, _Y_HI = math.log(math.tan(_RANGE["phi"][0])), math.log(math.tan(_RANGE["phi"][1]))  # log tan phi
_N_COARSE, _N_LAM, _BISECT, _ZOOMS = 257, 97, 60, 2
_H = 1e-5  # step in log lam of the slope's central difference
SHARE_TOLERANCE = 1e-6  # the engine's share at the solution must be this close, or the run is refused


def value_share(lam: ArrayLike, tan_phi: ArrayLike, alpha: ArrayLike, beta: ArrayLike, q: ArrayLike) -> jax.Array:
    """Share of the pool's value in token 0 (the one priced in token 1) on the curve at price q (clipped to
    [alpha, beta]); any invariant. Traceable; the stable form of the module docstring."""
    q = jnp.clip(q, alpha, beta)
    l2, t = lam * lam, tan_phi
    k2 = l2 * (1.0 + t * t) ** 2

    def parts(p):
        u, d = 1.0 + t * p, p - t
        return l2 * d + t * u, u - l2 * t * d, jnp.sqrt(u * u + l2 * d * d)

    a_b, _, e_b = parts(beta)
    a_q, b_q, e_q = parts(q)
    _, b_a, e_a = parts(alpha)
    # the product forms divide by a sum of two same-signed terms; the other branch is taken otherwise, and its
    # denominator is kept at 1 there so that no inf reaches a gradient through jnp.where
    same0, same1 = a_b * a_q > 0, b_a * b_q > 0
    den0 = jnp.where(same0, a_b * e_q + a_q * e_b, 1.0)
    den1 = jnp.where(same1, b_a * e_q + b_q * e_a, 1.0)
    r0 = jnp.where(same0, k2 * (beta - q) * (a_b + a_q) / den0, a_b * e_q - a_q * e_b) / (e_b * e_q)
    r1 = jnp.where(same1, k2 * (q - alpha) * (alpha * b_q + q * b_a) / den1, b_a * e_q - b_q * e_a) / (e_a * e_q)
    return q * r0 / (q * r0 + r1)


def _smallest_log_lams(ts, target, alpha, beta, q):
    """For each t [T]: log lam of the smallest lam in range whose share is the target, and whether one is."""
    xs = jnp.linspace(0.0, _X_MAX, _N_LAM)

    def side(x, t):
        return value_share(jnp.exp(x), t, alpha, beta, q) - target

    sides = side(xs[None, :], ts[:, None])  # [T, N]; lam = 1 is the circle, the same share for every t
    crossed = sides * sides[:, :1] <= 0
    first = jnp.argmax(crossed, axis=1)
    lo, hi = xs[jnp.maximum(first - 1, 0)], xs[first]

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        same = side(mid, ts) * sides[:, 0] > 0
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECT, halve, (lo, hi))
    return jnp.where(first == 0, 0.0, 0.5 * (lo + hi)), jnp.any(crossed, axis=1)


def solve_lam_phi(target_share: ArrayLike, alpha: ArrayLike, beta: ArrayLike,
                  q: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(lam, phi) giving token 0 the value share `target_share` at price q (token 0 in token 1), with the least
    lam^2 + tan^2 phi (the reference's choice); NaN for both when no (lam, phi) in range reaches it. Traceable
    and vmappable in every argument."""
    f = jnp.float64
    target, alpha, beta, q = (jnp.asarray(v, f) for v in (target_share, alpha, beta, q))
    n = 2 * _N_COARSE
    first = jnp.concatenate([jnp.linspace(_Y_LO, _Y_HI, _N_COARSE), jnp.linspace(jnp.log(alpha), jnp.log(beta),
                                                                                  _N_COARSE)])
    steps = jnp.concatenate([jnp.full(_N_COARSE, (_Y_HI - _Y_LO) / (_N_COARSE - 1)),
                             jnp.full(_N_COARSE, (jnp.log(beta) - jnp.log(alpha)) / (_N_COARSE - 1))])

    def level(k, carry):
        """The log tan phi grid of this level (the first: the whole range and [alpha, beta]; then finer ones
        around the best so far, which each keeps), and its point of least lam^2 + tan^2 phi."""
        y, half, _, _ = carry
        lo, hi = jnp.maximum(y - half, _Y_LO), jnp.minimum(y + half, _Y_HI)
        ys = jnp.where(k == 0, first, jnp.append(jnp.linspace(lo, hi, n - 1), y))
        xs, ok = _smallest_log_lams(jnp.exp(ys), target, alpha, beta, q)
        i = jnp.argmin(jnp.where(ok, jnp.exp(2.0 * xs) + jnp.exp(2.0 * ys), jnp.inf))
        return ys[i], jnp.where(k == 0, steps[i], (hi - lo) / (n - 2)), xs[i], ok[i]

    zero = jnp.zeros((), f)
    y, _, x0, found = jax.lax.fori_loop(0, 1 + _ZOOMS, level, (zero, zero, zero, jnp.zeros((), bool)))
    t, x0 = jnp.exp(jax.lax.stop_gradient(y)), jax.lax.stop_gradient(x0)

    def miss(x):
        return value_share(jnp.exp(x), t, alpha, beta, q) - target

    # one Newton step from the solution held fixed: the same lam (to rounding) and, through miss(x0), the
    # implicit derivative -d miss / d(alpha, beta, q) / slope; the slope is a constant for it
    slope = jax.lax.stop_gradient((miss(x0 + _H) - miss(x0 - _H)) / (2.0 * _H))
    steep = jnp.abs(slope) > 1e-9
    x = jnp.maximum(x0 - jnp.where(steep, miss(x0) / jnp.where(steep, slope, 1.0), 0.0), 0.0)
    nan = jnp.full((), jnp.nan)
    return jnp.where(found, jnp.exp(x), nan), jnp.where(found, jnp.arctan(t), nan)


_solve = jax.jit(solve_lam_phi)  # for the concrete checks below: compiled once per process


def reachable_shares(alpha: float, beta: float, q: float) -> tuple[float, float]:
    """The least and greatest value share of token 0 at price q that some (lam, phi) in range gives (on the
    solver's grid): what a target must lie strictly between."""
    ys = np.concatenate([np.linspace(_Y_LO, _Y_HI, _N_COARSE), np.linspace(math.log(alpha), math.log(beta),
                                                                            _N_COARSE)])
    xs = np.linspace(0.0, _X_MAX, _N_LAM)
    shares = np.asarray(value_share(np.exp(xs)[None, :], np.exp(ys)[:, None], float(alpha), float(beta), float(q)))
    return float(shares.min()), float(shares.max())


def check_target_weights(weights: ArrayLike, first_prices: ArrayLike, alpha: float, beta: float, *,
                         numeraire_first: bool,
                         tokens: tuple[str, str] = ("token 0", "token 1")) -> tuple[float, float]:
    """The (lam, phi) the engine will use for `initial_weights` (alphabetical order) at the window's first
    prices (alphabetical, any common quote), or ValueError naming `initial_weights` and the fix."""
    w = np.asarray(weights, dtype=np.float64)
    p = np.asarray(first_prices, dtype=np.float64)
    if numeraire_first:  # the E-CLP's token 0 is the one priced in the numeraire
        w, p, tokens = w[::-1], p[::-1], tokens[::-1]
    q = p[0] / p[1]
    where = f"initial_weights {np.asarray(weights).tolist()} (gyroscope)"
    if not alpha < q < beta:
        raise ValueError(f"{where}: the first price of {tokens[0]}, {q:.6g} {tokens[1]}, lies outside the price "
                         f"range [alpha, beta] = [{alpha:g}, {beta:g}], where the pool holds one token only; "
                         "move alpha/beta around it, or give parameters.lam/phi instead of initial_weights")
    lam, phi = (float(v) for v in _solve(w[0], alpha, beta, q))
    if not np.isfinite(lam):
        lo, hi = reachable_shares(alpha, beta, q)
        raise ValueError(f"{where}: at the first price ({q:.6g} {tokens[1]} per {tokens[0]}) and price range "
                         f"[{alpha:g}, {beta:g}], no lam in [1, {LAM_MAX:g}] and phi reach a {tokens[0]} share of "
                         f"{w[0]:.6g}; reachable: {lo:.6g} to {hi:.6g}. Choose weights in that span, or widen the "
                         f"range: a higher beta lets {tokens[0]} weigh more, a lower alpha lets {tokens[1]}")
    got = gyroscope_initial_reserves(1.0, p, alpha=alpha, beta=beta, lam=lam, phi=phi)
    share = float(got[0] * p[0] / (got @ p))
    if abs(share - w[0]) > SHARE_TOLERANCE:
        raise ValueError(f"{where}: the pool that gives these shares (lam {lam:.6g}, phi {phi:.6g}) is beyond the "
                         f"float64 precision of the E-CLP formulas at this price (it would start at {share:.6g}); "
                         "choose weights nearer the pool's natural split or a price range nearer the first price")
    return lam, phi


def check_start_shares(start_shares: ArrayLike, weights: ArrayLike, first_prices: ArrayLike, alpha: float,
                       beta: float, *, numeraire_first: bool, tokens: tuple[str, str]) -> None:
    """After a run whose lam and phi were solved from `initial_weights`: the pool's value shares at the first
    price [2] must be those weights, or ValueError says why not (the reason, the field, the fix)."""
    shares = np.asarray(start_shares, dtype=np.float64)
    if np.all(np.isfinite(shares)) and np.max(np.abs(shares - np.asarray(weights))) <= SHARE_TOLERANCE:
        return
    check_target_weights(weights, first_prices, alpha, beta, numeraire_first=numeraire_first, tokens=tokens)
    raise ValueError(f"initial_weights {list(weights)} (gyroscope): the pool started at value shares "
                     f"{shares.tolist()} instead; give parameters.lam/phi instead of initial_weights")

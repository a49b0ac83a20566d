"""Every dynamic rule against a plain NumPy restatement of the reference (QuantAMM's quantammsim) pool.

The reference functions return C-1 rows for delta rules and min_variance (their row j belongs to
chunk j+1) and C rows for the market-cap index (row j belongs to chunk j); our rules return C rows,
row c being what the simulator uses for chunk c. The restatements below keep the reference's shapes
and the comparisons spell out the alignment.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quant_core.sim.estimators import memory_days_to_lamb
from quant_core.sim.rules import ALL_RULES
from quant_core.sim.schema import PoolRule, RuleContext
from quant_core.spec import PoolSpec

CP = 1440
C, N = 200, 3
# the hodling index variants share index_market_cap's rule function (only their reserve engine differs)
RULES = {r.name: r for r in ALL_RULES if r.reserve_engine == "g3m"}
MEMORY_PARAMS = ("memory_days", "memory_days_2", "memory_days_trend", "memory_days_envelope")

PARAMS = {
    "memory_days": [5.0, 12.0, 30.0],
    "memory_days_2": [9.0, 3.0, 45.0],
    "memory_days_trend": [3.0, 7.0, 20.0],
    "memory_days_envelope": [10.0, 4.0, 15.0],
    "k_per_day": [10.0, 20.0, 40.0],
    "amplitude": [0.5, 1.0, 2.0],
    "width": [0.02, 0.05, 0.1],
    "exponents": [0.8, 1.5, 2.2],
    "pre_exp_scaling": [0.3, 0.5, 1.0],
}


def _prices(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(np.cumsum(rng.normal(0.0, 0.03, (C, N)), axis=0)) * np.array([30000.0, 2000.0, 1.0])


PRICES = _prices()
AUX = {"market_cap": PRICES * np.array([19e6, 120e6, 3e10])}


def _params(rule: PoolRule, scale: float = 1.0) -> dict[str, jax.Array]:
    out = {}
    for p in rule.params:
        v = np.asarray(PARAMS[p.name])
        out[p.name] = jnp.asarray(v * scale if p.name != "exponents" else v)
    return out


def _ctx(method: str = "scan", alt: bool = False, pes: bool = True, max_memory: float = 365.0) -> RuleContext:
    return RuleContext(CP, max_memory, method, use_pre_exp_scaling=pes, use_alt_lamb=alt)


@functools.cache
def _compiled(rule_name: str):
    return jax.jit(RULES[rule_name].deltas, static_argnums=2)


def _run(rule: PoolRule, prices, params, ctx, aux=AUX) -> np.ndarray:
    """The rule's output, jitted once per rule and context (as the simulator runs it)."""
    inputs = {k: jnp.asarray(aux[k]) for k in rule.required_aux}
    return np.asarray(_compiled(rule.name)(jnp.asarray(prices), params, ctx, inputs))


# ---------------------------------------------------------------------------------------------
# the reference, restated in NumPy (formulas and order of operations of quantammsim)


def _lamb(memory, max_memory=365.0):
    return np.asarray(memory_days_to_lamb(np.minimum(np.asarray(memory), max_memory), CP))


def ref_gradients(x, lamb, alt_lamb=None):
    """calc_gradients on the CPU path: the scan's outputs without g_0 (C-1 rows)."""
    g_inf = 1.0 / (1.0 - lamb)
    b = lamb / (1 - lamb) ** 3
    ewma, a = x[0].copy(), np.zeros(x.shape[1])
    alt_g_inf = None if alt_lamb is None else 1.0 / (1.0 - alt_lamb)
    alt_ewma = x[0].copy()
    out = []
    for xc in x[1:]:
        ewma = ewma + (xc - ewma) / g_inf
        if alt_lamb is not None:
            alt_ewma = alt_ewma + (xc - alt_ewma) / alt_g_inf
        a = lamb * a + g_inf * (xc - ewma)
        a = np.where(np.abs(a) < 1e-10, 0.0, a)
        out.append(a / (b * (ewma if alt_lamb is None else alt_ewma)))
    return np.array(out)


def ref_ewma(x, lamb):
    """_jax_ewma_at_infinity_via_scan: C-1 rows (no row for the first price)."""
    g_inf = 1.0 / (1.0 - lamb)
    ewma, out = x[0].copy(), []
    for xc in x[1:]:
        ewma = ewma + (xc - ewma) / g_inf
        out.append(ewma)
    return np.array(out)


def ref_variances(x, lamb):
    """calc_return_variances, CPU path: C-1 rows, the first being ones."""
    r = np.diff(x, axis=0) / x[:-1]
    g_inf = 1.0 / (1.0 - lamb)
    ewma, var, out = r[0].copy(), np.zeros(x.shape[1]), [np.ones(x.shape[1])]
    for rc in r[1:]:
        d_old = rc - ewma
        ewma = ewma + d_old / g_inf
        d_new = d_old * (1 - 1 / g_inf)
        var = lamb * var + d_old * d_new
        out.append(var * (1 - lamb))
    return np.array(out)


def ref_momentum_update(signal, k):
    offset = -(k * signal).sum(axis=-1, keepdims=True) / np.sum(k)
    return np.where(k == 0.0, 0.0, k * (signal + offset))


def ref_channel_update(signal, k):
    offset = -(k * signal).sum(axis=-1, keepdims=True) / np.sum(k)
    return k * (signal + offset)


def ref_mrc_signal(g_ch, g_tr, g_env, k, width, amplitude, exponents, pes):
    envelope = np.exp(-(g_env**2) / (2 * width**2))
    scaled = np.pi * g_ch / (3 * width)
    channel = -amplitude * envelope * (scaled - scaled**3 / 6) / 0.5415
    trend = (1 - envelope) * np.sign(g_tr) * np.power(np.abs(g_tr / (2.0 * pes)), exponents)
    return channel + trend


def reference(name: str, x: np.ndarray, p: dict, *, alt=False, pes_on=True, max_memory=365.0, aux=AUX) -> np.ndarray:
    """The reference pool's rule outputs in its own shape."""
    p = {k: np.asarray(v) for k, v in p.items()}
    mem = {k: np.minimum(p[k], max_memory) for k in MEMORY_PARAMS if k in p}
    lamb = {k: _lamb(p[k], max_memory) for k in mem}
    pes = p.get("pre_exp_scaling") if pes_on else 0.5
    if name in ("momentum", "anti_momentum", "power_channel", "mean_reversion_channel"):
        g = ref_gradients(x, lamb["memory_days"], lamb["memory_days_2"] if alt else None)
        k = p["k_per_day"] * mem["memory_days"]
        if name == "momentum":
            return ref_momentum_update(g, k)
        if name == "anti_momentum":
            return ref_momentum_update(g, -k)
        if name == "power_channel":
            signal = np.sign(g) * np.power(np.abs(g / (2.0 * pes)), np.clip(p["exponents"], 1.0, None))
            return ref_channel_update(signal, k)
        signal = ref_mrc_signal(g, g, g, k, p["width"], p["amplitude"], p["exponents"], pes)
        return ref_channel_update(signal, k)
    if name == "triple_threat_mean_reversion_channel":
        grads = [ref_gradients(x, lamb[m], lamb["memory_days_2"])
                 for m in ("memory_days", "memory_days_trend", "memory_days_envelope")]
        memory = mem["memory_days_2"]
        k = p["k_per_day"] * memory
        signal = ref_mrc_signal(*grads, k, p["width"], p["amplitude"], p["exponents"], pes)
        return ref_channel_update(signal, k)
    if name == "difference_momentum":
        e1, e2 = ref_ewma(x, lamb["memory_days"]), ref_ewma(x, lamb["memory_days_2"])
        k = p["k_per_day"] * np.maximum(mem["memory_days"], mem["memory_days_2"])
        return ref_momentum_update(1.0 - e2 / e1, k)
    if name == "min_variance":
        precision = 1.0 / ref_variances(x, lamb["memory_days"])
        return precision / precision.sum(axis=-1, keepdims=True)
    if name == "index_market_cap":
        mcap = aux["market_cap"]
        return mcap / mcap.sum(axis=-1, keepdims=True)
    raise AssertionError(name)


def aligned_reference(name: str, x: np.ndarray, p: dict, **kw) -> np.ndarray:
    """The reference output re-indexed so that row c is what the simulator uses for chunk c."""
    ref = reference(name, x, p, **kw)
    if name == "index_market_cap":  # C rows, sliced one chunk earlier than the delta rules
        return np.concatenate([ref[:1], ref[:-1]])
    first = np.full((1, N), 1.0 / N) if RULES[name].outputs_weights else np.zeros((1, N))
    return np.concatenate([first, ref])


# ---------------------------------------------------------------------------------------------
# (a) equal to the reference


def test_every_reference_rule_is_registered():
    assert set(RULES) == {
        "momentum", "anti_momentum", "power_channel", "mean_reversion_channel",
        "triple_threat_mean_reversion_channel", "difference_momentum", "min_variance", "index_market_cap",
    }
    for rule in ALL_RULES:
        assert rule.kind == "dynamic" and rule.description and all(p.description for p in rule.params)
        assert rule.outputs_weights == (rule.blend_lamb is not None)


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_equals_reference_loop(name):
    rule = RULES[name]
    params = _params(rule)
    got = _run(rule, PRICES, params, _ctx())
    assert got.shape == (C, N)
    np.testing.assert_allclose(got, aligned_reference(name, PRICES, params), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["momentum", "anti_momentum", "power_channel", "mean_reversion_channel"])
def test_use_alt_lamb_normalises_by_the_second_memory(name):
    rule = RULES[name]
    params = _params(rule)
    got = _run(rule, PRICES, params, _ctx(alt=True))
    np.testing.assert_allclose(got, aligned_reference(name, PRICES, params, alt=True), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(got - _run(rule, PRICES, params, _ctx()))) > 1e-6  # it does change the output


@pytest.mark.parametrize("name", ["power_channel", "mean_reversion_channel", "triple_threat_mean_reversion_channel"])
def test_pre_exp_scaling_off_uses_one_half(name):
    rule = RULES[name]
    params = _params(rule)
    got = _run(rule, PRICES, params, _ctx(pes=False))
    np.testing.assert_allclose(got, aligned_reference(name, PRICES, params, pes_on=False), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (b) vectorised == scan, (c) no look-ahead, (d) sums, (e) vmap, (f) memory cap


@pytest.mark.parametrize("name", sorted(RULES))
def test_vectorized_equals_scan(name):
    rule = RULES[name]
    assert rule.supports_vectorized
    params = _params(rule)
    for alt in (False, True):
        scan = _run(rule, PRICES, params, _ctx("scan", alt))
        vec = _run(rule, PRICES, params, _ctx("vectorized", alt))
        np.testing.assert_allclose(vec, scan, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", ["scan", "vectorized"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_no_look_ahead(name, method):
    rule = RULES[name]
    params = _params(rule)
    ctx = _ctx(method)
    base = _run(rule, PRICES, params, ctx)
    rng = np.random.default_rng(7)
    for cut in (0, 57, 150):
        shock = np.exp(rng.normal(0, 0.2, (C - cut - 1, N)))
        prices = PRICES.copy()
        prices[cut + 1 :] *= shock
        aux = {"market_cap": AUX["market_cap"].copy()}
        aux["market_cap"][cut + 1 :] *= shock[:, ::-1]
        moved = _run(rule, prices, params, ctx, aux)
        np.testing.assert_array_equal(moved[: cut + 1], base[: cut + 1])
        if rule.required_aux or cut + 2 < C:
            assert not np.array_equal(moved, base)


@pytest.mark.parametrize("name", sorted(RULES))
def test_output_sums(name):
    rule = RULES[name]
    out = _run(rule, PRICES, _params(rule), _ctx())
    assert np.isfinite(out).all()
    if rule.outputs_weights:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert (out > 0).all()
    else:
        scale = 1.0 + np.abs(out).max(axis=1)
        assert (np.abs(out.sum(axis=1)) <= 1e-12 * scale).all()
        np.testing.assert_array_equal(out[0], 0.0)  # before any price change nothing moves


@pytest.mark.parametrize("name", sorted(RULES))
def test_vmap_over_parameter_sets_equals_separate_calls(name):
    rule = RULES[name]
    sets = [_params(rule, s) for s in (0.7, 1.0, 1.6)]
    batched = {k: jnp.stack([s[k] for s in sets]) for k in sets[0]}
    x = jnp.asarray(PRICES)
    aux = {k: jnp.asarray(AUX[k]) for k in rule.required_aux}
    for method in ("scan", "vectorized"):
        ctx = _ctx(method)
        out = jax.jit(jax.vmap(lambda p, ctx=ctx: rule.deltas(x, p, ctx, aux)))(batched)
        for i, s in enumerate(sets):
            single = _run(rule, PRICES, s, ctx)
            np.testing.assert_allclose(np.asarray(out[i]), single, rtol=0, atol=1e-13 * np.abs(single).max())
        if rule.blend_lamb is not None:
            blends = jax.vmap(lambda p, ctx=ctx: rule.blend_lamb(p, ctx))(batched)
            for i, s in enumerate(sets):
                np.testing.assert_allclose(np.asarray(blends[i]), np.asarray(rule.blend_lamb(s, ctx)), rtol=1e-15)


@pytest.mark.parametrize("name", sorted(RULES))
def test_memory_above_the_cap_behaves_as_the_cap(name):
    rule = RULES[name]
    cap = 20.0
    ctx = _ctx(max_memory=cap)
    at_cap, above = _params(rule), _params(rule)
    for m in MEMORY_PARAMS:
        if m in at_cap:
            at_cap[m] = jnp.full(N, cap)
            above[m] = jnp.asarray([cap * 1.5, cap * 3, cap * 10])
    np.testing.assert_array_equal(_run(rule, PRICES, above, ctx), _run(rule, PRICES, at_cap, ctx))
    if rule.blend_lamb is not None:
        np.testing.assert_array_equal(np.asarray(rule.blend_lamb(above, ctx)), np.asarray(rule.blend_lamb(at_cap, ctx)))
        np.testing.assert_allclose(np.asarray(rule.blend_lamb(above, ctx)), _lamb(cap), rtol=1e-15)
    # and the capped run is the reference with max_memory_days = cap
    np.testing.assert_allclose(
        _run(rule, PRICES, above, ctx), aligned_reference(name, PRICES, above, max_memory=cap), rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# target rules' blend, parameters


def test_blend_lambdas():
    ctx = _ctx()
    mv = RULES["min_variance"]
    np.testing.assert_allclose(np.asarray(mv.blend_lamb(_params(mv), ctx)), _lamb(PARAMS["memory_days_2"]), rtol=1e-15)
    idx = RULES["index_market_cap"]
    assert idx.required_aux == ("market_cap",)
    np.testing.assert_allclose(np.asarray(idx.blend_lamb(_params(idx), ctx)), _lamb(PARAMS["memory_days"]), rtol=1e-15)


def test_initial_values_follow_the_run_spec():
    spec = PoolSpec(
        rule="mean_reversion_channel", initial_memory_length=12.0, initial_memory_length_delta=3.0,
        initial_k_per_day=15.0, initial_log_amplitude=1.0, initial_raw_width=-1.0, initial_raw_exponents=1.0,
        initial_pre_exp_scaling=0.25,
    )
    expected = {
        "memory_days": 12.0, "memory_days_2": 15.0, "k_per_day": 15.0, "amplitude": 24.0, "width": 0.5,
        "exponents": (1 + 5**0.5) / 2, "pre_exp_scaling": 0.25, "memory_days_trend": 12.0,
        "memory_days_envelope": 12.0,
    }
    for rule in ALL_RULES:
        for p in rule.params:
            want = expected[p.name]
            if rule.name == "triple_threat_mean_reversion_channel" and p.name == "memory_days_2":
                want = 12.0  # the reference starts the triple threat's EWMA memory at initial_memory_length
            assert p.initial_value(spec) == pytest.approx(want, rel=1e-12), (rule.name, p.name)
            # the training transform round-trips at the initial value
            value = jnp.asarray(p.initial_value(spec))
            back = p.from_unconstrained(p.to_unconstrained(value, CP), CP)
            assert float(back) == pytest.approx(float(value), rel=1e-9), (rule.name, p.name)
    assert RULES["min_variance"].param("memory_days_1").name == "memory_days"
    assert RULES["momentum"].param("memory_length").name == "memory_days"


def test_parameter_gradients_are_finite_and_agree_between_methods():
    """Gradient training differentiates through the rules: no NaN (e.g. |g|^e at g = 0 with e < 1),
    and both estimator paths give the same derivative."""
    x = jnp.asarray(PRICES)
    for name in ("mean_reversion_channel", "min_variance", "difference_momentum"):
        rule = RULES[name]
        grads = {}
        for method in ("scan", "vectorized"):
            ctx = _ctx(method)

            def loss(p, ctx=ctx, rule=rule):
                return jnp.sum(jnp.tanh(rule.deltas(x, p, ctx, {})[1:]) * jnp.linspace(-1.0, 1.0, C - 1)[:, None])

            grads[method] = jax.jit(jax.grad(loss))(_params(rule))
            for k, g in grads[method].items():
                assert np.isfinite(np.asarray(g)).all(), (name, method, k)
        for k in grads["scan"]:
            np.testing.assert_allclose(np.asarray(grads["vectorized"][k]), np.asarray(grads["scan"][k]), rtol=1e-7,
                                       atol=1e-9)

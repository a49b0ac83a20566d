/* The G3M fee path on the CPU as a plain loop, one parameter set at a time, minute by minute; an XLA FFI handler.
 *
 * Why: XLA:CPU runs the fee scan (g3m_fees._engine) as dozens of small kernels per minute and cannot skip the
 * work of a minute without a trade for one set of a vmapped batch; here each set's minutes run in registers,
 * and a minute whose pairs all lie inside their no-trade band (most minutes at a 0.3 % fee) costs a few
 * comparisons. The arithmetic is the GPU kernel's (g3m_fee_kernel._weight_terms, _arbitrage) and the scan's,
 * in the same order of operations: thresholds (g3m_fee_steps._thresholds), pair candidates, the most
 * profitable valid one (exact ties summed), acceptance, fee income, noise traders. Compiled on first use by
 * g3m_fee_native.py against jaxlib's FFI headers (no -ffast-math: IEEE semantics; libm's log and expm1, small
 * exponents by expm1_small); XLA calls it with its own buffers (no copies, no Python on the way) and it splits the
 * sets over threads.
 */
#include <cmath>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using std::isnan;

#define MAX_N 8
#define MAX_PAIRS (MAX_N * (MAX_N - 1) / 2)

typedef struct {
    double fees, gas, arb_fees, noise, tolerance;
    int64_t n, weight_arb;
} costs_t;

/* the weight row's terms; a pair's threshold is computed when an arbitrage first compares against it */
typedef struct {
    double lw[MAX_N];
    double s[MAX_PAIRS];   /* the second token's share of each pair */
    double w_sum[MAX_PAIRS];
    double z[2][MAX_PAIRS];  /* thresholds: [0] forward (first token in), [1] backward; NAN until computed */
    double below[MAX_PAIRS];  /* a z under this is under both thresholds (see weight_terms); -inf: no bound */
} terms_t;

/* what g3m_fee_steps._thresholds computes from gamma and the tolerance alone */
typedef struct {
    double gamma, inv_gamma, log_gamma, log1p_tol, log1p_gamma, a1, a2, b2, a3, b3;
    int bounded;  /* whether weight_terms may bound the thresholds from below (fees <= 0.5) */
} consts_t;

static void make_consts(double fees, double tolerance, consts_t *k) {
    double gamma = 1.0 - fees;
    double c = 1.0 / gamma;
    k->gamma = gamma;
    k->inv_gamma = 1.0 / gamma;
    k->log_gamma = log(gamma);
    k->log1p_tol = log1p(-tolerance);
    k->log1p_gamma = log1p(-gamma);
    k->a1 = c - gamma;
    k->a2 = 0.5 * c * (1.0 - c);
    k->b2 = 0.5 * gamma * (1.0 - gamma);
    k->a3 = c * (1.0 - c) * (1.0 - 2.0 * c) / 6.0;
    k->b3 = gamma * (1.0 - gamma) * (1.0 - 2.0 * gamma) / 6.0;
    k->bounded = fees <= 0.5;
}

/* expm1 on the trade's critical path: a trade's exponents are s z and s z - z with |z| mostly under 1e-2, and libm's
 * expm1 (~40 cycles of latency) is a link of the chain from one minute's reserves to the next. For |x| < 2^-7:
 * x + x^2 P(x), P the Taylor series 1/2! .. 1/7! (truncation < 2^-60 relative), by Estrin's scheme (short
 * latency); within 0.51 ulp of the exact value on 3e7 samples (libm's: 0.50), and bit for bit libm's on the demo
 * pool's 3.1e6 set-minutes. Elsewhere libm. ~8 % of a pass. */
static inline double expm1_small(double x) {
    if (!(fabs(x) < 0.0078125)) return expm1(x);
    double x2 = x * x;
    double p01 = 0.5 + x * (1.0 / 6.0);
    double p23 = 1.0 / 24.0 + x * (1.0 / 120.0);
    double p45 = 1.0 / 720.0 + x * (1.0 / 5040.0);
    return x + x2 * (p01 + x2 * (p23 + x2 * p45));
}

/* g3m_fee_steps._thresholds for one outgoing share s */
static double threshold(double s, double w_sum, const consts_t *k) {
    double target = k->log1p_tol / w_sum;
    double q = 1.0 - s;
    double qs = q * s;
    double h1 = qs * k->a1;
    double h2 = qs * (k->a2 * s + k->b2 * q);
    double h3 = qs * (k->a3 * s * s - k->b3 * q * q);
    double h1_safe = h1 > 0.0 ? h1 : 1.0;
    double z = target / h1_safe;
    for (int it = 0; it < 2; it++)
        z = z - (((h3 * z + h2) * z + h1) * z - target) / ((3.0 * h3 * z + 2.0 * h2) * z + h1_safe);
    double lo = 0.5 * k->log1p_gamma / s;
    z = z < lo ? lo : z;  /* jnp.clip(z, lo, 0.0) */
    z = z > 0.0 ? 0.0 : z;
    return h1 > 0.0 ? z : -INFINITY;
}

/* A lower bound on a pair's two thresholds, so that the usual minute (every pair's z far below its band's edge)
 * needs no Newton solve. Both directions share h1 = s q a1; the solve starts at z0 = target / h1 and each of its two
 * steps moves z by at most |z0| (|h2| + |h3| |z0|) / (h1 - 2 |h2| |z0| - 3 |h3| z0^2), relative to |z0|; for
 * fees <= 0.5, |h2| / h1 and |h3| / h1 stay below 2, so with |z0| <= 1e-3 the solve ends within 1 % of z0 and the
 * clip to [lo, 0] only raises it: both thresholds are >= 2 z0. Outside those conditions: no bound (-inf). */
static double threshold_bound(double s, double w_sum, const consts_t *k) {
    double h1 = s * (1.0 - s) * k->a1;
    if (!k->bounded || !(h1 > 0.0)) return -INFINITY;
    double z0 = k->log1p_tol / (w_sum * h1);
    return z0 >= -1e-3 ? 2.0 * z0 : -INFINITY;
}

/* The per-set functions are templates on the token count N (2..MAX_N, one instance each): the inner loops over
 * tokens and pairs unroll and their arrays stay in registers (~10 % of a 3-token pass). */
template <int64_t n>
static void weight_terms(const double *w, const consts_t *c, terms_t *out) {
    for (int64_t k = 0; k < n; k++) out->lw[k] = log(w[k]);
    int m = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++, m++) {
            double w_sum = w[i] + w[j];
            out->w_sum[m] = w_sum;
            out->s[m] = w[j] / w_sum;
            out->z[0][m] = out->z[1][m] = NAN;
            out->below[m] = threshold_bound(out->s[m], w_sum, c);
        }
}

static double pair_threshold(terms_t *t, int m, int fwd, const consts_t *k) {
    double *z = &t->z[fwd ? 0 : 1][m];
    if (isnan(*z)) *z = threshold(fwd ? t->s[m] : 1.0 - t->s[m], t->w_sum[m], k);
    return *z;
}

/* One arbitrage at the weights of `t`: updates r and lr when accepted; adds its income and volume. */
template <int64_t n>
static void arbitrage(double *r, double *lr, terms_t *t, const double *p, const double *lp, const costs_t *c,
                      const consts_t *k, double *income_out, double *volume_out) {
    double inv_gamma = k->inv_gamma, log_gamma = k->log_gamma;
    double u[MAX_N];
    for (int64_t k = 0; k < n; k++) u[k] = (t->lw[k] - lp[k]) - lr[k];
    double d1[MAX_PAIRS], d2[MAX_PAIRS], profit[MAX_PAIRS];
    int valid[MAX_PAIRS], any = 0, m = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++, m++) {
            double d = u[i] - u[j];
            int fwd = d > 0.0;
            double z = log_gamma + fabs(d);
            /* thresholds are <= 0: z >= 0 passes, z under the bound fails, only the rest needs the solve */
            valid[m] = z >= 0.0 || (z >= t->below[m] && z >= pair_threshold(t, m, fwd, k));
            profit[m] = 0.0;
            if (!valid[m]) continue;
            any = 1;
            double s = fwd ? t->s[m] : 1.0 - t->s[m];
            double e_in = expm1_small(s * z);
            double e_out = expm1_small(s * z - z);
            double x_in = ((fwd ? r[i] : r[j]) * inv_gamma) * e_in;
            double x_out = (fwd ? r[j] : r[i]) * e_out;
            profit[m] = -((fwd ? p[i] : p[j]) * x_in + (fwd ? p[j] : p[i]) * x_out);
            d1[m] = fwd ? x_in : x_out;
            d2[m] = fwd ? x_out : x_in;
        }
    /* no valid pair: no trade, and an empty trade changes nothing whether accepted or not */
    if (!any) return;
    int n_pairs = m;
    double by_first[MAX_N], by_second[MAX_N];
    for (int64_t k = 0; k < n; k++) by_first[k] = by_second[k] = 0.0;
    m = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++, m++) {
            if (!valid[m]) continue;
            int take = 1;
            for (int o = 0; o < n_pairs; o++) take = take && (profit[m] >= profit[o]);
            if (!take) continue;
            by_first[i] = by_first[i] + d1[m];
            by_second[j] = by_second[j] + d2[m];
        }
    double delta[MAX_N], flow[MAX_N], after[MAX_N];
    double abs_flow = 0.0, inflow = 0.0, total = 0.0;
    for (int64_t k = 0; k < n; k++) {
        delta[k] = by_first[k] + by_second[k];
        flow[k] = delta[k] * p[k];
    }
    /* left-to-right sums, as fused_ops._total */
    abs_flow = fabs(flow[0]);
    inflow = flow[0] > 0.0 ? flow[0] : 0.0;
    total = flow[0];
    for (int64_t k = 1; k < n; k++) {
        abs_flow = abs_flow + fabs(flow[k]);
        inflow = inflow + (flow[k] > 0.0 ? flow[k] : 0.0);
        total = total + flow[k];
    }
    double net = -total;
    int costs = !(c->gas == 0.0 && c->arb_fees == 0.0);
    int accept = costs ? (net - c->gas >= 0.5 * c->arb_fees * abs_flow) : (net >= 0.0);
    if (!accept) return;
    double income = c->fees * inflow;
    double volume = abs_flow;
    for (int64_t k = 0; k < n; k++) after[k] = r[k] + delta[k];
    if (c->noise != 0.0) {
        double noise_income = c->noise * income;
        double value = after[0] * p[0];
        for (int64_t k = 1; k < n; k++) value = value + after[k] * p[k];
        for (int64_t k = 0; k < n; k++) after[k] = after[k] + (after[k] * noise_income) / value;
        income = income + noise_income;
        volume = volume * (1.0 + c->noise);
    }
    for (int64_t k = 0; k < n; k++) {
        /* a token the trade did not touch (and no noise income) keeps its reserve bit for bit, so its log too */
        if (after[k] != r[k]) lr[k] = log(after[k]);
        r[k] = after[k];
    }
    *income_out = income + *income_out;
    *volume_out = volume + *volume_out;
}

/* Sets lo..hi-1 of S. prices and log prices [T, n] shared by every set (price_stride 0) or [S, T, n];
 * weights [S, T, n]; r0 [S, n]. Out, with K = (T - 1) / keep + 1 rows: reserves [S, K, n] at minutes 0, keep,
 * 2 keep, ...; with `flows`, fee revenue and traded value [S, K], row 0 minute 0's and row j the sum over minutes
 * (j - 1) keep + 1 .. j keep (a data step's minutes; keep 1: every minute as it is); without, nothing (a pass
 * that reads only the reserves writes a third of the memory). */
template <int64_t n>
static void fee_path_sets_n(const double *prices, const double *log_prices, int64_t price_stride, const double *weights,
                 const double *r0, int64_t lo, int64_t hi, int64_t n_steps, int64_t keep, bool flows, const costs_t *c,
                 double *r_out, double *f_out, double *v_out) {
    int64_t rows = (n_steps - 1) / keep + 1;
    consts_t k;
    make_consts(c->fees, c->tolerance, &k);
    for (int64_t set = lo; set < hi; set++) {
        const double *p_set = prices + set * price_stride, *lp_set = log_prices + set * price_stride;
        const double *w_set = weights + set * n_steps * n;
        double *r_set = r_out + set * rows * n;
        double *f_set = flows ? f_out + set * rows : nullptr, *v_set = flows ? v_out + set * rows : nullptr;
        double r[MAX_N], lr[MAX_N];
        for (int64_t k = 0; k < n; k++) {
            r[k] = r0[set * n + k];
            lr[k] = log(r[k]);
        }
        /* the previous and this minute's weight terms, swapped by pointer (copying them was ~20 % of a pass) */
        terms_t terms[2];
        terms_t *prev = &terms[0], *cur = &terms[1];
        weight_terms<n>(w_set, &k, prev);
        double step_income = 0.0, step_volume = 0.0;
        int64_t phase = 0, row = 0;
        bool fresh = true;
        for (int64_t t = 0; t < n_steps; t++) {
            const double *p = p_set + t * n, *lp = lp_set + t * n;
            double income = 0.0, volume = 0.0;
            weight_terms<n>(w_set + t * n, &k, cur);
            arbitrage<n>(r, lr, prev, p, lp, c, &k, &income, &volume);  /* at the old weights */
            if (c->weight_arb) {
                /* at the new weights; the scan adds this one's income to the first's (f2 + f) */
                double income2 = 0.0, volume2 = 0.0;
                arbitrage<n>(r, lr, cur, p, lp, c, &k, &income2, &volume2);
                income = income2 + income;
                volume = volume2 + volume;
            }
            /* minute t's row: its own (t = 0), or the running sum of its data step, written at the step's end; `phase`
             * is t % keep and `fresh` whether t starts a step (t = 0, or the previous minute ended one), kept without
             * dividing */
            step_income = fresh ? income : step_income + income;
            step_volume = fresh ? volume : step_volume + volume;
            fresh = phase == 0;
            if (phase == 0) {
                for (int64_t k = 0; k < n; k++) r_set[row * n + k] = r[k];
                if (flows) {
                    f_set[row] = step_income;
                    v_set[row] = step_volume;
                }
                row++;
            }
            phase = phase + 1 == keep ? 0 : phase + 1;
            std::swap(prev, cur);
        }
    }
}

/* fee_path_sets_n for the token count in c (checked by the handler: 2..MAX_N) */
static void fee_path_sets(const double *prices, const double *log_prices, int64_t price_stride, const double *weights,
                          const double *r0, int64_t lo, int64_t hi, int64_t n_steps, int64_t keep, bool flows,
                          const costs_t *c, double *r_out, double *f_out, double *v_out) {
    switch (c->n) {
#define FEE_PATH_N(N) \
    case N: \
        return fee_path_sets_n<N>(prices, log_prices, price_stride, weights, r0, lo, hi, n_steps, keep, flows, c, \
                                  r_out, f_out, v_out);
        FEE_PATH_N(2) FEE_PATH_N(3) FEE_PATH_N(4) FEE_PATH_N(5) FEE_PATH_N(6) FEE_PATH_N(7) FEE_PATH_N(8)
#undef FEE_PATH_N
    }
}

/* The handler: weights [..., T, n] (S sets: the product of the leading dimensions), prices and log prices [T, n] or
 * with the same leading dimensions, initial reserves [..., n]; results as the inputs' leading dimensions, with
 * (T - 1) / keep + 1 rows (see fee_path_sets_n; the flows [..., 0] when `flows` is 0). */
static ffi::Error fee_path_ffi(ffi::Buffer<ffi::F64> prices, ffi::Buffer<ffi::F64> log_prices,
                               ffi::Buffer<ffi::F64> weights, ffi::Buffer<ffi::F64> r0, double fees, double gas,
                               double arb_fees, double noise, double tolerance, int64_t weight_arb, int64_t keep,
                               int64_t flows, int64_t threads, ffi::ResultBuffer<ffi::F64> r_out,
                               ffi::ResultBuffer<ffi::F64> f_out, ffi::ResultBuffer<ffi::F64> v_out) {
    auto wd = weights.dimensions(), pd = prices.dimensions();
    if (wd.size() < 2 || pd.size() < 2)
        return ffi::Error::InvalidArgument("g3m_fee_path: weights and prices need [T, n]");
    int64_t n_steps = wd[wd.size() - 2], n = wd[wd.size() - 1];
    if (n_steps == 0 || weights.element_count() == 0) return ffi::Error::Success();  /* nothing to simulate */
    int64_t n_sets = static_cast<int64_t>(weights.element_count()) / (n_steps * n);
    int64_t price_sets = static_cast<int64_t>(prices.element_count()) / (n_steps * n);
    if (pd[pd.size() - 2] != n_steps || pd[pd.size() - 1] != n || (price_sets != 1 && price_sets != n_sets)
        || static_cast<int64_t>(r0.element_count()) != n_sets * n)
        return ffi::Error::InvalidArgument("g3m_fee_path: prices, weights and initial reserves disagree in shape");
    if (n < 2 || n > MAX_N) return ffi::Error::InvalidArgument("g3m_fee_path: 2 to 8 tokens");
    int64_t rows = keep < 1 ? 0 : (n_steps - 1) / keep + 1;
    if (keep < 1 || (n_steps - 1) % keep != 0 || static_cast<int64_t>(r_out->element_count()) != n_sets * rows * n
        || static_cast<int64_t>(f_out->element_count()) != (flows ? n_sets * rows : 0)
        || v_out->element_count() != f_out->element_count())
        return ffi::Error::InvalidArgument("g3m_fee_path: keep must divide T - 1 and size the results");
    costs_t c = {fees, gas, arb_fees, noise, tolerance, n, weight_arb};
    int64_t stride = price_sets == 1 ? 0 : n_steps * n;
    const double *p = prices.typed_data(), *lp = log_prices.typed_data(), *w = weights.typed_data();
    const double *r = r0.typed_data();
    double *ro = r_out->typed_data(), *fo = f_out->typed_data(), *vo = v_out->typed_data();
    int64_t workers = threads < 1 ? 1 : (threads > n_sets ? n_sets : threads);
    std::vector<std::thread> pool;
    for (int64_t i = 1; i < workers; i++)
        pool.emplace_back(fee_path_sets, p, lp, stride, w, r, n_sets * i / workers, n_sets * (i + 1) / workers,
                          n_steps, keep, flows != 0, &c, ro, fo, vo);
    fee_path_sets(p, lp, stride, w, r, 0, n_sets / workers, n_steps, keep, flows != 0, &c, ro, fo, vo);
    for (auto &t : pool) t.join();
    return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(G3mFeePath, fee_path_ffi,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Attr<double>("fees")
                                  .Attr<double>("gas")
                                  .Attr<double>("arb_fees")
                                  .Attr<double>("noise")
                                  .Attr<double>("tolerance")
                                  .Attr<int64_t>("weight_arb")
                                  .Attr<int64_t>("keep")
                                  .Attr<int64_t>("flows")
                                  .Attr<int64_t>("threads")
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

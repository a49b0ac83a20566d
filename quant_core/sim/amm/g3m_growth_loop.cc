/* A zero-fee G3M pool's log growth minute by minute on the CPU; an XLA FFI handler (g3m_growth_native.py).
 *
 * What: log(V_t / V_0) [T] for prices and weights [T, n], the cumulative sum of
 *     sum_j w_t-1,j log(p_t,j / p_t-1,j) - w_t,j log(w_t,j / w_t-1,j)      (g3m.g3m_minute_log_growth's terms)
 * Why: XLA:CPU calls glibc's scalar log for every float64 log and runs its cumulative sum as a log-depth pyramid;
 * here the ratio logs are a branch-free polynomial the compiler vectorises (AVX-512 / AVX2 / SSE2 clones picked at
 * load time), the sum is one running total, and a single set's minutes split over threads (each segment summed from
 * zero, then shifted by the totals before it).
 *
 * The log of a ratio a / b without dividing first: a = 2^ea ma, b = 2^eb mb (ma, mb in [1, 2)); one of them doubled
 * so that ma / mb lies in [1/sqrt 2, sqrt 2]; then log(a / b) = e ln 2 + 2 atanh(s), s = (ma - mb) / (ma + mb),
 * |s| <= 0.1716, where ma - mb is exact (Sterbenz) and 2 atanh(s) = 2 s + s R(s^2) with fdlibm's minimax R (the
 * coefficients Lg1..Lg7 of e_log.c, error < 2^-58.45). Within ~1.5 ulp of log(a / b) for every pair of positive
 * normal doubles; libm's log of the rounded ratio is off by up to half an ulp of 1 in absolute terms, which for a
 * minute's move of 1e-3 is ~1e-13 relative. Zero, negative, subnormal, infinite or NaN inputs give NaN.
 */
#include <cfloat>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#define MAX_N 8     /* tokens; g3m_growth_native.MAX_TOKENS */
#define BLOCK 512   /* minutes whose terms are computed in one vectorised pass (stays in L1 / L2) */
#define MAX_RANK 8  /* leading (set) dimensions + 2 */

static const double LG1 = 6.666666666666735130e-01, LG2 = 3.999999999940941908e-01, LG3 = 2.857142874366239149e-01,
                    LG4 = 2.222219843214978396e-01, LG5 = 1.818357216161805012e-01, LG6 = 1.531383769920937332e-01,
                    LG7 = 1.479819860511658591e-01;
static const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
static const double SQRT2 = 1.4142135623730951;

static inline double bits_to_double(uint64_t u) { return __builtin_bit_cast(double, u); }
static inline uint64_t double_to_bits(double d) { return __builtin_bit_cast(uint64_t, d); }

/* log(a / b), see the header; written without branches or int->double conversions so that GCC vectorises it */
static inline double ratio_log(double a, double b) {
    int64_t ea = (int64_t)(double_to_bits(a) >> 52) - 1023, eb = (int64_t)(double_to_bits(b) >> 52) - 1023;
    double ma = a * bits_to_double((uint64_t)(1023 - ea) << 52);  /* a / 2^ea, exact */
    double mb = b * bits_to_double((uint64_t)(1023 - eb) << 52);
    bool up = ma > SQRT2 * mb, down = ma * SQRT2 < mb;
    ma *= down ? 2.0 : 1.0;
    mb *= up ? 2.0 : 1.0;
    int64_t e = ea - eb + (up ? 1 : 0) - (down ? 1 : 0);
    /* (double)e by the 1.5 * 2^52 trick: exact for |e| < 2^51, negative e included */
    double fe = bits_to_double(0x4338000000000000ULL + (uint64_t)e) - 6755399441055744.0;
    double s = (ma - mb) / (ma + mb), z = s * s;
    double r = z * (LG1 + z * (LG2 + z * (LG3 + z * (LG4 + z * (LG5 + z * (LG6 + z * LG7))))));
    double out = fe * LN2_HI + (fe * LN2_LO + (2.0 * s + s * r));
    bool normal = (a >= DBL_MIN) & (a <= DBL_MAX) & (b >= DBL_MIN) & (b <= DBL_MAX);  /* false for NaN too */
    return normal ? out : NAN;
}

/* out[k] = w[k] log(p[k+n] / p[k]) - w[k+n] log(w[k+n] / w[k]) over `count` consecutive token-minutes */
__attribute__((noinline, target_clones("avx512f", "avx2", "default")))
static void block_terms(const double *__restrict p, const double *__restrict w, int64_t count, int64_t n,
                        double *__restrict out) {
    for (int64_t k = 0; k < count; k++)
        out[k] = w[k] * ratio_log(p[k + n], p[k]) - w[k + n] * ratio_log(w[k + n], w[k]);
}

/* g[t + 1] for t in [t0, t1): the growth since minute t0; *total: the last of them (0 for an empty segment) */
static void segment(const double *p, const double *w, int64_t t0, int64_t t1, int64_t n, double *g, double *total) {
    double terms[BLOCK * MAX_N];
    double acc = 0.0;
    for (int64_t t = t0; t < t1; t += BLOCK) {
        int64_t m = t1 - t < BLOCK ? t1 - t : BLOCK;
        block_terms(p + t * n, w + t * n, m * n, n, terms);
        for (int64_t i = 0; i < m; i++) {
            double s = terms[i * n];  /* the tokens in order, as g3m's token_sum adds them */
            for (int64_t j = 1; j < n; j++) s += terms[i * n + j];
            acc += s;
            g[t + i + 1] = acc;
        }
    }
    *total = acc;
}

/* fn(0) .. fn(tasks - 1) on the calling thread and XLA's intra-op pool (not threads of our own: on a small machine
 * they would compete with XLA's workers). Tasks are claimed from a counter; the caller waits only for tasks already
 * claimed, so a helper that starts late (or never) cannot hold it up, and finds nothing left to do. */
static void parallel_for(ffi::ThreadPool &pool, int64_t tasks, const std::function<void(int64_t)> &fn) {
    struct State {
        std::atomic<int64_t> next{0}, done{0};
        std::mutex m;
        std::condition_variable cv;
        const std::function<void(int64_t)> *fn;
        int64_t tasks;
    };
    auto st = std::make_shared<State>();
    st->fn = &fn;
    st->tasks = tasks;
    auto work = [](State &s) {
        for (int64_t i; (i = s.next.fetch_add(1)) < s.tasks;) {
            (*s.fn)(i);
            if (s.done.fetch_add(1) + 1 == s.tasks) {
                std::lock_guard<std::mutex> lock(s.m);
                s.cv.notify_all();
            }
        }
    };
    int64_t helpers = pool.num_threads() < tasks - 1 ? pool.num_threads() : tasks - 1;
    for (int64_t k = 0; k < helpers; k++) pool.Schedule([st, work] { work(*st); });
    work(*st);
    std::unique_lock<std::mutex> lock(st->m);
    st->cv.wait(lock, [&] { return st->done.load() == tasks; });
}

/* one set's g [T]; `parts` segments of its minutes in parallel (worth it from a few blocks each) */
static void one_set(const double *p, const double *w, int64_t T, int64_t n, double *g, ffi::ThreadPool *pool) {
    g[0] = 0.0;
    double total;
    int64_t parts = pool == nullptr ? 1 : pool->num_threads() + 1;
    if (parts > (T - 1) / (4 * BLOCK)) parts = (T - 1) / (4 * BLOCK);
    if (parts <= 1) {
        segment(p, w, 0, T - 1, n, g, &total);
        return;
    }
    std::vector<int64_t> cut(parts + 1);
    std::vector<double> totals(parts), offset(parts, 0.0);
    for (int64_t i = 0; i <= parts; i++) cut[i] = (T - 1) * i / parts;
    parallel_for(*pool, parts, [&](int64_t i) { segment(p, w, cut[i], cut[i + 1], n, g, &totals[i]); });
    for (int64_t i = 1; i < parts; i++) offset[i] = offset[i - 1] + totals[i - 1];
    parallel_for(*pool, parts - 1, [&](int64_t i) {  /* segment i + 1 starts from the totals before it */
        for (int64_t t = cut[i + 1] + 1; t <= cut[i + 2]; t++) g[t] += offset[i + 1];
    });
}

/* The handler: prices and weights [..., T, n] of equal rank whose leading (set) dimensions broadcast (each 1 or the
 * result's, as vmap's expand_dims passes them); growth [..., T] with the broadcast leading dimensions. One set: its
 * minutes split over XLA's intra-op threads; several: the sets over them. */
static ffi::Error growth_ffi(ffi::ThreadPool pool, ffi::Buffer<ffi::F64> prices, ffi::Buffer<ffi::F64> weights,
                             ffi::ResultBuffer<ffi::F64> out) {
    auto pd = prices.dimensions(), wd = weights.dimensions(), od = out->dimensions();
    int64_t rank = static_cast<int64_t>(wd.size());
    if (rank < 2 || rank > MAX_RANK || static_cast<int64_t>(pd.size()) != rank
        || static_cast<int64_t>(od.size()) != rank - 1)
        return ffi::Error::InvalidArgument("g3m_minute_log_growth: prices and weights need [..., T, n] of equal rank");
    int64_t T = wd[rank - 2], n = wd[rank - 1];
    if (pd[rank - 2] != T || pd[rank - 1] != n || od[rank - 2] != T)
        return ffi::Error::InvalidArgument("g3m_minute_log_growth: prices and weights disagree in T or n");
    if (n < 1 || n > MAX_N) return ffi::Error::InvalidArgument("g3m_minute_log_growth: 1 to 8 tokens");
    int64_t lead = rank - 2, n_sets = 1;
    int64_t p_stride[MAX_RANK], w_stride[MAX_RANK], o_size[MAX_RANK];
    for (int64_t d = lead - 1, ps = T * n, ws = T * n; d >= 0; d--) {  /* element strides; 0 where broadcast */
        if ((pd[d] != 1 && pd[d] != od[d]) || (wd[d] != 1 && wd[d] != od[d]))
            return ffi::Error::InvalidArgument("g3m_minute_log_growth: set dimensions do not broadcast");
        p_stride[d] = pd[d] == 1 ? 0 : ps;
        w_stride[d] = wd[d] == 1 ? 0 : ws;
        ps *= pd[d];
        ws *= wd[d];
        o_size[d] = od[d];
        n_sets *= od[d];
    }
    if (T == 0 || n_sets == 0) return ffi::Error::Success();
    const double *p = prices.typed_data(), *w = weights.typed_data();
    double *g = out->typed_data();
    auto offsets = [&](int64_t set, int64_t *po, int64_t *wo) {  /* the set's row-major index, digit by digit */
        *po = *wo = 0;
        for (int64_t d = lead - 1; d >= 0; d--) {
            int64_t i = set % o_size[d];
            set /= o_size[d];
            *po += i * p_stride[d];
            *wo += i * w_stride[d];
        }
    };
    if (n_sets == 1) {
        one_set(p, w, T, n, g, &pool);
        return ffi::Error::Success();
    }
    parallel_for(pool, n_sets, [&](int64_t s) {  /* the sets in parallel, each on one thread */
        int64_t po, wo;
        offsets(s, &po, &wo);
        one_set(p + po, w + wo, T, n, g + s * T, nullptr);
    });
    return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(G3mMinuteLogGrowth, growth_ffi,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>());

# cython: language_level=3
"""Scalar helpers shared by _batchnorm, _losses and _updates (cimported, inlined).

- deterministic reductions: `seq_sum` adds partial sums strictly in index order, and
  `lane_sum` adds an array in double with eight interleaved accumulators combined in a
  fixed tree (vectorisable, and a function of the data and its length only). A reduction
  split into fixed blocks (boundaries independent of the thread count) whose partial
  results are combined with `seq_sum` is bit-identical for any team size;
- precision-generic libm wrappers for the `floating` fused type (float -> the f-suffixed
  single-precision function, double -> the double one);
- branch-free, vectorisable exp(x) for x <= 0 and log1p(e) for e in [0, 1] (the only
  ranges the stable softmax / logistic formulas need), within 2-3 ulp of libm: GCC
  cannot vectorise calls to libm's expf/log1pf (no vector math library without
  -ffast-math), so the loss loops would otherwise run one exp at a time.

GCC note: the C block below also sets `#pragma GCC optimize ("no-trapping-math")` for the
translation units that cimport this file (fastnn's _batchnorm, _losses, _updates). With
the default -ftrapping-math GCC refuses to if-convert selects (`c ? a : b`) around
floating-point arithmetic, which keeps these loops scalar. The kernels never read the
floating-point exception flags, so the results are unchanged (the option only concerns
traps/flags; rounding and NaN/Inf semantics stay IEEE).
"""
from cython cimport floating
from libc.math cimport exp, expf, log, logf, log1p, log1pf, sqrt, sqrtf

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)
    #pragma GCC optimize ("no-trapping-math")
    #endif
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FNN_BNL_HAVE_SSE2 1
    #endif

    /* max(a[0:n]), n >= 1. A max is exact, so the lane order does not matter (NaN is
       skipped by the comparisons; the callers let NaN through their sums instead).
       GCC does not vectorise the `a > m ? a : m` reduction by itself. */
    static inline float fnn_bnl_max_f(const float *a, Py_ssize_t n) {
        Py_ssize_t i = 1;
        float m = a[0];
    #ifdef FNN_BNL_HAVE_SSE2
        if (n >= 8) {
            float t[4];
            int k;
            __m128 m0 = _mm_loadu_ps(a), m1 = _mm_loadu_ps(a + 4);
            for (i = 8; i + 8 <= n; i += 8) {
                m0 = _mm_max_ps(_mm_loadu_ps(a + i), m0);
                m1 = _mm_max_ps(_mm_loadu_ps(a + i + 4), m1);
            }
            _mm_storeu_ps(t, _mm_max_ps(m1, m0));
            m = t[0];
            for (k = 1; k < 4; k++) m = t[k] > m ? t[k] : m;
        }
    #endif
        for (; i < n; i++) m = a[i] > m ? a[i] : m;
        return m;
    }
    static inline double fnn_bnl_max_d(const double *a, Py_ssize_t n) {
        Py_ssize_t i = 1;
        double m = a[0];
    #ifdef FNN_BNL_HAVE_SSE2
        if (n >= 4) {
            double t[2];
            __m128d m0 = _mm_loadu_pd(a), m1 = _mm_loadu_pd(a + 2);
            for (i = 4; i + 4 <= n; i += 4) {
                m0 = _mm_max_pd(_mm_loadu_pd(a + i), m0);
                m1 = _mm_max_pd(_mm_loadu_pd(a + i + 2), m1);
            }
            _mm_storeu_pd(t, _mm_max_pd(m1, m0));
            m = t[1] > t[0] ? t[1] : t[0];
        }
    #endif
        for (; i < n; i++) m = a[i] > m ? a[i] : m;
        return m;
    }

    /* exp(x) for x <= 0 (NaN -> NaN, -inf -> 0). Cody-Waite reduction x = n ln2 + r,
       |r| <= ln2/2, Taylor polynomial for e^r, scale by 2^n built from its bits. Below the
       clamp n = -127 (-1023), whose bit pattern is +0.0, so the result is exactly 0
       (where libm would return a subnormal < 1.2e-38 (2.3e-308)). Max error < 2 ulp. */
    static inline float fnn_bnl_expneg_f(float x) {
        const float magic = 12582912.0f;          /* 1.5 * 2^23: round to nearest int */
        float xc = x < -88.0f ? -88.0f : x;        /* NaN passes through */
        float n = (xc * 1.44269504088896341f + magic) - magic;
        float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
        float p = 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        int32_t bits = ((int32_t)n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        return p * scale;
    }
    static inline double fnn_bnl_expneg_d(double x) {
        const double magic = 6755399441055744.0;   /* 1.5 * 2^52 */
        double xc = x < -709.0 ? -709.0 : x;
        double n = (xc * 1.4426950408889634 + magic) - magic;
        double r = (xc - n * 0.6931471803691238) - n * 1.9082149292705877e-10;
        double p = 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        int64_t bits = ((int64_t)(int32_t)n + 1023) << 52;
        double scale;
        memcpy(&scale, &bits, sizeof scale);
        return p * scale;
    }

    /* log1p(e) for e in [0, 1] (NaN -> NaN): 2 atanh(s) with s = e / (2 + e), or, above
       sqrt(2) - 1, ln 2 + 2 atanh((e - 1) / (e + 3)); |s| <= 0.1716, odd series in s.
       Full relative accuracy for tiny e (no 1 + e rounding). Max error ~3 ulp. */
    static inline float fnn_bnl_log1p01_f(float e) {
        int big = e > 0.41421356f;
        float s = (big ? e - 1.0f : e) / (big ? e + 3.0f : e + 2.0f);
        float z = s * s;
        float p = 1.0f / 11.0f;
        p = p * z + 1.0f / 9.0f;
        p = p * z + 1.0f / 7.0f;
        p = p * z + 1.0f / 5.0f;
        p = p * z + 1.0f / 3.0f;
        return (2.0f * s + 2.0f * s * (z * p)) + (big ? 0.693147180559945f : 0.0f);
    }
    static inline double fnn_bnl_log1p01_d(double e) {
        int big = e > 0.41421356237309503;
        double s = (big ? e - 1.0 : e) / (big ? e + 3.0 : e + 2.0);
        double z = s * s;
        double p = 1.0 / 23.0;
        p = p * z + 1.0 / 21.0;
        p = p * z + 1.0 / 19.0;
        p = p * z + 1.0 / 17.0;
        p = p * z + 1.0 / 15.0;
        p = p * z + 1.0 / 13.0;
        p = p * z + 1.0 / 11.0;
        p = p * z + 1.0 / 9.0;
        p = p * z + 1.0 / 7.0;
        p = p * z + 1.0 / 5.0;
        p = p * z + 1.0 / 3.0;
        return (2.0 * s + 2.0 * s * (z * p)) + (big ? 0.6931471805599453 : 0.0);
    }
    """
    float fnn_bnl_max_f(const float* a, Py_ssize_t n) noexcept nogil
    double fnn_bnl_max_d(const double* a, Py_ssize_t n) noexcept nogil
    float fnn_bnl_expneg_f(float x) noexcept nogil
    double fnn_bnl_expneg_d(double x) noexcept nogil
    float fnn_bnl_log1p01_f(float e) noexcept nogil
    double fnn_bnl_log1p01_d(double e) noexcept nogil

cdef enum:
    # elements per partial sum in the flat (elementwise) losses; a fixed constant so
    # partial-sum boundaries never depend on the thread count
    SUM_BLOCK = 4096


cdef inline Py_ssize_t nblocks(Py_ssize_t n, Py_ssize_t block) noexcept nogil:
    """Number of blocks of `block` elements covering n (n >= 0, block > 0)."""
    return (n + block - 1) // block


cdef inline double seq_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """a[0] + a[1] + ... + a[n-1], added strictly in index order."""
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i]
    return s


cdef inline double lane_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """Sum of a[0:n] in double: eight interleaved accumulators (acc[k] takes a[8i + k]),
    combined as ((0+1)+(2+3))+((4+5)+(6+7)), then the < 8 leftover elements in order.
    The association depends on n only, and the loop vectorises."""
    cdef double acc[8]
    cdef Py_ssize_t i, k, m = (n // 8) * 8
    cdef double s
    for k in range(8):
        acc[k] = 0.0
    i = 0
    while i < m:
        for k in range(8):
            acc[k] += <double>a[i + k]
        i += 8
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for i in range(m, n):
        s += <double>a[i]
    return s


cdef inline floating vmax(const floating* a, Py_ssize_t n) noexcept nogil:
    """max(a[0:n]) for n >= 1 (SIMD when available; NaN entries are skipped)."""
    if floating is float:
        return fnn_bnl_max_f(a, n)
    else:
        return fnn_bnl_max_d(a, n)


cdef inline floating f_exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating f_expneg(floating x) noexcept nogil:
    """exp(x) for x <= 0, vectorisable (see the C block)."""
    if floating is float:
        return fnn_bnl_expneg_f(x)
    else:
        return fnn_bnl_expneg_d(x)


cdef inline floating f_log1p01(floating e) noexcept nogil:
    """log1p(e) for e in [0, 1], vectorisable (see the C block)."""
    if floating is float:
        return fnn_bnl_log1p01_f(e)
    else:
        return fnn_bnl_log1p01_d(e)


cdef inline floating f_log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating f_log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating f_sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating sigmoid_from_exp(floating x, floating e) noexcept nogil:
    """Logistic sigmoid of x given e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) otherwise
    (one division, numerator selected). NaN in x gives NaN (e is NaN)."""
    cdef floating one = 1
    return (one if x >= 0 else e) / (one + e)

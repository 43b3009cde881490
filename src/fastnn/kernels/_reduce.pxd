# cython: language_level=3
"""Deterministic reductions shared by the compiled kernels (cimported, inlined).

`seq_sum` adds partial sums strictly in index order, and `lane_sum` adds an array in
double with interleaved accumulators combined in a fixed tree (vectorisable, and a
function of the data and its length only). A reduction split into fixed blocks
(boundaries independent of the thread count) whose partial results are combined with
`seq_sum` is bit-identical for any team size. `vmax` is an exact maximum (any order).
"""
from cython cimport floating

cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FASTNN_HAVE_SSE2 1
    #endif

    /* max(a[0:n]), n >= 1. A max is exact, so the lane order does not matter (NaN is
       skipped by the comparisons; the callers let NaN through their sums instead).
       GCC does not vectorise the `a > m ? a : m` reduction by itself. */
    static inline float fastnn_vmaxf(const float *a, Py_ssize_t n) {
        Py_ssize_t i = 1;
        float m = a[0];
    #ifdef FASTNN_HAVE_SSE2
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
    static inline double fastnn_vmaxd(const double *a, Py_ssize_t n) {
        Py_ssize_t i = 1;
        double m = a[0];
    #ifdef FASTNN_HAVE_SSE2
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

    /* Sum of a[0:n] in double. Thirty-two interleaved accumulators (acc[k] takes
       a[32i + k]: four independent vector chains, so the adds' latency does not bound the
       loop) are folded into eight, acc[k] = (acc[k] + acc[k+8]) + (acc[k+16] +
       acc[k+24]); those take the next whole eights, then combine as
       ((0+1)+(2+3))+((4+5)+(6+7)), and the < 8 leftover elements follow in order. The
       association depends on n only (below 32 elements it is the eight-lane sum alone).
       Always inlined, so it vectorises at the width of the SIMD clone that calls it. */
    #if defined(__GNUC__)
    #define FASTNN_ALWAYS_INLINE static inline __attribute__((always_inline))
    #else
    #define FASTNN_ALWAYS_INLINE static inline
    #endif
    #define FASTNN_LANE_SUM(name, T)                                                    \
    FASTNN_ALWAYS_INLINE double name(const T *a, Py_ssize_t n) {                        \
        double acc[32], s;                                                              \
        Py_ssize_t i = 0;                                                               \
        int k;                                                                          \
        for (k = 0; k < 8; k++) acc[k] = 0.0;                                           \
        if (n >= 32) {                                                                  \
            for (k = 8; k < 32; k++) acc[k] = 0.0;                                      \
            for (; i + 32 <= n; i += 32)                                                \
                for (k = 0; k < 32; k++) acc[k] += (double)a[i + k];                    \
            for (k = 0; k < 8; k++)                                                     \
                acc[k] = (acc[k] + acc[k + 8]) + (acc[k + 16] + acc[k + 24]);           \
        }                                                                               \
        for (; i + 8 <= n; i += 8)                                                      \
            for (k = 0; k < 8; k++) acc[k] += (double)a[i + k];                         \
        s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])); \
        for (; i < n; i++) s += (double)a[i];                                           \
        return s;                                                                       \
    }
    FASTNN_LANE_SUM(fastnn_lane_sumf, float)
    FASTNN_LANE_SUM(fastnn_lane_sumd, double)
    """
    float fastnn_vmaxf(const float* a, Py_ssize_t n) noexcept nogil
    double fastnn_vmaxd(const double* a, Py_ssize_t n) noexcept nogil
    double fastnn_lane_sumf(const float* a, Py_ssize_t n) noexcept nogil
    double fastnn_lane_sumd(const double* a, Py_ssize_t n) noexcept nogil


cdef inline double seq_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """a[0] + a[1] + ... + a[n-1], added strictly in index order."""
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i]
    return s


cdef inline double lane_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """Sum of a[0:n] in double, in an order depending on n only (see fastnn_lane_sum)."""
    if floating is float:
        return fastnn_lane_sumf(a, n)
    return fastnn_lane_sumd(a, n)


cdef inline floating vmax(const floating* a, Py_ssize_t n) noexcept nogil:
    """max(a[0:n]) for n >= 1 (SIMD when available; NaN entries are skipped)."""
    if floating is float:
        return fastnn_vmaxf(a, n)
    else:
        return fastnn_vmaxd(a, n)

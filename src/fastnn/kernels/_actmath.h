/* Branch-free float32 exp and expm1 that gcc/clang vectorize at -O2/-O3 (SSE2 and up)
 * without -ffast-math. Declared in _actfuncs.pxd; used by the float32 activations.
 *
 * Method: x = n ln2 + r with n = round(x / ln2) (magic-constant rounding, no libm call)
 * and |r| <= ~ln2/2 (two-part ln2: the n * LN2_HI product is exact); then
 *     e^r - 1 = q(r) = r + r^2 P(r),  P = Taylor series of (e^r - 1 - r) / r^2 to r^5
 * (truncation error < 2e-8 relative on |r| <= 0.35, below half an ulp of float32), and
 *     exp(x)   = 2^n (1 + q)
 *     expm1(x) = 2^n q + (2^n - 1)         (exactly q when n == 0: accurate near 0).
 * 2^n is built in the exponent bits. Max error measured: ~1 ulp (see the tests).
 * NaN propagates (every comparison with NaN is false, so the clamps leave it in place).
 * Every blend is a fastnn_self/fastnn_seld bit select (see there why not ?:).
 */
#ifndef FASTNN_ACTMATH_H
#define FASTNN_ACTMATH_H

#include <math.h>
#include <stdint.h>

/* FASTNN_SIMD_CLONES_VOID: the return type of the activation span loops. With GCC on
 * x86-64 Linux/glibc, the span functions are compiled three times -- AVX-512F, AVX2 and
 * the baseline (SSE2) -- and the loader picks the widest the CPU supports (function
 * multiversioning, an ifunc resolved once at load). The build's -ffp-contract=off keeps
 * every clone free of fused multiply-adds (AVX-512F implies FMA), so all clones return
 * the same bits as the baseline: results do not depend on the machine's vector width.
 * (Not the optimize("fp-contract=off") attribute: with it GCC 12 vectorised none of the
 * AVX clones.) Off when the build already targets AVX2 (-march=native), with other
 * compilers, or with -DFASTNN_NO_SIMD_CLONES. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) \
    && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) \
    && !defined(__AVX2__) && !defined(FASTNN_NO_SIMD_CLONES) && __GNUC__ >= 8
#define FASTNN_SIMD_CLONES_VOID \
    __attribute__((target_clones("avx512f", "avx2", "default"))) void
#else
#define FASTNN_SIMD_CLONES_VOID void
#endif

/* activation constants (the double values of fastnn.kernels.ref.activations) */
#define FASTNN_SQRT_2_OVER_PI 0.7978845608028654
#define FASTNN_INV_SQRT_2 0.7071067811865476
#define FASTNN_INV_SQRT_2PI 0.3989422804014327
#define FASTNN_GELU_C 0.044715

#define FASTNN_LOG2E 1.44269504088896341f
#define FASTNN_LN2_HI 0.693145751953125f      /* 0x3f317200: n * LN2_HI exact, |n| < 512 */
#define FASTNN_LN2_LO 1.42860682030941723e-6f
#define FASTNN_ROUND_MAGIC 12582912.0f        /* 1.5 * 2^23: t = v + M rounds v to an int */

typedef union { float f; uint32_t u; } fastnn_f32bits;
typedef union { double f; uint64_t u; } fastnn_f64bits;

/* Branch-free select, c ? a : b, as a bit blend under a mask. Write blends this way, not
   with ?: -- gcc keeps `c ? a : b` as a branch, sinks the computation of an operand into
   it or threads jumps through consecutive blends, and a floating-point operation that
   "may trap" (-ftrapping-math, the default) left inside a branch blocks if-conversion:
   the loop is then not vectorized. Here both operands are always evaluated. */
static inline float fastnn_self(int c, float a, float b)
{
    fastnn_f32bits x, y, r;
    uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    x.f = a;
    y.f = b;
    r.u = (x.u & m) | (y.u & ~m);
    return r.f;
}

static inline double fastnn_seld(int c, double a, double b)
{
    fastnn_f64bits x, y, r;
    uint64_t m = (uint64_t)0 - (uint64_t)(c != 0);
    x.f = a;
    y.f = b;
    r.u = (x.u & m) | (y.u & ~m);
    return r.f;
}

/* 2^n for an integer -126 <= n <= 127, built in the exponent field. */
static inline float fastnn_pow2i(uint32_t n)
{
    fastnn_f32bits b;
    b.u = (n + 127u) << 23;
    return b.f;
}

/* Range reduction shared by exp and expm1: returns q = e^r - 1, stores n (as uint32,
   two's complement) in *n. xc must be within +-150 ln2 (or NaN). */
static inline float fastnn_expq(float xc, uint32_t *n)
{
    fastnn_f32bits t;
    t.f = xc * FASTNN_LOG2E + FASTNN_ROUND_MAGIC;
    float nf = t.f - FASTNN_ROUND_MAGIC;
    *n = t.u - 0x4B400000u;              /* bits of M + n minus bits of M */
    float r = xc - nf * FASTNN_LN2_HI;
    r = r - nf * FASTNN_LN2_LO;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    return r + (r * r) * p;
}

/* exp(x) for float32, any x: 0 below ln(2^-150) (gradual underflow in between),
   +inf above ln(FLT_MAX), NaN -> NaN. */
static inline float fastnn_expf(float x)
{
    float xc = fastnn_self(x < -104.0f, -104.0f, x);
    xc = fastnn_self(xc > 88.72283f, 88.72283f, xc);
    uint32_t n;                          /* n in [-150, 128] */
    float q = fastnn_expq(xc, &n);
    /* scale by 2^n1 * 2^n2 (n1 = floor(n / 2)): both factors are normal floats, so the
       only rounding after 1 + q is the final one (gradual underflow below 2^-126) */
    uint32_t n1 = (uint32_t)((int32_t)n >> 1);
    float res = ((1.0f + q) * fastnn_pow2i(n1)) * fastnn_pow2i(n - n1);
    return fastnn_self(x > 88.72283f, (float)INFINITY, res);
}

/* expm1(x) for float32, x <= 88 (callers pass x <= 0; larger x returns +inf):
   -1 below -87 (exactly what expm1 rounds to there), NaN -> NaN. */
static inline float fastnn_expm1f(float x)
{
    float xc = fastnn_self(x < -87.0f, -87.0f, x);
    xc = fastnn_self(xc > 88.0f, 88.0f, xc);
    uint32_t n;
    float q = fastnn_expq(xc, &n);
    float s = fastnn_pow2i(n);
    float res = s * q + (s - 1.0f);
    return fastnn_self(x > 88.0f, (float)INFINITY, res);
}

#endif /* FASTNN_ACTMATH_H */

/* What every compiled kernel shares, in C: the OpenMP runtime (or serial stubs), the
 * SIMD-clone return type, branch-free selects, and the one fast exp family.
 * Declared for Cython in _common.pxd.
 *
 * Fast exp (float32 exp/expm1/tanh; exp of x <= 0 in both precisions for the losses):
 * x = n ln2 + r with n = round(x / ln2)
 * (magic-constant rounding, no libm call) and |r| <= ~ln2/2 (two-part ln2: the n * LN2_HI
 * product is exact); then
 *     e^r - 1 = q(r) = r + r^2 P(r),  P = Taylor series of (e^r - 1 - r) / r^2
 * (to r^7 in float32, r^13 in float64: truncation below half an ulp), and
 *     exp(x)   = 2^n (1 + q)
 *     expm1(x) = 2^n q + (2^n - 1)         (exactly q when n == 0: accurate near 0).
 * 2^n is built in the exponent bits. Every function is branch-free, so gcc vectorises the
 * loops that call it without -ffast-math (libm calls stay scalar). Errors: ~1 ulp
 * (float32), ~2 ulp (float64); NaN propagates (comparisons with NaN are false, so the
 * clamps leave it in place).
 */
#ifndef FASTNN_COMMON_H
#define FASTNN_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- OpenMP runtime */
#ifdef _OPENMP
#include <omp.h>
#define FASTNN_HAVE_OPENMP 1
#else
#define FASTNN_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
#endif

/* ----------------------------------------------------------------- SIMD clones
 * FASTNN_SIMD_CLONES_VOID: the return type of the elementwise loops. With GCC on x86-64
 * Linux/glibc such a function is compiled three times -- AVX-512F, AVX2 and the baseline
 * (SSE2) -- and the loader picks the widest the CPU supports (function multiversioning,
 * an ifunc resolved once at load). The build's -ffp-contract=off keeps every clone free of
 * fused multiply-adds (AVX-512F implies FMA), so all clones return the same bits:
 * results do not depend on the machine's vector width. Off when the build already
 * targets AVX2 (-march=native), with other compilers, or with -DFASTNN_NO_SIMD_CLONES.
 * FASTNN_SIMD_CLONES_FLAT_VOID also inlines every call inside (flatten): for clones built
 * from helpers that GCC would otherwise leave as calls compiled for the baseline (the
 * losses' blocks and their lane sums). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) \
    && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) \
    && !defined(__AVX2__) && !defined(FASTNN_NO_SIMD_CLONES) && __GNUC__ >= 8
#define FASTNN_SIMD_CLONES_VOID \
    __attribute__((target_clones("avx512f", "avx2", "default"))) void
#define FASTNN_SIMD_CLONES_FLAT_VOID \
    __attribute__((target_clones("avx512f", "avx2", "default"), flatten)) void
#else
#define FASTNN_SIMD_CLONES_VOID void
#define FASTNN_SIMD_CLONES_FLAT_VOID void
#endif

/* ------------------------------------------------------------ branch-free select
 * c ? a : b as a bit blend under a mask; both operands are always evaluated. Loops write
 * their blends this way, not with ?: -- gcc may keep `c ? a : b` as a branch, sink an
 * operand's computation into it or thread jumps through consecutive blends, and then the
 * loop is not vectorised (with the default -ftrapping-math, any floating-point operation
 * left inside a branch blocks if-conversion; the build passes -fno-trapping-math, but
 * the blend must not depend on a flag). */
typedef union { float f; uint32_t u; } fastnn_f32bits;
typedef union { double f; uint64_t u; } fastnn_f64bits;

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

/* Clamps, NaN kept (every comparison with NaN is false, so NaN falls through): with
   -fno-trapping-math (__NO_TRAPPING_MATH__) gcc compiles `x < lo ? lo : x` to one min /
   max instruction; otherwise it is a bit blend. */
static inline float fastnn_atleastf(float x, float lo)
{
#ifdef __NO_TRAPPING_MATH__
    return x < lo ? lo : x;
#else
    return fastnn_self(x < lo, lo, x);
#endif
}

static inline float fastnn_atmostf(float x, float hi)
{
#ifdef __NO_TRAPPING_MATH__
    return x > hi ? hi : x;
#else
    return fastnn_self(x > hi, hi, x);
#endif
}

static inline double fastnn_atleast(double x, double lo)
{
#ifdef __NO_TRAPPING_MATH__
    return x < lo ? lo : x;
#else
    return fastnn_seld(x < lo, lo, x);
#endif
}

/* ------------------------------------------------------------------ float32 exp */
#define FASTNN_LOG2E_F 1.44269504088896341f
#define FASTNN_LN2_HI_F 0.693145751953125f      /* 0x3f317200: n * LN2_HI exact, |n| < 512 */
#define FASTNN_LN2_LO_F 1.42860682030941723e-6f
#define FASTNN_ROUND_F 12582912.0f              /* 1.5 * 2^23: t = v + M rounds v to an int */

/* 2^n for an integer -126 <= n <= 127, built in the exponent field (+0 for -127). */
static inline float fastnn_pow2if(uint32_t n)
{
    fastnn_f32bits b;
    b.u = (n + 127u) << 23;
    return b.f;
}

/* Range reduction shared by exp and expm1: returns q = e^r - 1 and stores n (as uint32,
   two's complement) in *n. xc must be within +-150 ln2 (or NaN). */
static inline float fastnn_expqf(float xc, uint32_t *n)
{
    fastnn_f32bits t;
    t.f = xc * FASTNN_LOG2E_F + FASTNN_ROUND_F;
    float nf = t.f - FASTNN_ROUND_F;
    *n = t.u - 0x4B400000u;              /* bits of M + n minus bits of M */
    float r = xc - nf * FASTNN_LN2_HI_F;
    r = r - nf * FASTNN_LN2_LO_F;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    return r + (r * r) * p;
}

/* exp(x), any x: 0 below ln(2^-150) (gradual underflow above), +inf above ln(FLT_MAX). */
static inline float fastnn_expf(float x)
{
    float xc = fastnn_atmostf(fastnn_atleastf(x, -104.0f), 88.72283f);
    uint32_t n;                          /* n in [-150, 128] */
    float q = fastnn_expqf(xc, &n);
    /* 2^n (1 + q) as 2^n1 * 2^n2 (n1 = floor(n / 2)): both factors are normal floats, so
       the only rounding after 1 + q is the final one (gradual underflow below 2^-126) */
    uint32_t n1 = (uint32_t)((int32_t)n >> 1);
    float res = ((1.0f + q) * fastnn_pow2if(n1)) * fastnn_pow2if(n - n1);
    return fastnn_self(x > 88.72283f, (float)INFINITY, res);
}

/* exp(x) for x <= 0, flushed to 0 below about -87.7 (where exp(x) < 2^-126: no sum of
   exponentials that includes exp(0) = 1, as the stable softmax and logistic terms do,
   can notice). The clamp at -88 makes n = -127, whose 2^n bit pattern is +0: the
   flush needs no select, and one scaling does (~1.5x faster than fastnn_expf). */
static inline float fastnn_expf_neg(float x)
{
    float xc = fastnn_atleastf(x, -88.0f);
    uint32_t n;                          /* n in [-127, 0] */
    float q = fastnn_expqf(xc, &n);
    return (1.0f + q) * fastnn_pow2if(n);
}

/* expm1(x) for x <= 88 (larger x returns +inf): -1 below -87 (what expm1 rounds to). */
static inline float fastnn_expm1f(float x)
{
    float xc = fastnn_atmostf(fastnn_atleastf(x, -87.0f), 88.0f);
    uint32_t n;
    float q = fastnn_expqf(xc, &n);
    float s = fastnn_pow2if(n);
    float res = s * q + (s - 1.0f);
    return fastnn_self(x > 88.0f, (float)INFINITY, res);
}

/* tanh(x) with x's sign, from e = exp(-2|x|): -expm1(-2|x|) / (2 + expm1(-2|x|)) below
   |x| = 0.55 (exact near 0), 1 - 2e / (1 + e) above (where expm1 would round e away:
   correctly rounded up to |x| ~ 9, where tanh leaves the last float below 1). One range
   reduction serves both forms (-2|x| is clamped at -87, so 2^n is a normal float) and
   one division: the forms' numerators and denominators are selected first. Never
   overflows; NaN -> NaN. */
static inline float fastnn_tanhf(float x)
{
    float a = -2.0f * fabsf(x);
    float ac = fastnn_atleastf(a, -87.0f);
    uint32_t n;
    float q = fastnn_expqf(ac, &n);
    float s = fastnn_pow2if(n);
    float em1 = s * q + (s - 1.0f);                  /* expm1(a) */
    float e = (1.0f + q) * s;                        /* exp(a) */
    int small = a > -1.1f;
    float t = fastnn_self(small, -em1, 2.0f * e) / fastnn_self(small, 2.0f + em1, 1.0f + e);
    return copysignf(fastnn_self(small, t, 1.0f - t), x);
}

/* ------------------------------------------------------------------ float64 exp */
#define FASTNN_LOG2E 1.4426950408889634
#define FASTNN_LN2_HI 0.6931471803691238        /* 33 significant bits: n * LN2_HI exact */
#define FASTNN_LN2_LO 1.9082149292705877e-10
#define FASTNN_ROUND 6755399441055744.0          /* 1.5 * 2^52 */

/* 2^n for an integer -1022 <= n <= 1023, built in the exponent field (+0 for -1023). */
static inline double fastnn_pow2i(int64_t n)
{
    fastnn_f64bits b;
    b.u = (uint64_t)(n + 1023) << 52;
    return b.f;
}

/* exp(x) for x <= 0, flushed to 0 below about -708.7 (where exp(x) < 2^-1022), as
   fastnn_expf_neg: the clamp at -709 makes n = -1023, whose 2^n bit pattern is +0. */
static inline double fastnn_exp_neg(double x)
{
    double xc = fastnn_atleast(x, -709.0);
    fastnn_f64bits t;
    t.f = xc * FASTNN_LOG2E + FASTNN_ROUND;
    double nf = t.f - FASTNN_ROUND;
    int64_t n = (int64_t)(t.u - 0x4338000000000000ull);   /* n in [-1023, 0] */
    double r = (xc - nf * FASTNN_LN2_HI) - nf * FASTNN_LN2_LO;
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
    double q = r + (r * r) * p;
    return (1.0 + q) * fastnn_pow2i(n);
}

/* ----------------------------------------------------------- log1p on [0, 1]
 * log1p(e) for e in [0, 1] (the stable logistic loss needs no other range); NaN -> NaN:
 * 2 atanh(s) with s = e / (2 + e), or, above sqrt(2) - 1, ln 2 + 2 atanh((e - 1) / (e + 3));
 * |s| <= 0.1716, odd series in s. Full relative accuracy for tiny e. Max error ~3 ulp. */
static inline float fastnn_log1p01f(float e)
{
    int big = e > 0.41421356f;
    float s = fastnn_self(big, e - 1.0f, e) / fastnn_self(big, e + 3.0f, e + 2.0f);
    float z = s * s;
    float p = 1.0f / 11.0f;
    p = p * z + 1.0f / 9.0f;
    p = p * z + 1.0f / 7.0f;
    p = p * z + 1.0f / 5.0f;
    p = p * z + 1.0f / 3.0f;
    return (2.0f * s + 2.0f * s * (z * p)) + fastnn_self(big, 0.693147180559945f, 0.0f);
}

static inline double fastnn_log1p01(double e)
{
    int big = e > 0.41421356237309503;
    double s = fastnn_seld(big, e - 1.0, e) / fastnn_seld(big, e + 3.0, e + 2.0);
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
    return (2.0 * s + 2.0 * s * (z * p)) + fastnn_seld(big, 0.6931471805599453, 0.0);
}

#endif /* FASTNN_COMMON_H */

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Activation math shared by _activations.pyx and _dense.pyx: the one copy of every
forward f(x) and gradient f'(x) formula, as `cdef inline ... noexcept nogil` functions
over the fused `floating` type, plus span drivers that apply them to contiguous memory.

Formulas and the order of the operations follow `fastnn.kernels.ref.activations`
(every literal is cast to `floating` first, so float32 math stays float32, like NumPy's).
NaN propagates through every forward: comparisons with NaN are false, so each blend is
written to fall through to an expression of x (relu is `x < 0 ? 0 : x`, min(x, 0) is
`x > 0 ? 0 : x`). Backward multiplies dout by the gradient, so NaN in dout propagates
too (relu backward: dout * (x > 0 ? 1 : 0)). Blends are `sel(c, a, b)` bit selects,
never `a if c else b`, which keeps gcc from vectorizing the loop (see _actmath.h).

float32 exp/expm1 (hence sigmoid, tanh, elu, silu, swish, gelu_tanh) come from
_actmath.h: branch-free polynomials, ~1 ulp, that gcc vectorizes without -ffast-math.
float64 uses libm exp/expm1/tanh. erf is libm's erff/erf (scalar calls) for both: the
gelu spans call it in a loop of its own and vectorize the rest.
"""
from cython cimport floating
from libc.math cimport copysignf, erf, erff, exp, expm1, fabs, fabsf, tanh
from libc.string cimport memcpy

cdef extern from "_actmath.h" nogil:
    float fastnn_expf(float x) noexcept
    float fastnn_expm1f(float x) noexcept
    float fastnn_self(bint c, float a, float b) noexcept
    double fastnn_seld(bint c, double a, double b) noexcept
    # `void`, plus (GCC, x86-64 Linux) AVX-512F/AVX2/baseline clones picked at load time
    ctypedef void simd_clones_void "FASTNN_SIMD_CLONES_VOID"
    # sqrt(2/pi), 1/sqrt(2), 1/sqrt(2 pi), the gelu-tanh cubic coefficient (as numpy_ref)
    const double SQRT_2_OVER_PI "FASTNN_SQRT_2_OVER_PI"
    const double INV_SQRT_2 "FASTNN_INV_SQRT_2"
    const double INV_SQRT_2PI "FASTNN_INV_SQRT_2PI"
    const double GELU_C "FASTNN_GELU_C"

# Activation codes: must equal fastnn.kernels.codes (the .pyx modules check at import).
cdef enum:
    ACT_IDENTITY = 0
    ACT_SIGMOID = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_LEAKY_RELU = 4
    ACT_ELU = 5
    ACT_GELU = 6
    ACT_GELU_TANH = 7
    ACT_SILU = 8
    ACT_SWISH = 9
    ACT_NUM_CODES = 10


# ---------------------------------------------------------------------------------------
# elementary functions, dispatched on the precision
# ---------------------------------------------------------------------------------------
cdef inline floating sel(bint c, floating a, floating b) noexcept nogil:
    """c ? a : b without a branch (a bit blend; both operands are evaluated)."""
    if floating is float:
        return fastnn_self(c, a, b)
    else:
        return fastnn_seld(c, a, b)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fastnn_expf(x)
    else:
        return exp(x)


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return fastnn_expm1f(x)
    else:
        return expm1(x)


cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    """tanh; float32: -expm1(-2|x|) / (2 + expm1(-2|x|)) with x's sign (exact near 0,
    1 for large |x|, never overflows); float64: libm."""
    cdef floating e
    if floating is float:
        e = fastnn_expm1f(<float>-2 * fabsf(x))
        return copysignf(-e / (<float>2 + e), x)
    else:
        return tanh(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    """Stable logistic: e = exp(-|x|) <= 1; 1/(1+e) for x >= 0, e/(1+e) otherwise."""
    cdef floating e = _exp(-_abs(x))
    return sel(x >= 0, <floating>1, e) / (<floating>1 + e)


cdef inline floating _gelu_tanh_inner(floating x) noexcept nogil:
    return _tanh(<floating>SQRT_2_OVER_PI * (x + <floating>GELU_C * x * x * x))


cdef inline floating _min0(floating x) noexcept nogil:
    """min(x, 0), NaN-preserving like np.minimum: x > 0 ? 0 : x."""
    return sel(x > 0, <floating>0, x)


# ---------------------------------------------------------------------------------------
# scalar forward f(x) per activation (sigmoid: _sigmoid, tanh: _tanh)
# ---------------------------------------------------------------------------------------
cdef inline floating f_relu(floating x) noexcept nogil:
    """max(x, 0), NaN-preserving like np.maximum: x < 0 ? 0 : x."""
    return sel(x < 0, <floating>0, x)


cdef inline floating f_leaky_relu(floating x, floating p) noexcept nogil:
    return sel(x > 0, x, p * x)


cdef inline floating f_elu(floating x, floating p) noexcept nogil:
    return sel(x > 0, x, p * _expm1(_min0(x)))


cdef inline floating _gelu_erf(floating x) noexcept nogil:
    """erf(x / sqrt(2)), the libm call of both gelu formulas."""
    return _erf(x * <floating>INV_SQRT_2)


cdef inline floating f_gelu(floating x, floating e) noexcept nogil:
    """e = _gelu_erf(x) (computed in a separate scalar loop, so this one vectorizes)."""
    return <floating>0.5 * x * (<floating>1 + e)


cdef inline floating f_gelu_tanh(floating x) noexcept nogil:
    return <floating>0.5 * x * (<floating>1 + _gelu_tanh_inner(x))


cdef inline floating f_silu(floating x) noexcept nogil:
    return x * _sigmoid(x)


cdef inline floating f_swish(floating x, floating p) noexcept nogil:
    return x * _sigmoid(p * x)


# ---------------------------------------------------------------------------------------
# scalar gradient f'(x) (x: forward input, y: forward output), as ref.act_backward
# ---------------------------------------------------------------------------------------
cdef inline floating g_sigmoid(floating y) noexcept nogil:
    return y * (<floating>1 - y)


cdef inline floating g_tanh(floating y) noexcept nogil:
    return <floating>1 - y * y


cdef inline floating g_relu(floating x) noexcept nogil:
    return sel(x > 0, <floating>1, <floating>0)


cdef inline floating g_leaky_relu(floating x, floating p) noexcept nogil:
    return sel(x > 0, <floating>1, p)


cdef inline floating g_elu(floating x, floating p) noexcept nogil:
    return sel(x > 0, <floating>1, p * _exp(_min0(x)))


cdef inline floating g_gelu(floating x, floating e) noexcept nogil:
    """e = _gelu_erf(x)."""
    cdef floating cdf = <floating>0.5 * (<floating>1 + e)
    return cdf + x * <floating>INV_SQRT_2PI * _exp(<floating>-0.5 * x * x)


cdef inline floating g_gelu_tanh(floating x) noexcept nogil:
    cdef floating t = _gelu_tanh_inner(x)
    return (<floating>0.5 * (<floating>1 + t)
            + <floating>0.5 * x * (<floating>1 - t * t) * <floating>SQRT_2_OVER_PI
            * (<floating>1 + <floating>(3 * GELU_C) * x * x))


cdef inline floating g_silu(floating x) noexcept nogil:
    cdef floating s = _sigmoid(x)
    return s * (<floating>1 + x * (<floating>1 - s))


cdef inline floating g_swish(floating x, floating p) noexcept nogil:
    cdef floating s = _sigmoid(p * x)
    return s + p * x * s * (<floating>1 - s)


# ---------------------------------------------------------------------------------------
# span drivers: one switch per span, then a tight (vectorizable) loop
# ---------------------------------------------------------------------------------------
cdef enum:
    GELU_CHUNK = 256    # gelu: erf values buffered on the stack per chunk


cdef inline simd_clones_void _gelu_forward_span(const floating *x, floating *y,
                                                Py_ssize_t n) noexcept nogil:
    """Per chunk, the libm erf calls (a scalar loop) fill a stack buffer, then the rest
    runs vectorized; the buffer (not y) keeps y == x correct."""
    cdef floating e[GELU_CHUNK]
    cdef Py_ssize_t c, j, j0, m
    for c in range((n + GELU_CHUNK - 1) // GELU_CHUNK):
        j0 = c * GELU_CHUNK
        m = min(<Py_ssize_t>GELU_CHUNK, n - j0)
        for j in range(m):
            e[j] = _gelu_erf(x[j0 + j])
        for j in range(m):
            y[j0 + j] = f_gelu(x[j0 + j], e[j])


cdef inline simd_clones_void _gelu_backward_span(const floating *dout, const floating *x,
                                                 floating *dx, Py_ssize_t n) noexcept nogil:
    """As _gelu_forward_span; dx may be dout."""
    cdef floating e[GELU_CHUNK]
    cdef Py_ssize_t c, j, j0, m
    for c in range((n + GELU_CHUNK - 1) // GELU_CHUNK):
        j0 = c * GELU_CHUNK
        m = min(<Py_ssize_t>GELU_CHUNK, n - j0)
        for j in range(m):
            e[j] = _gelu_erf(x[j0 + j])
        for j in range(m):
            dx[j0 + j] = dout[j0 + j] * g_gelu(x[j0 + j], e[j])


cdef inline simd_clones_void act_forward_span(const floating *x, floating *y, Py_ssize_t n,
                                              int code, floating p) noexcept nogil:
    """y[j] = f(x[j]) for j < n; y may be x."""
    cdef Py_ssize_t j
    if code == ACT_IDENTITY:
        if y != x:
            memcpy(y, x, n * sizeof(floating))
    elif code == ACT_SIGMOID:
        for j in range(n):
            y[j] = _sigmoid(x[j])
    elif code == ACT_TANH:
        for j in range(n):
            y[j] = _tanh(x[j])
    elif code == ACT_RELU:
        for j in range(n):
            y[j] = f_relu(x[j])
    elif code == ACT_LEAKY_RELU:
        for j in range(n):
            y[j] = f_leaky_relu(x[j], p)
    elif code == ACT_ELU:
        for j in range(n):
            y[j] = f_elu(x[j], p)
    elif code == ACT_GELU:
        _gelu_forward_span(x, y, n)
    elif code == ACT_GELU_TANH:
        for j in range(n):
            y[j] = f_gelu_tanh(x[j])
    elif code == ACT_SILU:
        for j in range(n):
            y[j] = f_silu(x[j])
    elif code == ACT_SWISH:
        for j in range(n):
            y[j] = f_swish(x[j], p)


cdef inline simd_clones_void act_backward_span(const floating *dout, const floating *x,
                                               const floating *y, floating *dx, Py_ssize_t n,
                                               int code, floating p) noexcept nogil:
    """dx[j] = dout[j] * f'(x[j]) (from y[j] = f(x[j]) for sigmoid and tanh); dx may be
    dout. x is not read by sigmoid/tanh/identity, y only by sigmoid/tanh."""
    cdef Py_ssize_t j
    if code == ACT_IDENTITY:
        if dx != dout:
            memcpy(dx, dout, n * sizeof(floating))   # dout * 1 == dout bit for bit
    elif code == ACT_SIGMOID:
        for j in range(n):
            dx[j] = dout[j] * g_sigmoid(y[j])
    elif code == ACT_TANH:
        for j in range(n):
            dx[j] = dout[j] * g_tanh(y[j])
    elif code == ACT_RELU:
        for j in range(n):
            dx[j] = dout[j] * g_relu(x[j])
    elif code == ACT_LEAKY_RELU:
        for j in range(n):
            dx[j] = dout[j] * g_leaky_relu(x[j], p)
    elif code == ACT_ELU:
        for j in range(n):
            dx[j] = dout[j] * g_elu(x[j], p)
    elif code == ACT_GELU:
        _gelu_backward_span(dout, x, dx, n)
    elif code == ACT_GELU_TANH:
        for j in range(n):
            dx[j] = dout[j] * g_gelu_tanh(x[j])
    elif code == ACT_SILU:
        for j in range(n):
            dx[j] = dout[j] * g_silu(x[j])
    elif code == ACT_SWISH:
        for j in range(n):
            dx[j] = dout[j] * g_swish(x[j], p)

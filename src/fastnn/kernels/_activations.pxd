# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Activation math, compiled: the one copy of every forward f(x) and gradient f'(x), as
`cdef inline ... noexcept nogil` functions over the fused `floating` type, and the span
drivers that apply them to contiguous memory (cimported by _activations, _dense and any
kernel that fuses an activation).

`ActCode` is the compiled twin of `fastnn.kernels.activation_table.KERNELS` (same names,
same order; _activations.pyx checks at import). Formulas and the order of operations
follow the table's NumPy bodies (every literal cast to `floating` first, so float32 math
stays float32). NaN propagates through every forward: comparisons with NaN are false, so
each blend falls through to an expression of x (relu is `x < 0 ? 0 : x`). Backward
multiplies dout by the gradient, so NaN in dout propagates too. Blends are `sel` bit
selects (see _common.h).

float32 exp/expm1/tanh (hence sigmoid, tanh, elu, silu, swish, gelu_tanh) are the fast
ones of _common.h, which vectorise; float64 uses libm exp/expm1/tanh. erf is libm's
erff/erf in both: the gelu spans call it in a loop of its own and vectorise the rest.
"""
from cython cimport floating
from libc.math cimport erf, erff, exp, expm1, tanh
from libc.string cimport memcpy

from ._common cimport (fabs_, fastnn_expf, fastnn_expm1f, fastnn_tanhf, sel,
                       simd_clones_void)

cdef extern from *:
    """
    #define FASTNN_SQRT_2_OVER_PI 0.7978845608028654
    #define FASTNN_INV_SQRT_2 0.7071067811865476
    #define FASTNN_INV_SQRT_2PI 0.3989422804014327
    #define FASTNN_GELU_C 0.044715
    """
    # the constants of activation_table (checked at import)
    const double SQRT_2_OVER_PI "FASTNN_SQRT_2_OVER_PI"
    const double INV_SQRT_2 "FASTNN_INV_SQRT_2"
    const double INV_SQRT_2PI "FASTNN_INV_SQRT_2PI"
    const double GELU_C "FASTNN_GELU_C"

cpdef enum ActCode:
    ACT_IDENTITY
    ACT_SIGMOID
    ACT_TANH
    ACT_RELU
    ACT_LEAKY_RELU
    ACT_ELU
    ACT_GELU
    ACT_GELU_TANH
    ACT_SILU
    ACT_SWISH
    ACT_NUM_CODES


# ---------------------------------------------------------------------------------------
# elementary functions, dispatched on the precision
# ---------------------------------------------------------------------------------------
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


cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return fastnn_tanhf(x)
    else:
        return tanh(x)


cdef inline floating sigmoid_from_exp(floating x, floating e) noexcept nogil:
    """The stable logistic of x given e = exp(-|x|) <= 1: 1/(1+e) for x >= 0, e/(1+e)
    otherwise (one division, numerator selected; NaN gives NaN)."""
    return sel(x >= 0, <floating>1, e) / (<floating>1 + e)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    return sigmoid_from_exp(x, _exp(-fabs_(x)))


cdef inline floating _gelu_tanh_inner(floating x) noexcept nogil:
    return _tanh(<floating>SQRT_2_OVER_PI * (x + <floating>GELU_C * x * x * x))


cdef inline floating _min0(floating x) noexcept nogil:
    """min(x, 0), NaN-preserving like np.minimum: x > 0 ? 0 : x."""
    return sel(x > 0, <floating>0, x)


cdef inline floating _gelu_erf(floating x) noexcept nogil:
    """erf(x / sqrt(2)), the libm call of the exact gelu."""
    return _erf(x * <floating>INV_SQRT_2)


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


cdef inline floating f_gelu(floating x, floating e) noexcept nogil:
    """e = _gelu_erf(x) (computed in a separate scalar loop, so this one vectorises)."""
    return <floating>0.5 * x * (<floating>1 + e)


cdef inline floating f_gelu_tanh(floating x) noexcept nogil:
    return <floating>0.5 * x * (<floating>1 + _gelu_tanh_inner(x))


cdef inline floating f_silu(floating x) noexcept nogil:
    return x * _sigmoid(x)


cdef inline floating f_swish(floating x, floating p) noexcept nogil:
    return x * _sigmoid(p * x)


# ---------------------------------------------------------------------------------------
# scalar gradient f'(x) (x: forward input, y: forward output), as the table's bodies
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
# span drivers: one switch per span, then a tight (vectorisable) loop
# ---------------------------------------------------------------------------------------
cdef enum:
    GELU_CHUNK = 256    # gelu: erf values buffered on the stack per chunk


cdef inline simd_clones_void _gelu_forward_span(const floating *x, floating *y,
                                                Py_ssize_t n) noexcept nogil:
    """Per chunk, the libm erf calls (a scalar loop) fill a stack buffer, then the rest
    runs vectorised; the buffer (not y) keeps y == x correct."""
    cdef floating e[GELU_CHUNK]
    cdef Py_ssize_t j, j0 = 0, m
    while j0 < n:
        m = min(<Py_ssize_t>GELU_CHUNK, n - j0)
        for j in range(m):
            e[j] = _gelu_erf(x[j0 + j])
        for j in range(m):
            y[j0 + j] = f_gelu(x[j0 + j], e[j])
        j0 += GELU_CHUNK


cdef inline simd_clones_void _gelu_backward_span(const floating *dout, const floating *x,
                                                 floating *dx, Py_ssize_t n) noexcept nogil:
    """As _gelu_forward_span; dx may be dout."""
    cdef floating e[GELU_CHUNK]
    cdef Py_ssize_t j, j0 = 0, m
    while j0 < n:
        m = min(<Py_ssize_t>GELU_CHUNK, n - j0)
        for j in range(m):
            e[j] = _gelu_erf(x[j0 + j])
        for j in range(m):
            dx[j0 + j] = dout[j0 + j] * g_gelu(x[j0 + j], e[j])
        j0 += GELU_CHUNK


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

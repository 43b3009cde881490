# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Activations, compiled twin of `fastnn.kernels.ref.activations`.

Elementwise work runs over fixed flat blocks of BLOCK elements (prange, static schedule);
the math is the shared `_actfuncs.pxd`. Results do not depend on the thread count: the
elementwise passes are independent per element and the PReLU dalpha reductions use
chunk boundaries fixed by the shapes alone, combined sequentially in a fixed order.
"""
from cython cimport floating
from cython.parallel cimport prange

import numpy as np
cimport numpy as cnp
from libc.string cimport memset

from ._buffers cimport array_data, float_type
from ._plan cimport PlanOp, submit

cnp.import_array()

from . import codes as _codes
from ._actfuncs cimport (ACT_ELU, ACT_GELU, ACT_GELU_TANH, ACT_IDENTITY, ACT_LEAKY_RELU,
                         ACT_NUM_CODES, ACT_RELU, ACT_SIGMOID, ACT_SILU, ACT_SWISH,
                         ACT_TANH, act_backward_span, act_forward_span, f_leaky_relu,
                         sel)

if (_codes.IDENTITY, _codes.SIGMOID, _codes.TANH, _codes.RELU, _codes.LEAKY_RELU,
        _codes.ELU, _codes.GELU, _codes.GELU_TANH, _codes.SILU, _codes.SWISH) != (
        ACT_IDENTITY, ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_GELU,
        ACT_GELU_TANH, ACT_SILU, ACT_SWISH):  # pragma: no cover
    raise ImportError("fastnn.kernels._activations: activation codes out of sync with "
                      "fastnn.kernels.codes; rebuild the extension")

cdef enum:
    # elements per parallel work item (64 KiB of float32): amortizes the per-block call
    # and still balances many threads on (256, 1024) inputs
    BLOCK = 16384
    # PReLU shared-alpha reduction: at most MAX_CHUNKS chunks of >= BLOCK elements, each
    # summed in LANES interleaved double accumulators (vectorizable, fixed order)
    MAX_CHUNKS = 1024
    LANES = 8
    # PReLU per-channel reduction: columns per work item
    COLS = 256

_F64 = np.dtype(np.float64)


cdef inline int _check_code(int code) except -1:
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("unknown activation code %r" % (code,))
    return 0


# ---------------------------------------------------------------------------------------
# act_forward / act_backward
# ---------------------------------------------------------------------------------------
cdef void _act_forward(const floating *xp, floating *yp, Py_ssize_t n, int code, floating p,
                       int nthreads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t b, start
    if n == 0:
        return
    if nthreads <= 1 or nb <= 1:
        act_forward_span(xp, yp, n, code, p)
        return
    for b in prange(nb, schedule="static", num_threads=nthreads):
        start = b * BLOCK
        act_forward_span(xp + start, yp + start, min(BLOCK, n - start), code, p)


cdef void _act_backward(const floating *gp, const floating *xp, const floating *yp,
                        floating *dp, Py_ssize_t n, int code, floating p,
                        int nthreads) noexcept nogil:
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t b, start
    if n == 0:
        return
    if nthreads <= 1 or nb <= 1:
        act_backward_span(gp, xp, yp, dp, n, code, p)
        return
    for b in prange(nb, schedule="static", num_threads=nthreads):
        start = b * BLOCK
        act_backward_span(gp + start, xp + start, yp + start, dp + start,
                          min(BLOCK, n - start), code, p)


cdef int _forward_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        _act_forward[double](<double *>op.ptr[0], <double *>op.ptr[1], op.dim[0], op.code,
                             op.arg[0], op.nthreads)
    else:
        _act_forward[float](<float *>op.ptr[0], <float *>op.ptr[1], op.dim[0], op.code,
                            <float>op.arg[0], op.nthreads)
    return 0


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        _act_backward[double](<double *>op.ptr[0], <double *>op.ptr[1],
                              <double *>op.ptr[2], <double *>op.ptr[3], op.dim[0],
                              op.code, op.arg[0], op.nthreads)
    else:
        _act_backward[float](<float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2],
                             <float *>op.ptr[3], op.dim[0], op.code, <float>op.arg[0],
                             op.nthreads)
    return 0


def act_forward(x, out, int code, double p, int nthreads=1):
    """out[...] = f(x); x, out: C-contiguous, same size and dtype (may be the same
    array)."""
    _check_code(code)
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = x.size
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, n, -2, False, "x")
    op.ptr[1] = array_data(out, tn, n, -2, True, "out")
    op.dim[0] = n
    op.flt, op.code, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, code, nthreads, p
    op.run = _forward_op
    submit(&op)


def act_backward(dout, x, y, dx, int code, double p, int nthreads=1):
    """dx[...] = dout * f'(x), using the forward's input x and output y = f(x)."""
    _check_code(code)
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = x.size
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(dout, tn, n, -2, False, "dout")
    op.ptr[1] = array_data(x, tn, n, -2, False, "x")
    op.ptr[2] = array_data(y, tn, n, -2, False, "y")
    op.ptr[3] = array_data(dx, tn, n, -2, True, "dx")
    op.dim[0] = n
    op.flt, op.code, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, code, nthreads, p
    op.run = _backward_op
    submit(&op)


# ---------------------------------------------------------------------------------------
# PReLU
# ---------------------------------------------------------------------------------------
cdef inline void _prelu_fwd_rows(const floating *x, const floating *alpha, floating *out,
                                 Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *xr
    cdef floating *yr
    for i in range(r0, r1):
        xr = x + i * C
        yr = out + i * C
        for j in range(C):
            yr[j] = f_leaky_relu(xr[j], alpha[j])


cdef void _prelu_forward(const floating[::1] x, const floating[::1] alpha, floating[::1] out,
                         int nthreads) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], C = alpha.shape[0]
    cdef Py_ssize_t rows, rb, nb, b, r0
    if n == 0:
        return
    if C == 1:   # shared alpha: leaky_relu with slope alpha[0]
        _act_forward(&x[0], &out[0], n, ACT_LEAKY_RELU, alpha[0], nthreads)
        return
    rows = n // C
    rb = max(1, BLOCK // C)             # rows per work item
    nb = (rows + rb - 1) // rb
    if nthreads <= 1 or nb <= 1:
        _prelu_fwd_rows(&x[0], &alpha[0], &out[0], 0, rows, C)
        return
    for b in prange(nb, schedule="static", num_threads=nthreads):
        r0 = b * rb
        _prelu_fwd_rows(&x[0], &alpha[0], &out[0], r0, min(r0 + rb, rows), C)


cdef inline double _prelu_bwd_flat_chunk(const floating *dout, const floating *x,
                                         floating *dx, floating a,
                                         Py_ssize_t n) noexcept nogil:
    """dx = dout * (x > 0 ? 1 : a) over n elements; returns sum(x > 0 ? 0 : dout * x)
    accumulated in double in LANES interleaved partial sums, added in a fixed order."""
    cdef double acc[LANES]
    cdef double s
    cdef floating xv, gv, c
    cdef Py_ssize_t g, j, k, nfull = n - n % LANES
    for k in range(LANES):
        acc[k] = 0
    for g in range(n // LANES):
        j = g * LANES
        for k in range(LANES):
            xv = x[j + k]
            gv = dout[j + k]
            dx[j + k] = sel(xv > 0, gv, a * gv)
            c = sel(xv > 0, <floating>0, gv * xv)
            acc[k] += c
    for j in range(nfull, n):
        xv = x[j]
        gv = dout[j]
        dx[j] = sel(xv > 0, gv, a * gv)
        c = sel(xv > 0, <floating>0, gv * xv)
        acc[j - nfull] += c
    s = acc[0]
    for k in range(1, LANES):
        s += acc[k]
    return s


cdef void _prelu_bwd_cols(const floating *dout, const floating *x, const floating *alpha,
                          floating *dx, floating *dalpha, Py_ssize_t rows, Py_ssize_t C,
                          Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Columns [c0, c1) (at most COLS): dx, and dalpha[c] summed over the rows in order."""
    cdef double acc[COLS]
    cdef Py_ssize_t i, j, m = c1 - c0
    cdef const floating *gr
    cdef const floating *xr
    cdef floating *dr
    cdef floating xv, gv, c
    for j in range(m):
        acc[j] = 0
    for i in range(rows):
        gr = dout + i * C + c0
        xr = x + i * C + c0
        dr = dx + i * C + c0
        for j in range(m):
            xv = xr[j]
            gv = gr[j]
            dr[j] = sel(xv > 0, gv, alpha[c0 + j] * gv)
            c = sel(xv > 0, <floating>0, gv * xv)
            acc[j] += c
    for j in range(m):
        dalpha[c0 + j] = <floating>acc[j]


cdef void _prelu_backward(const floating[::1] dout, const floating[::1] x,
                          const floating[::1] alpha,
                          floating[::1] dx, floating[::1] dalpha,
                          int nthreads) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], C = alpha.shape[0]
    cdef Py_ssize_t chunk, nb, b, start
    cdef double part[MAX_CHUNKS]
    cdef double s
    if n == 0:
        dalpha[:] = 0
        return
    cdef const floating *gp = &dout[0]
    cdef const floating *xp = &x[0]
    cdef floating *dp = &dx[0]
    if C == 1:
        # fixed chunks (boundaries depend on n only), partial sums combined in order
        chunk = max(BLOCK, (n + MAX_CHUNKS - 1) // MAX_CHUNKS)
        nb = (n + chunk - 1) // chunk
        if nthreads <= 1 or nb <= 1:
            for b in range(nb):
                start = b * chunk
                part[b] = _prelu_bwd_flat_chunk(gp + start, xp + start, dp + start,
                                                alpha[0], min(chunk, n - start))
        else:
            for b in prange(nb, schedule="static", num_threads=nthreads):
                start = b * chunk
                part[b] = _prelu_bwd_flat_chunk(gp + start, xp + start, dp + start,
                                                alpha[0], min(chunk, n - start))
        s = part[0]
        for b in range(1, nb):
            s += part[b]
        dalpha[0] = <floating>s
        return
    # per channel: each work item owns COLS columns and walks every row in order
    nb = (C + COLS - 1) // COLS
    if nthreads <= 1 or nb <= 1:
        for b in range(nb):
            _prelu_bwd_cols(gp, xp, &alpha[0], dp, &dalpha[0], n // C, C, b * COLS,
                            min(C, (b + 1) * COLS))
    else:
        for b in prange(nb, schedule="static", num_threads=nthreads):
            _prelu_bwd_cols(gp, xp, &alpha[0], dp, &dalpha[0], n // C, C, b * COLS,
                            min(C, (b + 1) * COLS))


def prelu_forward(x, alpha, out, int nthreads=1):
    """out = x if x > 0 else alpha * x; x: (N, C) or (N,), alpha: (1,) or (C,)."""
    if x.dtype == _F64:
        _prelu_forward[double](x.reshape(-1), alpha, out.reshape(-1), nthreads)
    else:
        _prelu_forward[float](x.reshape(-1), alpha, out.reshape(-1), nthreads)


def prelu_backward(dout, x, alpha, dx, dalpha, int nthreads=1):
    """dx = dout * (1 if x > 0 else alpha); dalpha = sum(dout * x where x <= 0), reduced
    over every axis but the channel one (to shape (1,) when alpha is shared)."""
    if x.dtype == _F64:
        _prelu_backward[double](dout.reshape(-1), x.reshape(-1), alpha, dx.reshape(-1),
                                dalpha, nthreads)
    else:
        _prelu_backward[float](dout.reshape(-1), x.reshape(-1), alpha, dx.reshape(-1),
                               dalpha, nthreads)


# ---------------------------------------------------------------------------------------
# Maxout (max over the pieces of each output)
# ---------------------------------------------------------------------------------------
cdef void _maxout_fwd_rows(const floating *z, floating *out, Py_ssize_t *idx,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t O,
                           Py_ssize_t P) noexcept nogil:
    """Rows [r0, r1): out = max over each output's P pieces, idx = the first maximal
    piece; a NaN counts as maximal (the first NaN wins), as NumPy's max / argmax."""
    cdef Py_ssize_t i, j, k, kb
    cdef const floating *zr
    cdef floating best, v
    cdef bint take
    for i in range(r0, r1):
        for j in range(O):
            zr = z + (i * O + j) * P
            best = zr[0]
            kb = 0
            for k in range(1, P):
                v = zr[k]
                take = (v > best) | ((v != v) & (best == best))
                best = sel(take, v, best)
                kb = k if take else kb
            out[i * O + j] = best
            idx[i * O + j] = kb


cdef void _maxout_bwd_rows(const floating *dout, const Py_ssize_t *idx, floating *dz,
                           Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t O,
                           Py_ssize_t P) noexcept nogil:
    """Rows [r0, r1): every entry of dz written, dout where the piece won, 0 elsewhere
    (idx only selects; it never addresses memory)."""
    cdef Py_ssize_t i, j, k, w
    cdef floating g
    cdef floating *dr
    for i in range(r0, r1):
        for j in range(O):
            g = dout[i * O + j]
            w = idx[i * O + j]
            dr = dz + (i * O + j) * P
            for k in range(P):
                dr[k] = sel(k == w, g, <floating>0)


cdef void _maxout_rows(floating *wide, floating *small, Py_ssize_t *idx, Py_ssize_t r0,
                       Py_ssize_t r1, Py_ssize_t O, Py_ssize_t P,
                       bint backward) noexcept nogil:
    if backward:
        _maxout_bwd_rows(small, idx, wide, r0, r1, O, P)
    else:
        _maxout_fwd_rows(wide, small, idx, r0, r1, O, P)


cdef void _maxout_impl(floating *wide, floating *small, Py_ssize_t *idx, Py_ssize_t n,
                       Py_ssize_t O, Py_ssize_t P, bint backward,
                       int nthreads) noexcept nogil:
    """Rows cut into work items of about BLOCK elements of `wide`."""
    cdef Py_ssize_t rb = max(1, BLOCK // (O * P)), nb = (n + rb - 1) // rb, b
    if nthreads <= 1 or nb <= 1:
        _maxout_rows(wide, small, idx, 0, n, O, P, backward)
        return
    for b in prange(nb, schedule="static", num_threads=nthreads):
        _maxout_rows(wide, small, idx, b * rb, min(b * rb + rb, n), O, P, backward)


cdef _maxout(wide, small, idx, int nthreads, bint backward, str fn):
    """Check the arrays in C (the callers validated already; this keeps memory safe if
    one does not): small and idx (N, O), wide (N, O * P) with P >= 1, one float dtype,
    idx intp; then run without the GIL."""
    cdef int tn = float_type(small)
    cdef Py_ssize_t n = small.shape[0], O = small.shape[1], P
    cdef cnp.ndarray ix = <cnp.ndarray?>idx
    P = wide.shape[1] // O if O else 1
    if (wide.ndim != 2 or P < 1 or cnp.PyArray_TYPE(ix) != cnp.NPY_INTP
            or not cnp.PyArray_IS_C_CONTIGUOUS(ix) or ix.ndim != 2
            or ix.shape[0] != n or ix.shape[1] != O
            or (not backward and not cnp.PyArray_ISWRITEABLE(ix))):
        raise ValueError("fastnn.kernels.%s: inconsistent arrays %s, %s, %s"
                         % (fn, wide.shape, small.shape, idx.shape))
    cdef void *w = array_data(wide, tn, n, O * P, backward, "z" if not backward else "dz")
    cdef void *sm = array_data(small, tn, n, O, not backward,
                               "out" if not backward else "dout")
    cdef Py_ssize_t *ip = <Py_ssize_t *>cnp.PyArray_DATA(ix)
    if n == 0 or O == 0:
        return
    with nogil:
        if tn == cnp.NPY_DOUBLE:
            _maxout_impl[double](<double *>w, <double *>sm, ip, n, O, P, backward, nthreads)
        else:
            _maxout_impl[float](<float *>w, <float *>sm, ip, n, O, P, backward, nthreads)


def maxout_forward(z, out, idx, int nthreads=1):
    """z (N, O * P) -> out (N, O) = max over pieces, idx (N, O) intp = first maximal."""
    _maxout(z, out, idx, nthreads, False, "maxout_forward")


def maxout_backward(dout, idx, dz, int nthreads=1):
    """dz (N, O * P) = dout (N, O) at each output's winning piece idx (N, O), else 0."""
    _maxout(dz, dout, idx, nthreads, True, "maxout_backward")

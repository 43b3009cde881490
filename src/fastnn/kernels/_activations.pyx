# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Activations, PReLU and maxout: compiled twin of `fastnn.kernels.ref.activations`.

Elementwise work runs over fixed flat blocks of BLOCK elements, shared out by
`run_tasks`; the math is `_activations.pxd`. Results do not depend on the thread count:
the elementwise passes are independent per element, and the PReLU dalpha reductions use
chunk boundaries fixed by the shapes alone, combined in a fixed order.
"""
from cython cimport floating

cimport numpy as cnp
from libc.string cimport memset

from ._buffers cimport array_data, float_type, optional_data
from ._common cimport nblocks, run_tasks, sel
from ._plan cimport PlanOp, submit

from . import activation_table as table

cnp.import_array()

_TABLE_CODES = ["ACT_" + k.name.upper() for k in table.KERNELS] + ["ACT_NUM_CODES"]
_TABLE_CONSTANTS = (table.SQRT_2_OVER_PI, table.INV_SQRT_2, table.INV_SQRT_2PI, table.GELU_C)
if ([m.name for m in ActCode] != _TABLE_CODES or _TABLE_CONSTANTS != (
        SQRT_2_OVER_PI, INV_SQRT_2, INV_SQRT_2PI, GELU_C)):  # pragma: no cover
    raise ImportError("fastnn.kernels._activations: ActCode / constants differ from "
                      "fastnn.kernels.activation_table; rebuild the extension")

cdef enum:
    # elements per task (64 KiB of float32): amortises the per-task call and still
    # balances many threads on (256, 1024) inputs
    BLOCK = 16384
    # PReLU shared-alpha reduction: at most MAX_CHUNKS chunks of >= BLOCK elements, each
    # summed in LANES interleaved double accumulators (vectorisable, fixed order)
    MAX_CHUNKS = 1024
    LANES = 8
    # PReLU per-channel reduction: columns per task
    COLS = 256


cdef inline int _check_code(int code) except -1:
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("fastnn.kernels: unknown activation code %r" % (code,))
    return 0


# ---------------------------------------------------------------------------------------
# act_forward / act_backward: ptr = (x, out) / (dout, x, y, dx); dim[0] = n; arg[0] = p
# ---------------------------------------------------------------------------------------
cdef void _forward_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    cdef const PlanOp *op = <const PlanOp *>ctx
    cdef Py_ssize_t s = b * BLOCK, m = min(<Py_ssize_t>BLOCK, op.dim[0] - s)
    if op.flt:
        act_forward_span(<double *>op.ptr[0] + s, <double *>op.ptr[1] + s, m, op.code,
                         op.arg[0])
    else:
        act_forward_span(<float *>op.ptr[0] + s, <float *>op.ptr[1] + s, m, op.code,
                         <float>op.arg[0])


cdef void _backward_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    cdef const PlanOp *op = <const PlanOp *>ctx
    cdef Py_ssize_t s = b * BLOCK, m = min(<Py_ssize_t>BLOCK, op.dim[0] - s)
    if op.flt:
        act_backward_span(<double *>op.ptr[0] + s, <double *>op.ptr[1] + s,
                          <double *>op.ptr[2] + s, <double *>op.ptr[3] + s, m, op.code,
                          op.arg[0])
    else:
        act_backward_span(<float *>op.ptr[0] + s, <float *>op.ptr[1] + s,
                          <float *>op.ptr[2] + s, <float *>op.ptr[3] + s, m, op.code,
                          <float>op.arg[0])


cdef int _forward_op(const PlanOp *op) noexcept nogil:
    run_tasks(_forward_task, op, nblocks(op.dim[0], BLOCK), op.nthreads)
    return 0


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    run_tasks(_backward_task, op, nblocks(op.dim[0], BLOCK), op.nthreads)
    return 0


def act_forward(x, out, int code, double p, int nthreads=1):
    """out[...] = f(x); x, out: C-contiguous, same size and dtype (may be the same
    array)."""
    _check_code(code)
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
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
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
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
# PReLU: ptr = (x, alpha, out) / (dout, x, alpha, dx, dalpha); dim = (rows, channels)
# ---------------------------------------------------------------------------------------
cdef inline Py_ssize_t _prelu_rows_per_task(Py_ssize_t c) noexcept nogil:
    return max(<Py_ssize_t>1, BLOCK // c)


cdef void _prelu_fwd_rows(const floating *x, const floating *alpha, floating *out,
                          Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(r0, r1):
        for j in range(c):
            out[i * c + j] = f_leaky_relu(x[i * c + j], alpha[j])


cdef void _prelu_fwd_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    cdef const PlanOp *op = <const PlanOp *>ctx
    cdef Py_ssize_t rb = _prelu_rows_per_task(op.dim[1]), r0 = b * rb
    cdef Py_ssize_t r1 = min(r0 + rb, op.dim[0])
    if op.flt:
        _prelu_fwd_rows(<double *>op.ptr[0], <double *>op.ptr[1], <double *>op.ptr[2], r0,
                        r1, op.dim[1])
    else:
        _prelu_fwd_rows(<float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2], r0, r1,
                        op.dim[1])


cdef int _prelu_forward_op(const PlanOp *op) noexcept nogil:
    cdef PlanOp leaky
    if op.dim[1] == 1:     # one shared slope: leaky_relu with slope alpha[0]
        memset(&leaky, 0, sizeof(leaky))
        leaky.ptr[0], leaky.ptr[1] = op.ptr[0], op.ptr[2]
        leaky.dim[0], leaky.flt, leaky.code = op.dim[0], op.flt, ACT_LEAKY_RELU
        leaky.nthreads = op.nthreads
        leaky.arg[0] = (<double *>op.ptr[1])[0] if op.flt else (<float *>op.ptr[1])[0]
        return _forward_op(&leaky)
    run_tasks(_prelu_fwd_task, op, nblocks(op.dim[0], _prelu_rows_per_task(op.dim[1])),
              op.nthreads)
    return 0


cdef inline double _prelu_flat_chunk(const floating *dout, const floating *x,
                                     floating *dx, floating a, Py_ssize_t n) noexcept nogil:
    """dx = dout * (x > 0 ? 1 : a) over n elements; returns sum(x > 0 ? 0 : dout * x)
    accumulated in double in LANES interleaved partial sums, added in a fixed order."""
    cdef double acc[LANES]
    cdef double s
    cdef floating xv, gv
    cdef Py_ssize_t g, j, k, nfull = n - n % LANES
    for k in range(LANES):
        acc[k] = 0
    for g in range(nfull // LANES):
        for k in range(LANES):
            j = g * LANES + k
            xv = x[j]
            gv = dout[j]
            dx[j] = sel(xv > 0, gv, a * gv)
            acc[k] += sel(xv > 0, <floating>0, gv * xv)
    for j in range(nfull, n):
        xv = x[j]
        gv = dout[j]
        dx[j] = sel(xv > 0, gv, a * gv)
        acc[j - nfull] += sel(xv > 0, <floating>0, gv * xv)
    s = acc[0]
    for k in range(1, LANES):
        s += acc[k]
    return s


cdef void _prelu_cols(const floating *dout, const floating *x, const floating *alpha,
                      floating *dx, floating *dalpha, Py_ssize_t rows, Py_ssize_t c,
                      Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Columns [c0, c1) (at most COLS): dx, and dalpha[j] summed over the rows in order."""
    cdef double acc[COLS]
    cdef Py_ssize_t i, j, m = c1 - c0, off
    cdef floating xv, gv
    for j in range(m):
        acc[j] = 0
    for i in range(rows):
        off = i * c + c0
        for j in range(m):
            xv = x[off + j]
            gv = dout[off + j]
            dx[off + j] = sel(xv > 0, gv, alpha[c0 + j] * gv)
            acc[j] += sel(xv > 0, <floating>0, gv * xv)
    for j in range(m):
        dalpha[c0 + j] = <floating>acc[j]


ctypedef struct PReLUJob:
    const PlanOp *op
    Py_ssize_t chunk        # elements per chunk of the shared-slope reduction
    double *part            # that reduction's per-chunk sums


cdef void _prelu_bwd_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    """Shared slope: chunk b of the flat arrays; per channel: columns block b."""
    cdef const PReLUJob *job = <const PReLUJob *>ctx
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t n = op.dim[0] * op.dim[1], s = b * job.chunk, c = op.dim[1]
    if c == 1 and op.flt:
        job.part[b] = _prelu_flat_chunk(<double *>op.ptr[0] + s, <double *>op.ptr[1] + s,
                                        <double *>op.ptr[3] + s, (<double *>op.ptr[2])[0],
                                        min(job.chunk, n - s))
    elif c == 1:
        job.part[b] = _prelu_flat_chunk(<float *>op.ptr[0] + s, <float *>op.ptr[1] + s,
                                        <float *>op.ptr[3] + s, (<float *>op.ptr[2])[0],
                                        min(job.chunk, n - s))
    elif op.flt:
        _prelu_cols(<double *>op.ptr[0], <double *>op.ptr[1], <double *>op.ptr[2],
                    <double *>op.ptr[3], <double *>op.ptr[4], op.dim[0], c, b * COLS,
                    min(c, (b + 1) * COLS))
    else:
        _prelu_cols(<float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2],
                    <float *>op.ptr[3], <float *>op.ptr[4], op.dim[0], c, b * COLS,
                    min(c, (b + 1) * COLS))


cdef int _prelu_backward_op(const PlanOp *op) noexcept nogil:
    cdef double part[MAX_CHUNKS]
    cdef double s = 0
    cdef Py_ssize_t n = op.dim[0] * op.dim[1], b, ntasks
    cdef PReLUJob job
    job.op, job.part = op, part
    if op.dim[1] > 1:
        run_tasks(_prelu_bwd_task, &job, nblocks(op.dim[1], COLS), op.nthreads)
        return 0
    # one slope: fixed chunks (boundaries depend on n only), partial sums added in order
    job.chunk = max(<Py_ssize_t>BLOCK, nblocks(n, MAX_CHUNKS))
    ntasks = nblocks(n, job.chunk)
    run_tasks(_prelu_bwd_task, &job, ntasks, op.nthreads)
    for b in range(ntasks):
        s += part[b]
    if op.flt:
        (<double *>op.ptr[4])[0] = s
    else:
        (<float *>op.ptr[4])[0] = <float>s
    return 0


cdef Py_ssize_t _prelu_channels(x, alpha, int tn) except -1:
    """The channel count C of alpha (C,), checked against x: (N, C), or any shape when
    C == 1."""
    cdef Py_ssize_t c = cnp.PyArray_SIZE(<cnp.ndarray?>alpha)
    if c < 1 or cnp.PyArray_NDIM(<cnp.ndarray>alpha) != 1 or (
            c > 1 and (cnp.PyArray_NDIM(<cnp.ndarray?>x) != 2 or x.shape[1] != c)):
        raise ValueError("fastnn.kernels: alpha of shape %s does not fit x of shape %s"
                         % (alpha.shape, x.shape))
    return c


def prelu_forward(x, alpha, out, int nthreads=1):
    """out = x if x > 0 else alpha * x; x: (N, C) or (N,), alpha: (1,) or (C,)."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t c = _prelu_channels(x, alpha, tn)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, n, -2, False, "x")
    op.ptr[1] = array_data(alpha, tn, c, -1, False, "alpha")
    op.ptr[2] = array_data(out, tn, n, -2, True, "out")
    op.dim[0], op.dim[1] = n // c, c
    op.flt, op.nthreads = tn == cnp.NPY_DOUBLE, nthreads
    op.run = _prelu_forward_op
    submit(&op)


def prelu_backward(dout, x, alpha, dx, dalpha, int nthreads=1):
    """dx = dout * (1 if x > 0 else alpha); dalpha = sum(dout * x where x <= 0), reduced
    over every axis but the channel one (to shape (1,) when alpha is shared)."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t c = _prelu_channels(x, alpha, tn)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(dout, tn, n, -2, False, "dout")
    op.ptr[1] = array_data(x, tn, n, -2, False, "x")
    op.ptr[2] = array_data(alpha, tn, c, -1, False, "alpha")
    op.ptr[3] = array_data(dx, tn, n, -2, True, "dx")
    op.ptr[4] = array_data(dalpha, tn, c, -1, True, "dalpha")
    op.dim[0], op.dim[1] = n // c, c
    op.flt, op.nthreads = tn == cnp.NPY_DOUBLE, nthreads
    op.run = _prelu_backward_op
    submit(&op)


# ---------------------------------------------------------------------------------------
# Maxout: ptr = (wide (N, O * P), small (N, O), idx (N, O)); dim = (N, O, P);
# code = 1 for the backward (wide is dz, small is dout)
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


cdef inline Py_ssize_t _maxout_rows_per_task(const PlanOp *op) noexcept nogil:
    """Rows per task: about BLOCK elements of the wide array."""
    return max(<Py_ssize_t>1, BLOCK // (op.dim[1] * op.dim[2]))


cdef void _maxout_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    cdef const PlanOp *op = <const PlanOp *>ctx
    cdef Py_ssize_t rb = _maxout_rows_per_task(op), r0 = b * rb, r1 = min(r0 + rb, op.dim[0])
    cdef Py_ssize_t *idx = <Py_ssize_t *>op.ptr[2]
    if op.code and op.flt:
        _maxout_bwd_rows(<double *>op.ptr[1], idx, <double *>op.ptr[0], r0, r1, op.dim[1],
                         op.dim[2])
    elif op.code:
        _maxout_bwd_rows(<float *>op.ptr[1], idx, <float *>op.ptr[0], r0, r1, op.dim[1],
                         op.dim[2])
    elif op.flt:
        _maxout_fwd_rows(<double *>op.ptr[0], <double *>op.ptr[1], idx, r0, r1, op.dim[1],
                         op.dim[2])
    else:
        _maxout_fwd_rows(<float *>op.ptr[0], <float *>op.ptr[1], idx, r0, r1, op.dim[1],
                         op.dim[2])


cdef int _maxout_op(const PlanOp *op) noexcept nogil:
    if op.dim[1] > 0:
        run_tasks(_maxout_task, op, nblocks(op.dim[0], _maxout_rows_per_task(op)),
                  op.nthreads)
    return 0


cdef _maxout(wide, small, idx, int nthreads, bint backward):
    """Check the arrays in C: small and idx (N, O), wide (N, O * P) with P >= 1, one
    float dtype, idx intp (written by the forward); then run."""
    cdef int tn = float_type(small)
    cdef cnp.ndarray w = <cnp.ndarray?>wide, s = <cnp.ndarray>small
    cdef Py_ssize_t n, o, p = 0
    if cnp.PyArray_NDIM(s) == 2 and cnp.PyArray_NDIM(w) == 2 and s.shape[1] > 0:
        p = w.shape[1] // s.shape[1]
    if p < 1:
        raise ValueError("fastnn.kernels: inconsistent arrays %s, %s, %s"
                         % (wide.shape, small.shape, idx.shape))
    n, o = s.shape[0], s.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(wide, tn, n, o * p, backward, "dz" if backward else "z")
    op.ptr[1] = array_data(small, tn, n, o, not backward, "dout" if backward else "out")
    op.ptr[2] = array_data(idx, cnp.NPY_INTP, n, o, not backward, "idx")
    op.dim[0], op.dim[1], op.dim[2] = n, o, p
    op.flt, op.code, op.nthreads = tn == cnp.NPY_DOUBLE, backward, nthreads
    op.run = _maxout_op
    submit(&op)


def maxout_forward(z, out, idx, int nthreads=1):
    """z (N, O * P) -> out (N, O) = max over pieces, idx (N, O) intp = first maximal."""
    _maxout(z, out, idx, nthreads, False)


def maxout_backward(dout, idx, dz, int nthreads=1):
    """dz (N, O * P) = dout (N, O) at each output's winning piece idx (N, O), else 0."""
    _maxout(dz, dout, idx, nthreads, True)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Dense layer with a fused activation, compiled twin of `fastnn.kernels.numpy_ref.dense`.

GEMMs are BLAS sgemm/dgemm from scipy.linalg.cython_blas, called without the GIL into the
caller's buffers. BLAS is column-major and our arrays are row-major, so a row-major
(R, C) array is the column-major (C, R) matrix, its transpose; each product is computed
transposed, with no copies:
    forward  z  = x @ w      as  z^T  = w^T x^T      gemm('N', 'N', O, N, I)
    backward dw = x^T @ dz   as  dw^T = dz^T x       gemm('N', 'T', O, I, N)
             dx = dz @ w^T   as  dx^T = w dz^T       gemm('T', 'N', I, N, O)
The elementwise work is one pass over the (N, O) output each way:
    forward:  z[i] += b; out[i] = f(z[i])              row by row
    backward: dz = dout * f'(z, out) and db = sum(dz, 0) in the same pass, in blocks of
              COLS columns; each block walks the rows in order and sums its columns in
              double, so db does not depend on how blocks are shared among threads.

Threads. The GEMMs run on BLAS's own thread pool. By default the elementwise passes run
on the calling thread: an OpenMP region next to a multithreaded OpenBLAS call costs far
more than it saves, because libgomp's idle workers spin (default wait policy) on the
cores the next GEMM needs, and OpenBLAS's idle workers spin on the cores the region
needs. Measured on 2 cores, (128, 784) -> 512 relu float32 forward+backward: the 3 GEMMs
alone 1.37 ms; serial passes 1.41 ms (x1.03); prange passes 8.0 ms (x5.8). When
OMP_WAIT_POLICY=passive is set at import, idle OpenMP workers sleep and the passes use
prange (nthreads) above a size threshold; they only gain when OpenBLAS's workers sleep
too (OPENBLAS_THREAD_TIMEOUT=4): then gelu at (4096, 64) -> 1024 drops from 78 to 44 ms.
"""
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, sgemm

import os

import numpy as np

from . import codes as _codes
from ._actfuncs cimport (ACT_IDENTITY, ACT_LEAKY_RELU, ACT_NUM_CODES, ACT_RELU,
                         act_backward_span, act_forward_span)

if (_codes.IDENTITY, _codes.RELU, _codes.LEAKY_RELU) != (
        ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU):  # pragma: no cover
    raise ImportError("fastnn.kernels._dense: activation codes out of sync with "
                      "fastnn.kernels.codes; rebuild the extension")

cdef enum:
    # prange passes (when enabled): minimum output elements for relu-like activations
    # (a few cycles per element) and for the transcendental ones
    PAR_MIN_CHEAP = 262144
    PAR_MIN = 16384
    # columns per work item of the backward pass (one double accumulator each)
    COLS = 64
    # elements per work item of the backward pass when db is not needed
    BLOCK = 16384

_F64 = np.dtype(np.float64)

# Parallel elementwise passes only when idle OpenMP workers sleep (see the docstring).
cdef bint PARALLEL_PASSES = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == (
    "passive")


cdef inline bint _use_prange(int nthreads, Py_ssize_t rows, Py_ssize_t total,
                             int code) noexcept nogil:
    if not PARALLEL_PASSES or nthreads <= 1 or rows < 2:
        return False
    if code == ACT_IDENTITY or code == ACT_RELU or code == ACT_LEAKY_RELU:
        return total >= PAR_MIN_CHEAP
    return total >= PAR_MIN


def _set_parallel_passes(flag):
    """Testing/benchmarking hook: force the prange elementwise passes on or off (nthreads
    still applies). Returns the previous setting."""
    global PARALLEL_PASSES
    old = PARALLEL_PASSES
    PARALLEL_PASSES = bool(flag)
    return old


cdef inline void _gemm(char transa, char transb, int m, int n, int k, const floating *a,
                       int lda, const floating *b, int ldb, floating *c,
                       int ldc) noexcept nogil:
    """Column-major C (m, n) = op(A) op(B), beta = 0 (C is overwritten)."""
    cdef floating one = 1, zero = 0
    if m <= 0 or n <= 0:
        return
    lda = max(lda, 1)
    ldb = max(ldb, 1)
    ldc = max(ldc, 1)
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &one, <float *>a, &lda, <float *>b, &ldb,
              &zero, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &one, <double *>a, &lda, <double *>b, &ldb,
              &zero, c, &ldc)


# ---------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------
cdef inline void _bias_act_rows(floating *z, const floating *b, floating *out,
                                Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t O, int code,
                                floating p, bint act) noexcept nogil:
    """Rows [r0, r1): z[i] += b (b may be NULL), then out[i] = f(z[i]) when act."""
    cdef Py_ssize_t i, j
    cdef floating *zr
    for i in range(r0, r1):
        zr = z + i * O
        if b != NULL:
            for j in range(O):
                zr[j] = zr[j] + b[j]
        if act:
            act_forward_span(zr, out + i * O, O, code, p)


cdef void _dense_forward(const floating[:, ::1] x, const floating[:, ::1] w,
                         const floating[::1] b,
                         floating[:, ::1] z, floating[:, ::1] out, bint z_is_out,
                         int code, floating p, int nthreads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[1], i
    cdef const floating *bp = NULL
    cdef bint act = code != ACT_IDENTITY or not z_is_out
    if N == 0 or O == 0:
        return
    if b is not None:
        bp = &b[0]
    cdef floating *zp = &z[0, 0]
    cdef floating *op = &out[0, 0]
    _gemm(c'N', c'N', <int>O, <int>N, <int>I, &w[0, 0], <int>O, &x[0, 0], <int>I, zp,
          <int>O)
    if bp == NULL and not act:
        return
    if not _use_prange(nthreads, N, N * O, code):
        _bias_act_rows(zp, bp, op, 0, N, O, code, p, act)
        return
    for i in prange(N, schedule="static", num_threads=nthreads):
        _bias_act_rows(zp, bp, op, i, i + 1, O, code, p, act)


def dense_forward(x, w, b, z, out, int code, double p, int nthreads=1):
    """Write z (pre-activation, (N, O)) and out = f(z) ((N, O)); z may be out when
    code is IDENTITY."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("unknown activation code %r" % (code,))
    if x.dtype == _F64:
        _dense_forward[double](x, w, b, z, out, z is out, code, p, nthreads)
    else:
        _dense_forward[float](x, w, b, z, out, z is out, code, <float>p, nthreads)


# ---------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------
cdef void _dz_db_cols(const floating *dout, const floating *z, const floating *out,
                      floating *dz, floating *db, Py_ssize_t N, Py_ssize_t O,
                      Py_ssize_t c0, Py_ssize_t c1, int code, floating p,
                      bint act) noexcept nogil:
    """Columns [c0, c1) (at most COLS), rows in order: dz = dout * f'(z, out) when act,
    and db[c] = sum over the rows of dz[:, c], accumulated in double."""
    cdef double acc[COLS]
    cdef Py_ssize_t i, j, m = c1 - c0, off
    for j in range(m):
        acc[j] = 0
    for i in range(N):
        off = i * O + c0
        if act:
            act_backward_span(dout + off, z + off, out + off, dz + off, m, code, p)
        for j in range(m):
            acc[j] += dz[off + j]
    for j in range(m):
        db[c0 + j] = <floating>acc[j]


cdef void _dense_backward(const floating[:, ::1] dout, const floating[:, ::1] x,
                          const floating[:, ::1] w, const floating[:, ::1] z,
                          const floating[:, ::1] out, floating[:, ::1] dz,
                          floating[:, ::1] dx, floating[:, ::1] dw, floating[::1] db,
                          bint dz_is_dout, int code, floating p,
                          int nthreads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[1]
    cdef Py_ssize_t nb, b, start, total = N * O
    cdef bint act = code != ACT_IDENTITY or not dz_is_dout
    cdef bint par = _use_prange(nthreads, N, total, code)
    if O == 0:
        return
    if N == 0:   # empty batch: every gradient is a sum over nothing
        dw[:, :] = 0
        if db is not None:
            db[:] = 0
        return
    cdef const floating *gp = &dout[0, 0]
    cdef const floating *zp = &z[0, 0]
    cdef const floating *yp = &out[0, 0]
    cdef floating *dzp = &dz[0, 0]
    if db is not None:
        nb = (O + COLS - 1) // COLS
        if not par or nb < 2:
            for b in range(nb):
                _dz_db_cols(gp, zp, yp, dzp, &db[0], N, O, b * COLS,
                            min(O, (b + 1) * COLS), code, p, act)
        else:
            for b in prange(nb, schedule="static", num_threads=nthreads):
                _dz_db_cols(gp, zp, yp, dzp, &db[0], N, O, b * COLS,
                            min(O, (b + 1) * COLS), code, p, act)
    elif act:
        nb = (total + BLOCK - 1) // BLOCK
        if not par or nb < 2:
            act_backward_span(gp, zp, yp, dzp, total, code, p)
        else:
            for b in prange(nb, schedule="static", num_threads=nthreads):
                start = b * BLOCK
                act_backward_span(gp + start, zp + start, yp + start, dzp + start,
                                  min(BLOCK, total - start), code, p)
    # dw = x^T dz
    _gemm(c'N', c'T', <int>O, <int>I, <int>N, dzp, <int>O, &x[0, 0], <int>I, &dw[0, 0],
          <int>O)
    # dx = dz w^T
    if dx is not None and I > 0:
        _gemm(c'T', c'N', <int>I, <int>N, <int>O, &w[0, 0], <int>O, dzp, <int>O,
              &dx[0, 0], <int>I)


def dense_backward(dout, x, w, z, out, dz, dx, dw, db, int code, double p,
                   int nthreads=1):
    """Write dz (workspace (N, O); may be dout when code is IDENTITY), dw (I, O),
    db (O,) unless None, and dx (N, I) unless None (first layer needs no dx)."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("unknown activation code %r" % (code,))
    if x.dtype == _F64:
        _dense_backward[double](dout, x, w, z, out, dz, dx, dw, db, dz is dout, code, p,
                                nthreads)
    else:
        _dense_backward[float](dout, x, w, z, out, dz, dx, dw, db, dz is dout, code,
                               <float>p, nthreads)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Dense layer with a fused activation, compiled twin of `fastnn.kernels.ref.dense`.

GEMMs are BLAS sgemm/dgemm from scipy.linalg.cython_blas, called without the GIL into the
caller's buffers. BLAS is column-major and our arrays are row-major, so a row-major
(R, C) array is the column-major (C, R) matrix, its transpose; each product is computed
transposed, with no copies:
    forward  z  = x @ w      as  z^T  = w^T x^T      gemm('N', 'N', O, N, I)
    backward dw = x^T @ dz   as  dw^T = dz^T x       gemm('N', 'T', O, I, N)
             dx = dz @ w^T   as  dx^T = w dz^T       gemm('T', 'N', I, N, O)

One thread pool. fastnn runs this BLAS single-threaded (see fastnn.core.backend) and splits
every GEMM itself across its OpenMP team, each thread computing blocks of the output with
one gemm call each:
    forward:  thread t computes z[rows_t] (or z[:, cols_t] when the batch is small),
              then z += b and out = f(z) on that block while it is in cache; a single
              row (batch 1) is cut along the sum instead (partial gemvs over
              contiguous rows of w, added in a fixed order);
    backward: dz = dout * f'(z, out) and db = sum(dz, 0) in one pass (COLS columns at a
              time, rows in order, double accumulation), then dw and dx together: dw
              cut along its rows (I), dx along its rows (or its columns when the batch
              is small); with both, each gets half the blocks.
Two pools (OpenBLAS's pthreads and libgomp's) spin on each other's cores: measured on 2
cores, a GEMM followed by a 2-thread elementwise kernel ran 10x slower than either
alone.

Determinism. How a product is cut into blocks depends only on its shape and on PARTS, the
machine's processor count fixed at import (PARTS blocks of at least MIN_BLOCK, cut at
multiples of ALIGN, once it has SPLIT_MIN multiply-adds), never on the thread count;
threads only decide who computes which block. BLAS's result for an element depends on
the block it is in (edge tiles, internal cache blocking), so this is what makes results
bit-identical for any thread count. db sums each column over the rows in order.
"""
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

import numpy as np
cimport numpy as cnp

cnp.import_array()

from . import codes as _codes
from ._buffers cimport array_data, float_type, optional_data
from ._plan cimport PlanOp, submit
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from ._openmp cimport omp_get_num_procs
from ._actfuncs cimport (ACT_IDENTITY, ACT_LEAKY_RELU, ACT_NUM_CODES, ACT_RELU,
                         act_backward_span, act_forward_span, simd_clones_void)

if (_codes.IDENTITY, _codes.RELU, _codes.LEAKY_RELU) != (
        ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU):  # pragma: no cover
    raise ImportError("fastnn.kernels._dense: activation codes out of sync with "
                      "fastnn.kernels.codes; rebuild the extension")

cdef enum:
    COLS = 64      # dz and db are computed per block of COLS columns
    ELEMWISE_MIN = 1 << 15   # elements below which the dz/db pass runs on one thread
    ALIGN = 16     # GEMM blocks are cut at multiples of this (whole micro-kernel tiles)
    MAX_PARTS = 16    # GEMM blocks per product at most
    MIN_BLOCK = 128   # narrowest GEMM block (each block re-packs the shared operand)
    SPLIT_MIN = 1 << 20   # multiply-adds below which a product stays one GEMM call
    SPLIT_MIN_GEMV = 1 << 16   # the same for a matrix-vector product (bandwidth-bound)


cdef int _machine_parts() noexcept nogil:
    """GEMM blocks per product worth splitting: the machine's processor count (2 at
    least, MAX_PARTS at most). Fixed for the process, whatever set_num_threads says:
    fewer, larger blocks than a fixed 4 were 5-15% faster on 2 cores (each block
    re-packs the operand the blocks share)."""
    return max(2, min(<int>MAX_PARTS, omp_get_num_procs()))


cdef int PARTS = _machine_parts()


def gemm_parts():
    """The number of blocks a large GEMM is cut into on this machine (see PARTS)."""
    return PARTS


cdef inline int _nparts(Py_ssize_t dim, Py_ssize_t work, bint matvec) noexcept nogil:
    """Number of GEMM blocks for a product of `work` multiply-adds split along `dim`
    (`matvec`: one operand is a vector, so the product streams the matrix once and is
    worth splitting much earlier): a function of the shape and the machine only (never
    of the thread count)."""
    if work < (SPLIT_MIN_GEMV if matvec else SPLIT_MIN):
        return 1
    if matvec:
        return <int>min(<Py_ssize_t>PARTS, (dim + ALIGN - 1) // ALIGN)
    return <int>max(1, min(<Py_ssize_t>PARTS, dim // MIN_BLOCK))


cdef inline void _split(Py_ssize_t n, int parts, int t, Py_ssize_t align, Py_ssize_t *lo,
                        Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): part t of `parts` near-equal parts of range(n), cut at multiples of align."""
    cdef Py_ssize_t units = (n + align - 1) // align
    lo[0] = min(n, (units * t // parts) * align)
    hi[0] = min(n, (units * (t + 1) // parts) * align)


cdef inline void _gemm(char transa, char transb, int m, int n, int k, const floating *a,
                       int lda, const floating *b, int ldb, floating *c,
                       int ldc) noexcept nogil:
    """Column-major C (m, n) = op(A) op(B), beta = 0 (C is overwritten)."""
    cdef floating one = 1, zero = 0
    cdef Py_ssize_t i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:   # BLAS would leave C alone with beta = 0 and k = 0 on some builds
        for j in range(n):
            for i in range(m):
                c[j * ldc + i] = 0
        return
    if n == 1:     # a matrix-vector product: gemv is ~9x faster than gemm here
        if transa == c'N':
            _gemv(c'N', m, k, a, lda, b, 1 if transb == c'N' else ldb, c, 1)
        else:
            _gemv(c'T', k, m, a, lda, b, 1 if transb == c'N' else ldb, c, 1)
        return
    if m == 1:     # c^T (n) = op(B)^T a^T
        if transb == c'N':
            _gemv(c'T', k, n, b, ldb, a, lda if transa == c'N' else 1, c, ldc)
        else:
            _gemv(c'N', n, k, b, ldb, a, lda if transa == c'N' else 1, c, ldc)
        return
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &one, <float *>a, &lda, <float *>b, &ldb,
              &zero, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &one, <double *>a, &lda, <double *>b, &ldb,
              &zero, c, &ldc)


cdef inline void _gemv(char trans, int rows, int cols, const floating *a, int lda,
                       const floating *x, int incx, floating *y, int incy) noexcept nogil:
    """y = op(A) x with A column-major (rows, cols), beta = 0 (y is overwritten)."""
    cdef floating one = 1, zero = 0
    if floating is float:
        sgemv(&trans, &rows, &cols, &one, <float *>a, &lda, <float *>x, &incx, &zero, y,
              &incy)
    else:
        dgemv(&trans, &rows, &cols, &one, <double *>a, &lda, <double *>x, &incx, &zero, y,
              &incy)


cdef inline void _bias_act_block(floating *z, const floating *b, floating *out,
                                 Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
                                 Py_ssize_t O, int code, floating p,
                                 bint act) noexcept nogil:
    """Block rows [r0, r1) x columns [c0, c1): z += b (b may be NULL), then out = f(z)."""
    cdef Py_ssize_t i, j
    cdef floating *zr
    for i in range(r0, r1):
        zr = z + i * O
        if b != NULL:
            for j in range(c0, c1):
                zr[j] = zr[j] + b[j]
        if act:
            act_forward_span(zr + c0, out + i * O + c0, c1 - c0, code, p)


cdef inline void _forward_part(const floating *xp, const floating *wp, const floating *bp,
                               floating *zp, floating *op, Py_ssize_t N, Py_ssize_t I,
                               Py_ssize_t O, int code, floating p, bint act, bint by_rows,
                               int parts, int t) noexcept nogil:
    """Part t of the forward: one GEMM block of z, then its bias + activation."""
    cdef Py_ssize_t lo, hi
    if by_rows:
        _split(N, parts, t, ALIGN, &lo, &hi)
        if hi > lo:
            _gemm(c'N', c'N', <int>O, <int>(hi - lo), <int>I, wp, <int>O, xp + lo * I,
                  <int>I, zp + lo * O, <int>O)
            if bp != NULL or act:
                _bias_act_block(zp, bp, op, lo, hi, 0, O, O, code, p, act)
    else:
        _split(O, parts, t, ALIGN, &lo, &hi)
        if hi > lo:
            _gemm(c'N', c'N', <int>(hi - lo), <int>N, <int>I, wp + lo, <int>O, xp,
                  <int>I, zp + lo, <int>O)
            if bp != NULL or act:
                _bias_act_block(zp, bp, op, 0, N, lo, hi, O, code, p, act)


cdef inline void _row_part(const floating *x, const floating *w, floating *z,
                           floating *acc, Py_ssize_t I, Py_ssize_t O, int parts,
                           int t) noexcept nogil:
    """Part t of a one-row product: rows [lo, hi) of w (contiguous) times x[lo:hi], into
    z (t = 0) or acc[t - 1]."""
    cdef Py_ssize_t lo, hi, j
    cdef floating *dst = z if t == 0 else acc + (t - 1) * O
    _split(I, parts, t, ALIGN, &lo, &hi)
    if hi > lo:
        _gemv(c'N', <int>O, <int>(hi - lo), w + lo * O, <int>O, x + lo, 1, dst, 1)
    else:
        for j in range(O):
            dst[j] = 0


cdef int _forward_one_row(const floating *x, const floating *w, const floating *bp,
                          floating *z, floating *out, Py_ssize_t I, Py_ssize_t O, int code,
                          floating p, bint act, int parts, int nthreads) noexcept nogil:
    """z (1, O) = x (1, I) @ w with the sum over I cut into `parts` fixed ranges of
    contiguous rows of w, one gemv each, added in order (so each part streams one
    contiguous piece of w: splitting by output columns instead reads w in short strided
    runs and was no faster on 2 threads than 1); then bias + activation."""
    cdef floating *acc = <floating *>malloc((parts - 1) * O * sizeof(floating))
    cdef Py_ssize_t j
    cdef int t
    if acc == NULL:
        return -1
    if nthreads <= 1:
        for t in range(parts):
            _row_part(x, w, z, acc, I, O, parts, t)
    else:
        for t in prange(parts, schedule="static", num_threads=min(nthreads, parts)):
            _row_part(x, w, z, acc, I, O, parts, t)
    for t in range(parts - 1):
        for j in range(O):
            z[j] = z[j] + acc[t * O + j]
    free(acc)
    if bp != NULL or act:
        _bias_act_block(z, bp, out, 0, 1, 0, O, O, code, p, act)
    return 0


cdef int _dense_forward(const floating *x, const floating *w, const floating *bp,
                        floating *z, floating *out, Py_ssize_t N, Py_ssize_t I,
                        Py_ssize_t O, bint z_is_out, int code, floating p,
                        int nthreads) noexcept nogil:
    cdef bint act = code != ACT_IDENTITY or not z_is_out
    cdef bint by_rows = N >= O or O < 2 * ALIGN
    cdef int t, parts
    if N == 0 or O == 0:
        return 0
    if N == 1 and O > 1:
        parts = _nparts(I, I * O, True)
        if parts > 1:
            return _forward_one_row(x, w, bp, z, out, I, O, code, p, act, parts, nthreads)
    parts = _nparts(N if by_rows else O, N * I * O, N == 1 or O == 1)
    if parts <= 1 or nthreads <= 1:
        for t in range(parts):
            _forward_part(x, w, bp, z, out, N, I, O, code, p, act, by_rows, parts, t)
        return 0
    for t in prange(parts, schedule="static", num_threads=min(nthreads, parts)):
        _forward_part(x, w, bp, z, out, N, I, O, code, p, act, by_rows, parts, t)
    return 0


cdef int _forward_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        return _dense_forward[double](<double *>op.ptr[0], <double *>op.ptr[1],
                                      <double *>op.ptr[2], <double *>op.ptr[3],
                                      <double *>op.ptr[4], op.dim[0], op.dim[1], op.dim[2],
                                      op.ptr[3] == op.ptr[4], op.code, op.arg[0],
                                      op.nthreads)
    return _dense_forward[float](<float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2],
                                 <float *>op.ptr[3], <float *>op.ptr[4], op.dim[0],
                                 op.dim[1], op.dim[2], op.ptr[3] == op.ptr[4], op.code,
                                 <float>op.arg[0], op.nthreads)


def dense_forward(x, w, b, z, out, int code, double p, int nthreads=1):
    """Write z (pre-activation, (N, O)) and out = f(z) ((N, O)); z may be out when
    code is IDENTITY."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("unknown activation code %r" % (code,))
    cdef int tn = float_type(x)
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, N, I, False, "x")
    op.ptr[1] = array_data(w, tn, I, O, False, "w")
    op.ptr[2] = optional_data(b, tn, O, -1, False, "b")
    op.ptr[3] = array_data(z, tn, N, O, True, "z")
    op.ptr[4] = array_data(out, tn, N, O, True, "out")
    op.dim[0], op.dim[1], op.dim[2] = N, I, O
    op.flt, op.code, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, code, nthreads, p
    op.run = _forward_op
    submit(&op)


cdef simd_clones_void _dz_db_cols(
        const floating *dout, const floating *z, const floating *out, floating *dz,
        floating *db, Py_ssize_t N, Py_ssize_t O, Py_ssize_t c0, Py_ssize_t c1, int code,
        floating p, bint act) noexcept nogil:
    """Columns [c0, c1) (at most COLS), rows in order: dz = dout * f'(z, out) when act,
    and db[c] = sum over the rows of dz[:, c] (accumulated in double) unless db is NULL."""
    cdef double acc[COLS]
    cdef Py_ssize_t i, j, m = c1 - c0, off
    for j in range(m):
        acc[j] = 0
    for i in range(N):
        off = i * O + c0
        if act:
            act_backward_span(dout + off, z + off, out + off, dz + off, m, code, p)
        if db != NULL:
            for j in range(m):
                acc[j] += dz[off + j]
    if db != NULL:
        for j in range(m):
            db[c0 + j] = <floating>acc[j]


cdef inline void _backward_dx_part(const floating *wp, const floating *dzp, floating *dxp,
                                   Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, bint by_rows,
                                   int parts, int t) noexcept nogil:
    """Part t of dx = dz w^T: a block of rows (or of columns when the batch is small)."""
    cdef Py_ssize_t lo, hi
    if by_rows:
        _split(N, parts, t, ALIGN, &lo, &hi)
        if hi > lo:
            _gemm(c'T', c'N', <int>I, <int>(hi - lo), <int>O, wp, <int>O, dzp + lo * O,
                  <int>O, dxp + lo * I, <int>I)
    else:
        _split(I, parts, t, ALIGN, &lo, &hi)
        if hi > lo:
            _gemm(c'T', c'N', <int>(hi - lo), <int>N, <int>O, wp + lo * O, <int>O, dzp,
                  <int>O, dxp + lo, <int>I)


cdef inline void _backward_gemm_part(const floating *wp, const floating *xp,
                                     const floating *dzp, floating *dwp, floating *dxp,
                                     Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, int pw,
                                     int pdx, bint dx_by_rows, int t) noexcept nogil:
    """Task t of the backward's GEMMs: t < pw, block t of dw = x^T dz, cut along I (rows
    of dw: each block packs only its slice of x; cutting along O instead did not scale
    on 2 threads); else block t - pw of dx = dz w^T."""
    cdef Py_ssize_t lo, hi
    if t < pw:
        _split(I, pw, t, ALIGN, &lo, &hi)
        if hi > lo:
            _gemm(c'N', c'T', <int>O, <int>(hi - lo), <int>N, dzp, <int>O, xp + lo, <int>I,
                  dwp + lo * O, <int>O)
    else:
        _backward_dx_part(wp, dzp, dxp, N, I, O, dx_by_rows, pdx, t - pw)


cdef void _dense_backward(const floating *gp, const floating *x, const floating *w,
                          const floating *z, const floating *out, floating *dzp,
                          floating *dx, floating *dw, floating *dbp, Py_ssize_t N,
                          Py_ssize_t I, Py_ssize_t O, bint dz_is_dout, int code, floating p,
                          int nthreads) noexcept nogil:
    cdef bint act = code != ACT_IDENTITY or not dz_is_dout
    cdef bint dx_by_rows = N >= I or I < 2 * ALIGN
    cdef int t, pw, pdx = 0, tasks, nt
    cdef Py_ssize_t j, c, nblk = (O + COLS - 1) // COLS
    if O == 0:
        return
    if N == 0:   # empty batch: every gradient is a sum over nothing
        for j in range(I * O):
            dw[j] = 0
        if dbp != NULL:
            for j in range(O):
                dbp[j] = 0
        return
    # dz = dout * f'(z, out) and db, COLS columns at a time (each column's rows in order)
    if act or dbp != NULL:
        nt = nthreads if N * O >= ELEMWISE_MIN else 1
        if nt <= 1 or nblk <= 1:
            for c in range(nblk):
                _dz_db_cols(gp, z, out, dzp, dbp, N, O, c * COLS, min(O, c * COLS + COLS),
                            code, p, act)
        else:
            for c in prange(nblk, schedule="static", num_threads=min(<Py_ssize_t>nt, nblk)):
                _dz_db_cols(gp, z, out, dzp, dbp, N, O, c * COLS, min(O, c * COLS + COLS),
                            code, p, act)
    # dw and dx: independent products, their blocks shared out in one parallel loop (with
    # both, each gets half the blocks: on 2 cores, one whole GEMM per thread)
    pw = _nparts(I, N * I * O, N == 1 or O == 1)
    if dx != NULL and I > 0:
        pdx = _nparts(N if dx_by_rows else I, N * I * O, N == 1 or O == 1)
        pw, pdx = max(1, pw // 2), max(1, pdx // 2)
    tasks = pw + pdx
    if nthreads <= 1:
        for t in range(tasks):
            _backward_gemm_part(w, x, dzp, dw, dx, N, I, O, pw, pdx, dx_by_rows, t)
    else:
        for t in prange(tasks, schedule="static", num_threads=min(nthreads, tasks)):
            _backward_gemm_part(w, x, dzp, dw, dx, N, I, O, pw, pdx, dx_by_rows, t)


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    cdef bint dz_is_dout = op.ptr[5] == op.ptr[0]
    if op.flt:
        _dense_backward[double](<double *>op.ptr[0], <double *>op.ptr[1],
                                <double *>op.ptr[2], <double *>op.ptr[3],
                                <double *>op.ptr[4], <double *>op.ptr[5],
                                <double *>op.ptr[6], <double *>op.ptr[7],
                                <double *>op.ptr[8], op.dim[0], op.dim[1], op.dim[2],
                                dz_is_dout, op.code, op.arg[0], op.nthreads)
    else:
        _dense_backward[float](<float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2],
                               <float *>op.ptr[3], <float *>op.ptr[4], <float *>op.ptr[5],
                               <float *>op.ptr[6], <float *>op.ptr[7], <float *>op.ptr[8],
                               op.dim[0], op.dim[1], op.dim[2], dz_is_dout, op.code,
                               <float>op.arg[0], op.nthreads)
    return 0


def dense_backward(dout, x, w, z, out, dz, dx, dw, db, int code, double p,
                   int nthreads=1):
    """Write dz (workspace (N, O); may be dout when code is IDENTITY), dw (I, O),
    db (O,) unless None, and dx (N, I) unless None (first layer needs no dx)."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("unknown activation code %r" % (code,))
    cdef int tn = float_type(x)
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(dout, tn, N, O, False, "dout")
    op.ptr[1] = array_data(x, tn, N, I, False, "x")
    op.ptr[2] = array_data(w, tn, I, O, False, "w")
    op.ptr[3] = array_data(z, tn, N, O, False, "z")
    op.ptr[4] = array_data(out, tn, N, O, False, "out")
    if dz is dout:
        if code != ACT_IDENTITY:
            raise ValueError("fastnn.kernels: dz may be dout only without an activation")
        op.ptr[5] = op.ptr[0]
    else:
        op.ptr[5] = array_data(dz, tn, N, O, True, "dz")
    op.ptr[6] = optional_data(dx, tn, N, I, True, "dx")
    op.ptr[7] = array_data(dw, tn, I, O, True, "dw")
    op.ptr[8] = optional_data(db, tn, O, -1, True, "db")
    op.dim[0], op.dim[1], op.dim[2] = N, I, O
    op.flt, op.code, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, code, nthreads, p
    op.run = _backward_op
    submit(&op)

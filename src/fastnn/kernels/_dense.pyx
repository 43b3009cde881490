# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Dense layer with a fused activation, compiled twin of `fastnn.kernels.ref.dense`.

    forward   z = x @ w (+ b),  out = f(z)               x (N, I), w (I, O), z (N, O)
    backward  dz = dout * f'(z),  db = sum(dz, 0),  dw = x^T @ dz,  dx = dz @ w^T

The products go through `_blas.gemm` (row-major, any size). One thread pool: the BLAS
runs single-threaded (see fastnn.core.backend) and this module cuts every product into
blocks shared out over its OpenMP team, one gemm call per block:
    forward:  a block of rows of z (or of columns when the batch is small), then
              z += b and out = f(z) on that block while it is in cache; a single row
              (batch 1) is cut along the sum instead (partial gemvs over contiguous rows
              of w, added in a fixed order);
    backward: dz = dout * f'(z, out) and db in one pass (COLS columns at a time, rows in
              order, double accumulation), then dw and dx together: dw cut along its
              rows (I), dx along its rows (or columns when the batch is small); with
              both, each gets half the blocks.
Two pools (OpenBLAS's pthreads and libgomp's) would spin on each other's cores: on 2
cores a GEMM followed by a 2-thread elementwise kernel ran 10x slower than either alone.

Determinism. How a product is cut depends only on its shape and on PARTS, the machine's
processor count fixed at import (PARTS blocks of at least MIN_BLOCK, cut at multiples of
ALIGN, once it has SPLIT_MIN multiply-adds), never on the thread count; threads only
decide who computes which block. BLAS's result for an element depends on the block it is
in (edge tiles, internal cache blocking), so this is what makes results bit-identical
for any thread count. db sums each column over the rows in order.

When threads help is decided here too: the caller passes its team size (fastnn.ops
passes `threads_for(N * I * O)`), and each pass uses it only above its own threshold.
"""
from cython cimport floating

cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._activations cimport (ACT_IDENTITY, ACT_NUM_CODES, act_backward_span,
                            act_forward_span)
from ._blas cimport gemm
from ._buffers cimport array_data, float_type, optional_data, rows
from ._common cimport nblocks, omp_get_num_procs, run_tasks, simd_clones_void
from ._plan cimport PlanOp, submit

from . import _activations   # noqa: F401  (refuses to import when its codes are stale)

cnp.import_array()

cdef enum:
    COLS = 64                 # dz and db are computed per block of COLS columns
    ELEMWISE_MIN = 1 << 15    # elements below which the dz/db pass runs on one thread
    ALIGN = 16                # GEMM blocks are cut at multiples of this (whole tiles)
    MAX_PARTS = 16            # GEMM blocks per product at most
    MIN_BLOCK = 32            # narrowest GEMM block (each re-packs the shared operand;
                              # 128 kept scikit-learn's 200 x 64 x 100 on one thread)
    SPLIT_MIN = 1 << 20       # multiply-adds below which a product stays one GEMM call
    SPLIT_MIN_GEMV = 1 << 16  # the same for a matrix-vector product (bandwidth-bound)
    BOTH_MIN = 1 << 19        # multiply-adds from which dw and dx run side by side


cdef int _machine_parts() noexcept nogil:
    """GEMM blocks per product worth splitting: the machine's processor count (2 at
    least, MAX_PARTS at most), fixed for the process whatever set_num_threads says:
    fewer, larger blocks were 5-15% faster on 2 cores than a fixed 4 (each block
    re-packs the operand the blocks share)."""
    return max(2, min(<int>MAX_PARTS, omp_get_num_procs()))


cdef int PARTS = _machine_parts()


def gemm_parts():
    """The number of blocks a large GEMM is cut into on this machine (see PARTS)."""
    return PARTS


cdef inline int _nparts(Py_ssize_t dim, Py_ssize_t work, bint matvec) noexcept nogil:
    """Blocks for a product of `work` multiply-adds split along `dim` (`matvec`: one
    operand is a vector, so the product streams the matrix once and is worth splitting
    much earlier): a function of the shape and the machine only."""
    if work < (SPLIT_MIN_GEMV if matvec else SPLIT_MIN):
        return 1
    if matvec:
        return <int>min(<Py_ssize_t>PARTS, nblocks(dim, ALIGN))
    return <int>max(1, min(<Py_ssize_t>PARTS, dim // MIN_BLOCK))


cdef inline void _split(Py_ssize_t n, int parts, Py_ssize_t t, Py_ssize_t *lo,
                        Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): part t of `parts` near-equal parts of range(n), cut at multiples of
    ALIGN."""
    cdef Py_ssize_t units = nblocks(n, ALIGN)
    lo[0] = min(n, (units * t // parts) * ALIGN)
    hi[0] = min(n, (units * (t + 1) // parts) * ALIGN)


ctypedef struct DenseJob:
    const PlanOp *op
    int parts          # forward: GEMM blocks; backward: blocks of dw
    int dx_parts       # backward: blocks of dx
    bint by_rows       # blocks of rows (else columns) of z / dx
    bint act           # forward: out = f(z) is computed; backward: dz = dout * f'
    void *acc          # one-row forward: the partial sums of parts 1.. (parts - 1, O)


# ---------------------------------------------------------------------------------------
# forward: ptr = (x, w, b, z, out); dim = (N, I, O); code, arg[0] = the activation
# ---------------------------------------------------------------------------------------
cdef inline void _bias_act(floating *z, const floating *b, floating *out, Py_ssize_t r0,
                           Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t O,
                           int code, floating p, bint act) noexcept nogil:
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


cdef void _forward_part(const DenseJob *job, Py_ssize_t t, const floating *x,
                        const floating *w, const floating *b, floating *z, floating *out,
                        floating p) noexcept nogil:
    """Block t of the forward: one GEMM block of z, then its bias and activation."""
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t N = op.dim[0], I = op.dim[1], O = op.dim[2], lo, hi
    if job.by_rows:
        _split(N, job.parts, t, &lo, &hi)
        if hi > lo:
            gemm(False, False, hi - lo, O, I, x + lo * I, I, w, O, 0, z + lo * O, O)
            if b != NULL or job.act:
                _bias_act(z, b, out, lo, hi, 0, O, O, op.code, p, job.act)
    else:
        _split(O, job.parts, t, &lo, &hi)
        if hi > lo:
            gemm(False, False, N, hi - lo, I, x, I, w + lo, O, 0, z + lo, O)
            if b != NULL or job.act:
                _bias_act(z, b, out, 0, N, lo, hi, O, op.code, p, job.act)


cdef void _forward_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const DenseJob *job = <const DenseJob *>ctx
    cdef const PlanOp *op = job.op
    if op.flt:
        _forward_part(job, t, <double *>op.ptr[0], <double *>op.ptr[1],
                      <double *>op.ptr[2], <double *>op.ptr[3], <double *>op.ptr[4],
                      op.arg[0])
    else:
        _forward_part(job, t, <float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[2],
                      <float *>op.ptr[3], <float *>op.ptr[4], <float>op.arg[0])


cdef void _row_part(const DenseJob *job, Py_ssize_t t, const floating *x,
                    const floating *w, floating *z, floating *acc) noexcept nogil:
    """Part t of a one-row product: rows [lo, hi) of w (contiguous) times x[lo:hi], into
    z (t = 0) or acc[t - 1] (an empty part writes zeros)."""
    cdef Py_ssize_t I = job.op.dim[1], O = job.op.dim[2], lo, hi
    _split(I, job.parts, t, &lo, &hi)
    gemm(False, False, 1, O, hi - lo, x + lo, I, w + lo * O, O, 0,
         z if t == 0 else acc + (t - 1) * O, O)


cdef void _row_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const DenseJob *job = <const DenseJob *>ctx
    cdef const PlanOp *op = job.op
    if op.flt:
        _row_part(job, t, <double *>op.ptr[0], <double *>op.ptr[1], <double *>op.ptr[3],
                  <double *>job.acc)
    else:
        _row_part(job, t, <float *>op.ptr[0], <float *>op.ptr[1], <float *>op.ptr[3],
                  <float *>job.acc)


cdef int _forward_one_row(DenseJob *job, const floating *b, floating *z, floating *out,
                          floating p) noexcept nogil:
    """z (1, O) = x (1, I) @ w with the sum over I cut into `parts` fixed ranges of
    contiguous rows of w, one gemv each, added in order (each part streams one
    contiguous piece of w; cutting by output columns instead reads w in short strided
    runs and was no faster on 2 threads than 1); then bias + activation."""
    cdef Py_ssize_t O = job.op.dim[2], j
    cdef int t
    cdef floating *acc = <floating *>malloc((job.parts - 1) * O * sizeof(floating))
    if acc == NULL:
        return -1
    job.acc = acc
    run_tasks(_row_task, job, job.parts, job.op.nthreads)
    for t in range(job.parts - 1):
        for j in range(O):
            z[j] = z[j] + acc[t * O + j]
    free(acc)
    if b != NULL or job.act:
        _bias_act(z, b, out, 0, 1, 0, O, O, job.op.code, p, job.act)
    return 0


cdef int _forward_op(const PlanOp *op) noexcept nogil:
    cdef Py_ssize_t N = op.dim[0], I = op.dim[1], O = op.dim[2]
    cdef DenseJob job
    if N == 0 or O == 0:
        return 0
    job.op = op
    job.act = op.code != ACT_IDENTITY or op.ptr[3] != op.ptr[4]
    job.by_rows = N >= O or O < 2 * ALIGN
    if N == 1 and O > 1:
        job.parts = _nparts(I, I * O, True)
        if job.parts > 1 and op.flt:
            return _forward_one_row(&job, <double *>op.ptr[2], <double *>op.ptr[3],
                                    <double *>op.ptr[4], op.arg[0])
        if job.parts > 1:
            return _forward_one_row(&job, <float *>op.ptr[2], <float *>op.ptr[3],
                                    <float *>op.ptr[4], <float>op.arg[0])
    job.parts = _nparts(N if job.by_rows else O, N * I * O, N == 1 or O == 1)
    run_tasks(_forward_task, &job, job.parts, op.nthreads)
    return 0


def dense_forward(x, w, b, z, out, int code, double p, int nthreads=1):
    """Write z (pre-activation, (N, O)) and out = f(z) ((N, O)); z may be out when
    code is IDENTITY."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("fastnn.kernels: unknown activation code %r" % (code,))
    cdef int tn = float_type(x)
    cdef Py_ssize_t I, O, N = rows(x, "x", &I)
    rows(w, "w", &O)
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


# ---------------------------------------------------------------------------------------
# backward: ptr = (dout, x, w, z, out, dz, dx, dw, db); dim = (N, I, O)
# ---------------------------------------------------------------------------------------
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


cdef void _dz_db_task(const void *ctx, Py_ssize_t c) noexcept nogil:
    cdef const DenseJob *job = <const DenseJob *>ctx
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t N = op.dim[0], O = op.dim[2], c0 = c * COLS, c1 = min(O, c0 + COLS)
    if op.flt:
        _dz_db_cols(<double *>op.ptr[0], <double *>op.ptr[3], <double *>op.ptr[4],
                    <double *>op.ptr[5], <double *>op.ptr[8], N, O, c0, c1, op.code,
                    op.arg[0], job.act)
    else:
        _dz_db_cols(<float *>op.ptr[0], <float *>op.ptr[3], <float *>op.ptr[4],
                    <float *>op.ptr[5], <float *>op.ptr[8], N, O, c0, c1, op.code,
                    <float>op.arg[0], job.act)


cdef void _backward_part(const DenseJob *job, Py_ssize_t t, const floating *x,
                         const floating *w, const floating *dz, floating *dx,
                         floating *dw) noexcept nogil:
    """Task t of the backward's products: t < parts, block t of dw = x^T dz, cut along I
    (rows of dw: each block packs only its slice of x; cutting along O instead did not
    scale on 2 threads); else block t - parts of dx = dz w^T."""
    cdef Py_ssize_t N = job.op.dim[0], I = job.op.dim[1], O = job.op.dim[2], lo, hi
    if t < job.parts:
        _split(I, job.parts, t, &lo, &hi)
        if hi > lo:
            gemm(True, False, hi - lo, O, N, x + lo, I, dz, O, 0, dw + lo * O, O)
    elif job.by_rows:
        _split(N, job.dx_parts, t - job.parts, &lo, &hi)
        if hi > lo:
            gemm(False, True, hi - lo, I, O, dz + lo * O, O, w, O, 0, dx + lo * I, I)
    else:
        _split(I, job.dx_parts, t - job.parts, &lo, &hi)
        if hi > lo:
            gemm(False, True, N, hi - lo, O, dz, O, w + lo * O, O, 0, dx + lo, I)


cdef void _backward_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const DenseJob *job = <const DenseJob *>ctx
    cdef const PlanOp *op = job.op
    if op.flt:
        _backward_part(job, t, <double *>op.ptr[1], <double *>op.ptr[2],
                       <double *>op.ptr[5], <double *>op.ptr[6], <double *>op.ptr[7])
    else:
        _backward_part(job, t, <float *>op.ptr[1], <float *>op.ptr[2], <float *>op.ptr[5],
                       <float *>op.ptr[6], <float *>op.ptr[7])


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    cdef Py_ssize_t N = op.dim[0], I = op.dim[1], O = op.dim[2]
    cdef bint matvec = N == 1 or O == 1
    cdef size_t itemsize = sizeof(double) if op.flt else sizeof(float)
    cdef DenseJob job
    if O == 0:
        return 0
    if N == 0:   # empty batch: every gradient is a sum over nothing
        memset(op.ptr[7], 0, I * O * itemsize)
        if op.ptr[8] != NULL:
            memset(op.ptr[8], 0, O * itemsize)
        return 0
    job.op = op
    job.act = op.code != ACT_IDENTITY or op.ptr[5] != op.ptr[0]
    if job.act or op.ptr[8] != NULL:
        run_tasks(_dz_db_task, &job, nblocks(O, COLS),
                  op.nthreads if N * O >= ELEMWISE_MIN else 1)
    # dw and dx: independent products, their blocks shared out in one parallel loop
    # (with both, each gets half the blocks: on 2 cores, one whole product per thread)
    job.by_rows = N >= I or I < 2 * ALIGN
    job.parts = _nparts(I, N * I * O, matvec)
    job.dx_parts = 0
    if op.ptr[6] != NULL and I > 0:
        job.dx_parts = max(1, _nparts(N if job.by_rows else I, N * I * O, matvec) // 2)
        job.parts = max(1, job.parts // 2)
    run_tasks(_backward_task, &job, job.parts + job.dx_parts,
              op.nthreads if N * I * O >= (SPLIT_MIN_GEMV if matvec else BOTH_MIN) else 1)
    return 0


def dense_backward(dout, x, w, z, out, dz, dx, dw, db, int code, double p,
                   int nthreads=1):
    """Write dz (workspace (N, O); may be dout when code is IDENTITY), dw (I, O),
    db (O,) unless None, and dx (N, I) unless None (first layer needs no dx)."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("fastnn.kernels: unknown activation code %r" % (code,))
    cdef int tn = float_type(x)
    cdef Py_ssize_t I, O, N = rows(x, "x", &I)
    rows(w, "w", &O)
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

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batch normalisation over the batch axis of (N, D) inputs: Cython twin of
`ref/batchnorm.py` (same names, positional arguments and outputs).

Work decomposition and determinism: the (N, D) array is cut into tiles of R rows x CB
columns, where R = RB (64), or more for very tall inputs (at most MAX_BLOCKS row blocks);
R depends on N only, never on the thread count. `prange(schedule="static")` hands out
tiles. Per-feature column sums are accumulated in double per tile, rows in order (four
rows per step, see _shifted_sums), into a (row block, column) partial array; the partials
of a column are then added in row-block order. Every sum has the same association for
any team size, so all outputs are bit-identical for nthreads = 1, 2, 3, ...

Passes over N x D data (float32 bytes moved per element in brackets):
  forward, train:  stats pass reads x [4]; output pass reads x, writes out [8]
  forward, eval:   one pass reads x, writes out [8]
  backward, train: sums pass reads dout, x [8]; dx pass reads dout, x, writes dx [12]
  backward, eval:  one pass: dx = dout * gamma * invstd [8], fused with the dgamma /
                   dbeta sums tile by tile when those are wanted (reads x too [12])
Training forward + backward: 8 N D elements moved (128 MiB at (4096, 1024) float32);
the NumPy twin makes ~20 passes with temporaries. The tile kernels are compiled as
AVX-512F / AVX2 / SSE2 clones picked at load (`simd_clones_void`; identical bits): the
double-precision sums vectorise 4 or 8 wide instead of SSE2's 2.

Variance: shifted one-pass sums in double. With the shift K_j = x[0, j] (one sample of
the column), s1 = sum(x - K), s2 = sum((x - K)^2), mean = K + s1/N and
var = s2/N - (s1/N)^2. For float32 input every x - K and (x - K)^2 is exact in double.
The subtraction cannot cancel catastrophically: s2/N = var + (mean - K)^2 and, K being
one of the samples, (mean - K)^2 <= N var, so the rounding error of s2 is amplified by
at most N + 1 (typically ~2) -- even when |mean| >> std, where the unshifted
E[x^2] - E[x]^2 loses everything. Against an exact two-pass this saves one full read of
x; the tests check |mean| / std up to 1e5 against an exact (fsum) reference.
dgamma / dbeta: sums of dout and dout * (x - mean), each four-row group formed in the
input precision and accumulated in double (absolute error ~1e-7 sum |terms| in float32,
less than the reference's own float32 sums; nothing there for a shift to protect).
"""
from cython cimport floating
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._actfuncs cimport simd_clones_void
from ._buffers cimport array_data, float_type, optional_data
from ._plan cimport PlanOp, submit
from ._reduce cimport f_sqrt, nblocks

cdef enum:
    RB = 64          # rows per tile (at least; see _rows_per_block)
    MAX_BLOCKS = 256  # row blocks at most: bounds the partial-sum scratch to 4 KiB x D
    CB = 2048        # columns per tile (contiguous run of one row inside a tile)

cnp.import_array()


cdef struct Tile:
    Py_ssize_t rb, r0, r1, c0, c1


cdef inline Py_ssize_t _rows_per_block(Py_ssize_t n) noexcept nogil:
    """Rows per tile: RB, or more for very tall inputs so that there are at most
    MAX_BLOCKS row blocks. A function of N only (never of the thread count), rounded up to
    a multiple of 4 (the row grouping of the sums)."""
    cdef Py_ssize_t r = (n + MAX_BLOCKS - 1) // MAX_BLOCKS
    r = (r + 3) // 4 * 4
    return r if r > RB else RB


cdef inline Tile _tile(Py_ssize_t t, Py_ssize_t ncb, Py_ssize_t rpb, Py_ssize_t n,
                       Py_ssize_t d) noexcept nogil:
    """Bounds of tile t (row-block major: consecutive tiles walk along a row block)."""
    cdef Tile tl
    tl.rb = t // ncb
    tl.r0 = tl.rb * rpb
    tl.r1 = tl.r0 + rpb if tl.r0 + rpb < n else n
    tl.c0 = (t - tl.rb * ncb) * CB
    tl.c1 = tl.c0 + CB if tl.c0 + CB < d else d
    return tl


# ----------------------------------------------------------------------------------
# tile kernels (rows r0..r1, columns c0..c1 of row-major arrays with row stride ld)
# ----------------------------------------------------------------------------------

cdef simd_clones_void _shifted_sums(
        const floating* x, Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
        Py_ssize_t c1, const double* shift, double* s1, double* s2) noexcept nogil:
    """s1[j] = sum_i (x[i,j] - shift[j]), s2[j] = sum_i (x[i,j] - shift[j])^2 over the
    tile's rows (double). Rows are taken four at a time ((t0 + t1) + (t2 + t3) added to
    the accumulator: a fixed association, since tiles start at multiples of RB), which
    quarters the accumulator loads/stores; leftover rows are added one by one."""
    cdef Py_ssize_t i = r0, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef double k, t0, t1, t2, t3
    for j in range(c0, c1):
        s1[j] = 0.0
        s2[j] = 0.0
    while i + 4 <= r1:
        x0 = x + i * ld
        x1 = x0 + ld
        x2 = x1 + ld
        x3 = x2 + ld
        for j in range(c0, c1):
            k = shift[j]
            t0 = <double>x0[j] - k
            t1 = <double>x1[j] - k
            t2 = <double>x2[j] - k
            t3 = <double>x3[j] - k
            s1[j] += (t0 + t1) + (t2 + t3)
            s2[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
        i += 4
    while i < r1:
        x0 = x + i * ld
        for j in range(c0, c1):
            t0 = <double>x0[j] - shift[j]
            s1[j] += t0
            s2[j] += t0 * t0
        i += 1


cdef simd_clones_void _grad_acc(
        const floating* dout, const floating* x, Py_ssize_t ld, Py_ssize_t r0,
        Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1, const floating* mean, double* sdb,
        double* sdg) noexcept nogil:
    """sdb[j] += sum_i dout[i,j], sdg[j] += sum_i dout[i,j] * (x[i,j] - mean[j]).
    Rows four at a time from r0: the four-term group ((a0 + a1) + (a2 + a3)) is formed in
    the input precision and added to the double accumulator (no cancellation here: the
    float32 group error is ~1e-7 of the terms, below the float32 results' rounding),
    leftover rows one by one. Fixed association (tiles start at multiples of RB)."""
    cdef Py_ssize_t i = r0, j
    cdef const floating* d0
    cdef const floating* x0
    cdef floating mu, g0, g1, g2, g3
    while i + 4 <= r1:
        d0 = dout + i * ld
        x0 = x + i * ld
        for j in range(c0, c1):
            mu = mean[j]
            g0 = d0[j]
            g1 = d0[ld + j]
            g2 = d0[2 * ld + j]
            g3 = d0[3 * ld + j]
            sdb[j] += <double>((g0 + g1) + (g2 + g3))
            sdg[j] += <double>((g0 * (x0[j] - mu) + g1 * (x0[ld + j] - mu))
                               + (g2 * (x0[2 * ld + j] - mu) + g3 * (x0[3 * ld + j] - mu)))
        i += 4
    while i < r1:
        d0 = dout + i * ld
        x0 = x + i * ld
        for j in range(c0, c1):
            g0 = d0[j]
            sdb[j] += <double>g0
            sdg[j] += <double>(g0 * (x0[j] - mean[j]))
        i += 1


cdef void _grad_sums(const floating* dout, const floating* x, Py_ssize_t ld,
                     Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
                     const floating* mean, double* sdb, double* sdg) noexcept nogil:
    """sdb[j] = sum_i dout[i,j], sdg[j] = sum_i dout[i,j] * (x[i,j] - mean[j])."""
    cdef Py_ssize_t j
    for j in range(c0, c1):
        sdb[j] = 0.0
        sdg[j] = 0.0
    _grad_acc(dout, x, ld, r0, r1, c0, c1, mean, sdb, sdg)


cdef simd_clones_void _affine(
        const floating* x, floating* out, Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t r1,
        Py_ssize_t c0, Py_ssize_t c1, const floating* mean, const floating* scale,
        const floating* beta) noexcept nogil:
    """out = (x - mean) * scale + beta (the reference's operation order)."""
    cdef Py_ssize_t i, j
    cdef const floating* xrow
    cdef floating* orow
    for i in range(r0, r1):
        xrow = x + i * ld
        orow = out + i * ld
        for j in range(c0, c1):
            orow[j] = (xrow[j] - mean[j]) * scale[j] + beta[j]


cdef simd_clones_void _dx_train(
        const floating* dout, const floating* x, floating* dx, Py_ssize_t ld,
        Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
        const floating* mean, const floating* ca, const floating* cb, const floating* cc) noexcept nogil:
    """dx = ca * dout + cb * (x - mean) + cc: the training-mode formula
    gamma*invstd/N * (N dout - dbeta - xhat dgamma) with per-feature coefficients."""
    cdef Py_ssize_t i, j
    cdef const floating* drow
    cdef const floating* xrow
    cdef floating* orow
    for i in range(r0, r1):
        drow = dout + i * ld
        xrow = x + i * ld
        orow = dx + i * ld
        for j in range(c0, c1):
            orow[j] = ca[j] * drow[j] + cb[j] * (xrow[j] - mean[j]) + cc[j]


cdef simd_clones_void _dx_eval(
        const floating* dout, floating* dx, Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t r1,
        Py_ssize_t c0, Py_ssize_t c1, const floating* ca) noexcept nogil:
    """dx = dout * (gamma * invstd) (eval mode: statistics are constants)."""
    cdef Py_ssize_t i, j
    cdef const floating* drow
    cdef floating* orow
    for i in range(r0, r1):
        drow = dout + i * ld
        orow = dx + i * ld
        for j in range(c0, c1):
            orow[j] = drow[j] * ca[j]


cdef void _dx_eval_sums(const floating* dout, const floating* x, floating* dx,
                        Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
                        Py_ssize_t c1, const floating* ca, const floating* mean,
                        double* sdb, double* sdg) noexcept nogil:
    """Eval-mode dx = dout * ca and the dbeta / dgamma partial sums of one tile: the
    sums first, then dx while the tile's dout is still in cache (a tile is RB rows, at
    most CB columns). Same sums as training mode (bit-identical dgamma / dbeta)."""
    _grad_sums(dout, x, ld, r0, r1, c0, c1, mean, sdb, sdg)
    _dx_eval(dout, dx, ld, r0, r1, c0, c1, ca)


cdef void _combine(const double* part, Py_ssize_t nrb, Py_ssize_t d, double* acc1,
                   double* acc2) noexcept nogil:
    """acc1[j] = sum_rb part[rb, 0, j], acc2[j] = sum_rb part[rb, 1, j], in rb order
    (part is laid out (nrb, 2, d))."""
    cdef Py_ssize_t rb, j
    cdef const double* p
    for j in range(d):
        acc1[j] = 0.0
        acc2[j] = 0.0
    for rb in range(nrb):
        p = part + rb * 2 * d
        for j in range(d):
            acc1[j] += p[j]
            acc2[j] += p[d + j]


cdef inline int _team(int nthreads, Py_ssize_t ntiles) noexcept nogil:
    if nthreads < 1:
        return 1
    if ntiles < nthreads:
        return <int>ntiles
    return nthreads


cdef enum:    # the passes over (N, D) tiles
    PASS_SUMS = 0          # shifted sums of x into the partials
    PASS_AFFINE = 1        # out = (x - mean) * c1 + c2
    PASS_GRAD_SUMS = 2     # dbeta / dgamma partial sums of dout, x
    PASS_DX_TRAIN = 3      # out = c1 * dout + c2 * (x - mean) + c3
    PASS_DX_EVAL_SUMS = 4  # out = dout * c1, and the dbeta / dgamma partial sums
    PASS_DX_EVAL = 5       # out = dout * c1


cdef void _pass_tile(int kind, Tile tl, Py_ssize_t d, const floating* x,
                     const floating* dout, floating* out, const floating* mean,
                     const floating* c1, const floating* c2, const floating* c3,
                     const double* shift, double* part) noexcept nogil:
    cdef double* p1 = part + tl.rb * 2 * d if part != NULL else NULL
    cdef double* p2 = p1 + d if part != NULL else NULL
    if kind == PASS_SUMS:
        _shifted_sums(x, d, tl.r0, tl.r1, tl.c0, tl.c1, shift, p1, p2)
    elif kind == PASS_AFFINE:
        _affine(x, out, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c1, c2)
    elif kind == PASS_GRAD_SUMS:
        _grad_sums(dout, x, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, p1, p2)
    elif kind == PASS_DX_TRAIN:
        _dx_train(dout, x, out, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c1, c2, c3)
    elif kind == PASS_DX_EVAL_SUMS:
        _dx_eval_sums(dout, x, out, d, tl.r0, tl.r1, tl.c0, tl.c1, c1, mean, p1, p2)
    else:
        _dx_eval(dout, out, d, tl.r0, tl.r1, tl.c0, tl.c1, c1)


cdef void _run_pass(int kind, Py_ssize_t n, Py_ssize_t d, int nthreads, const floating* x,
                    const floating* dout, floating* out, const floating* mean,
                    const floating* c1, const floating* c2, const floating* c3,
                    const double* shift, double* part) noexcept nogil:
    """Every tile of a pass, handed out by prange on the team -- or in a plain loop when
    the team is one thread: an OpenMP region costs ~0.7 us even then, and small batches
    make a dozen of them per step. Unused arrays are NULL."""
    cdef Py_ssize_t rpb = _rows_per_block(n)
    cdef Py_ssize_t ncb = nblocks(d, CB), ntiles = nblocks(n, rpb) * ncb, t
    cdef int nt = _team(nthreads, ntiles)
    if nt <= 1:
        for t in range(ntiles):
            _pass_tile(kind, _tile(t, ncb, rpb, n, d), d, x, dout, out, mean, c1, c2, c3,
                       shift, part)
        return
    for t in prange(ntiles, schedule="static", num_threads=nt):
        _pass_tile(kind, _tile(t, ncb, rpb, n, d), d, x, dout, out, mean, c1, c2, c3,
                   shift, part)


# ----------------------------------------------------------------------------------
# public kernels
# ----------------------------------------------------------------------------------

cdef int _forward_train_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        return _bn_forward_train_impl[double](
            <double*>op.ptr[0], <double*>op.ptr[1], <double*>op.ptr[2], <double*>op.ptr[3],
            <double*>op.ptr[4], op.arg[0], op.arg[1], <double*>op.ptr[5],
            <double*>op.ptr[6], <double*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)
    return _bn_forward_train_impl[float](
        <float*>op.ptr[0], <float*>op.ptr[1], <float*>op.ptr[2], <float*>op.ptr[3],
        <float*>op.ptr[4], op.arg[0], op.arg[1], <float*>op.ptr[5], <float*>op.ptr[6],
        <float*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)


def bn_forward_train(x, gamma, beta, running_mean, running_var, double momentum,
                     double eps, out, mean, invstd, int nthreads=1):
    """Write out (N, D), mean (D,), invstd (D,); update running_mean/var (D,) in place
    (either may be None: no tracking). Requires N > 1."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, n, d, False, "x")
    op.ptr[1] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[2] = array_data(beta, tn, d, -1, False, "beta")
    op.ptr[3] = optional_data(running_mean, tn, d, -1, True, "running_mean")
    op.ptr[4] = optional_data(running_var, tn, d, -1, True, "running_var")
    op.ptr[5] = array_data(out, tn, n, d, True, "out")
    op.ptr[6] = array_data(mean, tn, d, -1, True, "mean")
    op.ptr[7] = array_data(invstd, tn, d, -1, True, "invstd")
    op.dim[0], op.dim[1] = n, d
    op.flt, op.nthreads, op.arg[0], op.arg[1] = tn == cnp.NPY_DOUBLE, nthreads, momentum, eps
    op.run = _forward_train_op
    submit(&op)


cdef int _bn_forward_train_impl(const floating* x, const floating* gamma,
                                const floating* beta, floating* running_mean,
                                floating* running_var, double momentum, double eps,
                                floating* out, floating* mean, floating* invstd,
                                Py_ssize_t n, Py_ssize_t d, int nthreads) noexcept nogil:
    if n == 0 or d == 0:
        return 0
    cdef Py_ssize_t nrb = nblocks(n, _rows_per_block(n)), j
    cdef bint track_mean = running_mean != NULL
    cdef bint track_var = running_var != NULL
    cdef const floating* px = x
    cdef floating* pout = out
    cdef double dm, var, dn = <double>n
    cdef floating keep = <floating>(1.0 - momentum), mom = <floating>momentum
    cdef floating unbias = <floating>(dn / (dn - 1.0))   # N > 1 (inf for N = 1)
    cdef floating var_f
    # scratch: shift (d) | acc1 (d) | acc2 (d) | partials (nrb, 2, d)   (double)
    #          scale (d)                                                   (floating)
    cdef double* work = <double*>malloc((3 + 2 * nrb) * d * sizeof(double))
    cdef floating* scale = <floating*>malloc(d * sizeof(floating))
    if work == NULL or scale == NULL:
        free(work)
        free(scale)
        return -1
    cdef double* shift = work
    cdef double* acc1 = work + d
    cdef double* acc2 = work + 2 * d
    cdef double* part = work + 3 * d
    for j in range(d):
        shift[j] = px[j]
    _run_pass(PASS_SUMS, n, d, nthreads, px, NULL, NULL, NULL, NULL, NULL, NULL, shift,
              part)
    _combine(part, nrb, d, acc1, acc2)
    for j in range(d):
        dm = acc1[j] / dn
        var = acc2[j] / dn - dm * dm
        if var < 0.0:        # rounding only; NaN passes through
            var = 0.0
        mean[j] = <floating>(shift[j] + dm)
        invstd[j] = <floating>(1.0 / sqrt(var + eps))
        scale[j] = invstd[j] * gamma[j]
        if track_mean:
            running_mean[j] = running_mean[j] * keep + mom * mean[j]
        if track_var:
            var_f = <floating>var
            running_var[j] = running_var[j] * keep + mom * var_f * unbias
    _run_pass(PASS_AFFINE, n, d, nthreads, px, NULL, pout, mean, scale, beta, NULL, NULL,
              NULL)
    free(work)
    free(scale)
    return 0


cdef int _forward_eval_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        return _bn_forward_eval_impl[double](
            <double*>op.ptr[0], <double*>op.ptr[1], <double*>op.ptr[2], <double*>op.ptr[3],
            <double*>op.ptr[4], op.arg[1], <double*>op.ptr[5], <double*>op.ptr[6],
            <double*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)
    return _bn_forward_eval_impl[float](
        <float*>op.ptr[0], <float*>op.ptr[1], <float*>op.ptr[2], <float*>op.ptr[3],
        <float*>op.ptr[4], op.arg[1], <float*>op.ptr[5], <float*>op.ptr[6],
        <float*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)


def bn_forward_eval(x, gamma, beta, running_mean, running_var, double eps, out, mean,
                    invstd, int nthreads=1):
    """Normalise with the running statistics; also write mean = running_mean and
    invstd = 1/sqrt(running_var + eps) (D,) for the backward."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, n, d, False, "x")
    op.ptr[1] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[2] = array_data(beta, tn, d, -1, False, "beta")
    op.ptr[3] = array_data(running_mean, tn, d, -1, False, "running_mean")
    op.ptr[4] = array_data(running_var, tn, d, -1, False, "running_var")
    op.ptr[5] = array_data(out, tn, n, d, True, "out")
    op.ptr[6] = array_data(mean, tn, d, -1, True, "mean")
    op.ptr[7] = array_data(invstd, tn, d, -1, True, "invstd")
    op.dim[0], op.dim[1] = n, d
    op.flt, op.nthreads, op.arg[1] = tn == cnp.NPY_DOUBLE, nthreads, eps
    op.run = _forward_eval_op
    submit(&op)


cdef int _bn_forward_eval_impl(const floating* x, const floating* gamma,
                               const floating* beta, const floating* running_mean,
                               const floating* running_var, double eps, floating* out,
                               floating* mean, floating* invstd, Py_ssize_t n,
                               Py_ssize_t d, int nthreads) noexcept nogil:
    if n == 0 or d == 0:
        return 0
    cdef Py_ssize_t j
    cdef const floating* px = x
    cdef floating* pout = out
    cdef floating one = 1, eps_f = <floating>eps
    cdef floating* scale = <floating*>malloc(d * sizeof(floating))
    if scale == NULL:
        return -1
    for j in range(d):
        mean[j] = running_mean[j]
        invstd[j] = one / f_sqrt(running_var[j] + eps_f)
        scale[j] = invstd[j] * gamma[j]
    _run_pass(PASS_AFFINE, n, d, nthreads, px, NULL, pout, mean, scale, beta, NULL, NULL,
              NULL)
    free(scale)
    return 0


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    if op.flt:
        return _bn_backward_impl[double](
            <double*>op.ptr[0], <double*>op.ptr[1], <double*>op.ptr[2], <double*>op.ptr[3],
            <double*>op.ptr[4], op.code, <double*>op.ptr[5], <double*>op.ptr[6],
            <double*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)
    return _bn_backward_impl[float](
        <float*>op.ptr[0], <float*>op.ptr[1], <float*>op.ptr[2], <float*>op.ptr[3],
        <float*>op.ptr[4], op.code, <float*>op.ptr[5], <float*>op.ptr[6],
        <float*>op.ptr[7], op.dim[0], op.dim[1], op.nthreads)


def bn_backward(dout, x, gamma, mean, invstd, bint training, dx, dgamma, dbeta,
                int nthreads=1):
    """Write dx (N, D), dgamma (D,), dbeta (D,) (dgamma/dbeta may be None)."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(dout, tn, n, d, False, "dout")
    op.ptr[1] = array_data(x, tn, n, d, False, "x")
    op.ptr[2] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[3] = array_data(mean, tn, d, -1, False, "mean")
    op.ptr[4] = array_data(invstd, tn, d, -1, False, "invstd")
    op.ptr[5] = array_data(dx, tn, n, d, True, "dx")
    op.ptr[6] = optional_data(dgamma, tn, d, -1, True, "dgamma")
    op.ptr[7] = optional_data(dbeta, tn, d, -1, True, "dbeta")
    op.dim[0], op.dim[1] = n, d
    op.flt, op.code, op.nthreads = tn == cnp.NPY_DOUBLE, training, nthreads
    op.run = _backward_op
    submit(&op)


cdef int _bn_backward_impl(const floating* dout, const floating* x,
                           const floating* gamma, const floating* mean,
                           const floating* invstd, bint training, floating* dx,
                           floating* dgamma, floating* dbeta, Py_ssize_t n,
                           Py_ssize_t d, int nthreads) noexcept nogil:
    cdef Py_ssize_t k
    if n == 0 or d == 0:
        for k in range(d):
            if dgamma != NULL:
                dgamma[k] = 0
            if dbeta != NULL:
                dbeta[k] = 0
        return 0
    cdef Py_ssize_t nrb = nblocks(n, _rows_per_block(n)), j
    cdef bint want_dg = dgamma != NULL
    cdef bint want_db = dbeta != NULL
    cdef bint sums = training or want_dg or want_db
    cdef const floating* pd = dout
    cdef const floating* px = x
    cdef floating* pdx = dx
    cdef double dn = <double>n, inv, gi, dg
    # scratch: acc1 (d) | acc2 (d) | partials (nrb, 2, d)   (double)
    #          ca, cb, cc (3 d)                                (floating)
    cdef double* work = <double*>malloc((2 + (2 * nrb if sums else 0)) * d * sizeof(double))
    cdef floating* coef = <floating*>malloc(3 * d * sizeof(floating))
    if work == NULL or coef == NULL:
        free(work)
        free(coef)
        return -1
    cdef double* acc1 = work
    cdef double* acc2 = work + d
    cdef double* part = work + 2 * d
    cdef floating* ca = coef
    cdef floating* cb = coef + d
    cdef floating* cc = coef + 2 * d
    if training:
        # pass 1: dbeta / dgamma sums
        _run_pass(PASS_GRAD_SUMS, n, d, nthreads, px, pd, NULL, mean, NULL, NULL, NULL,
                  NULL, part)
        _combine(part, nrb, d, acc1, acc2)
        for j in range(d):
            inv = invstd[j]
            dg = inv * acc2[j]
            gi = <double>gamma[j] * inv
            ca[j] = <floating>gi
            cb[j] = <floating>(-gi * inv * dg / dn)
            cc[j] = <floating>(-gi * acc1[j] / dn)
            if want_dg:
                dgamma[j] = <floating>dg
            if want_db:
                dbeta[j] = <floating>acc1[j]
        # pass 2: dx
        _run_pass(PASS_DX_TRAIN, n, d, nthreads, px, pd, pdx, mean, ca, cb, cc, NULL, NULL)
    else:
        for j in range(d):
            ca[j] = gamma[j] * invstd[j]
        if sums:
            # one pass: dx and the dbeta / dgamma sums
            _run_pass(PASS_DX_EVAL_SUMS, n, d, nthreads, px, pd, pdx, mean, ca, NULL, NULL,
                      NULL, part)
            _combine(part, nrb, d, acc1, acc2)
            for j in range(d):
                if want_dg:
                    dgamma[j] = <floating>(<double>invstd[j] * acc2[j])
                if want_db:
                    dbeta[j] = <floating>acc1[j]
        else:
            _run_pass(PASS_DX_EVAL, n, d, nthreads, NULL, pd, pdx, NULL, ca, NULL, NULL,
                      NULL, NULL)
    free(work)
    free(coef)
    return 0

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batch normalisation over the batch axis of (N, D) inputs, and per channel over
(N, H, W) of (N, C, H, W) inputs: compiled twin of `ref/batchnorm.py` (same names,
positional arguments and outputs, same formulas in the same order: every edge the
reference has -- inf, NaN, float32 overflow -- this has).

Work decomposition and determinism: the (N, D) array is cut into tiles of R rows x CB
columns, where R = RB (64), or more for very tall inputs (at most MAX_BLOCKS row blocks);
R depends on N only, never on the thread count. `run_tasks` hands out tiles. Per-feature
column sums are accumulated in double per tile, rows in order (four rows per step, see
_stat_sums), into a (row block, sum, column) partial array; the partials of a column
are then added in row-block order. Every sum has the same association for any team
size, so all outputs are bit-identical for nthreads = 1, 2, 3, ...

Passes over N x D data (float32 bytes moved per element in brackets):
  forward, train:  statistics pass reads x [4]; output pass reads x, writes out [8]
  forward, eval:   one pass reads x, writes out [8]
  backward, train: sums pass reads dout, x [8]; dx pass reads dout, x, writes dx [12]
  backward, eval:  one pass: dx = dout * gamma * invstd [8], fused with the dgamma /
                   dbeta sums tile by tile when those are wanted (reads x too [12])

2-d inputs, (N, C, S) with S = H W (the bn2d_* functions; PlanOp.dim[2] = S, 0 for
(N, D)), run the same passes and finishing steps over a different cut: a task is one
channel of a block of batch rows (SPAN_WORK elements or more, at most MAX_BLOCKS blocks;
by the shapes only), whose contiguous S-element spans the span kernels walk; their
sums run in LANES2D double lanes per task (fixed association), then go through the same
(row block, sum, channel) partials.

The tile kernels are AVX-512F / AVX2 / SSE2 clones picked at load (`simd_clones_void`;
identical bits): the double-precision sums vectorise 4 or 8 wide instead of SSE2's 2.

Statistics, in one pass, in double: s0 = sum x gives the mean (the reference's double
mean: [1e20, -1e20, 0, 1] has mean 0.25), and the variance comes from sums shifted by
one sample of the column, K = x[0, j] (0 when that sample is not finite):
s2 = sum((x - K)^2), var = s2/N - (mean - K)^2, with mean - K = s1/N, s1 = sum(x - K),
for float64 input (float32 input takes s0/N - K: its rounding is far below what float32
results can show, and the pass keeps one accumulator fewer). For float32 input every
x - K and (x - K)^2 is exact in double (unless the column spans more than 2^29 in
magnitude: then only tiny samples lose bits, which the variance cannot notice and the
mean, from s0, does not use), and the subtraction cannot cancel catastrophically:
s2/N = var + (mean - K)^2 and, K being one of the samples, (mean - K)^2 <= N var, so the
rounding error of s2 is amplified by at most N + 1 (typically ~2) -- even when
|mean| >> std, where the unshifted E[x^2] - E[x]^2 loses everything. Against an exact
two-pass this saves one full read of x; the tests check |mean| / std up to 1e5 against
an exact (fsum) reference.
dgamma / dbeta: sums of dout and dout * xhat, xhat = (x - mean) * invstd as the
reference forms it (so no term overflows where the reference's does not), each
four-row group formed in the input precision and accumulated in double.
"""
from cython cimport floating

cimport numpy as cnp
from libc.float cimport DBL_MIN, FLT_MIN
from libc.math cimport isfinite, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._buffers cimport array_data, float_type, optional_data
from ._common cimport fabs_, fsqrt, nblocks, run_tasks, simd_clones_void
from ._nchw cimport array4_data
from ._plan cimport PlanOp, submit

cnp.import_array()

cdef enum:
    RB = 64           # rows per tile (at least; see _rows_per_block)
    MAX_BLOCKS = 256  # row blocks at most: bounds the partial-sum scratch to 6 KiB x D
    CB = 2048         # columns per tile (contiguous run of one row inside a tile)
    SPAN_WORK = 1 << 14   # 2-d: elements per task (one channel of a block of rows), at least
    LANES2D = 8       # 2-d: double accumulators per sum and task


cdef struct Tile:
    Py_ssize_t rb, r0, r1, c0, c1


cdef inline Py_ssize_t _rows_per_block(Py_ssize_t n) noexcept nogil:
    """Rows per tile: RB, or more for very tall inputs so that there are at most
    MAX_BLOCKS row blocks. A function of N only (never of the thread count), rounded up to
    a multiple of 4 (the row grouping of the sums)."""
    cdef Py_ssize_t r = nblocks(n, MAX_BLOCKS)
    r = (r + 3) // 4 * 4
    return r if r > RB else RB


cdef inline Py_ssize_t _block_rows(Py_ssize_t n, Py_ssize_t s) noexcept nogil:
    """Rows per row block: _rows_per_block(n) for (N, D) inputs (s == 0); for (N, C, S)
    inputs enough rows for SPAN_WORK elements of a channel, at most MAX_BLOCKS blocks."""
    if s == 0:
        return _rows_per_block(n)
    return max(max(1, SPAN_WORK // s), nblocks(n, MAX_BLOCKS))


cdef inline void *_scratch(Py_ssize_t doubles, Py_ssize_t items,
                           size_t itemsize) noexcept nogil:
    """One block of `doubles` doubles followed by `items` items of `itemsize` bytes
    (NULL when out of memory; free() it)."""
    return malloc(doubles * sizeof(double) + items * itemsize)


# ----------------------------------------------------------------------------------
# tile kernels (rows r0..r1, columns c0..c1 of row-major arrays with row stride ld)
# ----------------------------------------------------------------------------------
cdef simd_clones_void _stat_sums(
        const floating* x, Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
        Py_ssize_t c1, const double* shift, double* s0, double* s1,
        double* s2) noexcept nogil:
    """s0[j] = sum_i x[i,j], s1[j] = sum_i (x[i,j] - shift[j]) (float64 input only: see
    _forward_train) and s2[j] = sum_i (x[i,j] - shift[j])^2 over the tile's rows
    (double). Rows are taken four at a time ((t0 + t1) + (t2 + t3) added to the
    accumulator: a fixed association, since tiles start at multiples of RB); leftover
    rows are added one by one."""
    cdef Py_ssize_t i = r0, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef double k, v0, v1, v2, v3, t0, t1, t2, t3
    for j in range(c0, c1):
        s0[j] = 0.0
        s1[j] = 0.0
        s2[j] = 0.0
    while i + 4 <= r1:
        x0 = x + i * ld
        x1 = x0 + ld
        x2 = x1 + ld
        x3 = x2 + ld
        for j in range(c0, c1):
            k = shift[j]
            v0 = x0[j]
            v1 = x1[j]
            v2 = x2[j]
            v3 = x3[j]
            t0 = v0 - k
            t1 = v1 - k
            t2 = v2 - k
            t3 = v3 - k
            s0[j] += (v0 + v1) + (v2 + v3)
            if floating is double:
                s1[j] += (t0 + t1) + (t2 + t3)
            s2[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
        i += 4
    while i < r1:
        x0 = x + i * ld
        for j in range(c0, c1):
            v0 = x0[j]
            t0 = v0 - shift[j]
            s0[j] += v0
            if floating is double:
                s1[j] += t0
            s2[j] += t0 * t0
        i += 1


cdef simd_clones_void _grad_sums(
        const floating* dout, const floating* x, Py_ssize_t ld, Py_ssize_t r0,
        Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1, const floating* mean,
        const floating* invstd, double* sdb, double* sdg) noexcept nogil:
    """sdb[j] = sum_i dout[i,j], sdg[j] = sum_i dout[i,j] * xhat[i,j] with
    xhat = (x - mean) * invstd. Rows four at a time from r0: the four-term group
    ((a0 + a1) + (a2 + a3)) is formed in the input precision and added to the double
    accumulator, leftover rows one by one (fixed association)."""
    cdef Py_ssize_t i = r0, j
    cdef const floating* d0
    cdef const floating* x0
    cdef floating mu, iv, g0, g1, g2, g3
    for j in range(c0, c1):
        sdb[j] = 0.0
        sdg[j] = 0.0
    while i + 4 <= r1:
        d0 = dout + i * ld
        x0 = x + i * ld
        for j in range(c0, c1):
            mu = mean[j]
            iv = invstd[j]
            g0 = d0[j]
            g1 = d0[ld + j]
            g2 = d0[2 * ld + j]
            g3 = d0[3 * ld + j]
            sdb[j] += <double>((g0 + g1) + (g2 + g3))
            sdg[j] += <double>((g0 * ((x0[j] - mu) * iv) + g1 * ((x0[ld + j] - mu) * iv))
                               + (g2 * ((x0[2 * ld + j] - mu) * iv)
                                  + g3 * ((x0[3 * ld + j] - mu) * iv)))
        i += 4
    while i < r1:
        d0 = dout + i * ld
        x0 = x + i * ld
        for j in range(c0, c1):
            g0 = d0[j]
            sdb[j] += <double>g0
            sdg[j] += <double>(g0 * ((x0[j] - mean[j]) * invstd[j]))
        i += 1


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
        Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1, const floating* mean,
        const floating* invstd, const floating* ca, const floating* cb,
        const floating* cc) noexcept nogil:
    """dx = ca * dout + cb * xhat + cc with xhat = (x - mean) * invstd: the training-mode
    gamma * invstd / N * (N dout - dbeta - xhat dgamma) with per-feature coefficients.
    invstd NULL: cb already holds cb * invstd (see _backward), one multiply less."""
    cdef Py_ssize_t i, j
    cdef const floating* drow
    cdef const floating* xrow
    cdef floating* orow
    for i in range(r0, r1):
        drow = dout + i * ld
        xrow = x + i * ld
        orow = dx + i * ld
        if invstd == NULL:
            for j in range(c0, c1):
                orow[j] = ca[j] * drow[j] + cb[j] * (xrow[j] - mean[j]) + cc[j]
        else:
            for j in range(c0, c1):
                orow[j] = ca[j] * drow[j] + cb[j] * ((xrow[j] - mean[j]) * invstd[j]) + cc[j]


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


cdef void _combine(const Pass *ps, Py_ssize_t nrb, double* acc) noexcept nogil:
    """acc[s, j] = sum over row blocks rb of the partials [rb, s, j], in rb order (laid
    out (nrb, nsums, d); acc (nsums, d))."""
    cdef Py_ssize_t rb, j, m = ps.nsums * ps.d
    for j in range(m):
        acc[j] = 0.0
    for rb in range(nrb):
        for j in range(m):
            acc[j] += ps.part[rb * m + j]


# ----------------------------------------------------------------------------------
# passes: every tile of an (N, D) pass, shared out by run_tasks
# ----------------------------------------------------------------------------------
cdef enum:
    PASS_STATS = 0         # s0, s1, s2 of x into the partials
    PASS_AFFINE = 1        # out = (x - mean) * c0 + c1
    PASS_GRAD_SUMS = 2     # dbeta / dgamma partial sums of dout, xhat (c0 = invstd)
    PASS_DX_TRAIN = 3      # out = c1 * dout + c2 * xhat + c3   (c0 = invstd, or NULL)
    PASS_DX_EVAL_SUMS = 4  # out = dout * c1, and the dbeta / dgamma partial sums
    PASS_DX_EVAL = 5       # out = dout * c1


ctypedef struct Pass:
    int kind
    bint flt
    Py_ssize_t n, d, rpb, ncb
    Py_ssize_t s           # 2-d: the span (H W) of a channel; 0: (N, D) input
    Py_ssize_t count       # values per feature / channel: N, or N S
    int nsums              # sums per column in the partials: 3 (statistics) or 2
    const void *x
    const void *dout
    void *out
    const void *mean
    const void *c[4]       # per-feature coefficients (see the pass kinds)
    const double *shift
    double *part           # (row blocks, sums, D)


cdef void _pass_tile(const Pass *ps, Tile tl, const floating* x, const floating* dout,
                     floating* out, const floating* mean, const floating* c0,
                     const floating* c1, const floating* c2,
                     const floating* c3) noexcept nogil:
    cdef Py_ssize_t d = ps.d
    cdef double* p = ps.part + tl.rb * ps.nsums * d if ps.part != NULL else NULL
    if ps.kind == PASS_STATS:
        _stat_sums(x, d, tl.r0, tl.r1, tl.c0, tl.c1, ps.shift, p, p + d, p + 2 * d)
    elif ps.kind == PASS_AFFINE:
        _affine(x, out, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c0, c1)
    elif ps.kind == PASS_GRAD_SUMS:
        _grad_sums(dout, x, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c0, p, p + d)
    elif ps.kind == PASS_DX_TRAIN:
        _dx_train(dout, x, out, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c0, c1, c2, c3)
    elif ps.kind == PASS_DX_EVAL_SUMS:
        # the sums first, then dx while the tile's dout is in cache (same sums as
        # training mode: bit-identical dgamma / dbeta)
        _grad_sums(dout, x, d, tl.r0, tl.r1, tl.c0, tl.c1, mean, c0, p, p + d)
        _dx_eval(dout, out, d, tl.r0, tl.r1, tl.c0, tl.c1, c1)
    else:
        _dx_eval(dout, out, d, tl.r0, tl.r1, tl.c0, tl.c1, c1)


# ----------------------------------------------------------------------------------
# span kernels (2-d): one channel, rows r0..r1; row i's span of s elements starts at
# i * ld of the (channel-offset) pointers; the channel's coefficients are scalars
# ----------------------------------------------------------------------------------
cdef inline void _lanes_add(double* acc, Py_ssize_t m, double* out) noexcept nogil:
    """out[0] = acc[0] + ... + acc[m - 1] in lane order."""
    cdef Py_ssize_t j
    cdef double t = 0.0
    for j in range(m):
        t += acc[j]
    out[0] = t


cdef simd_clones_void _span_stats(
        const floating* x, Py_ssize_t ld, Py_ssize_t s, Py_ssize_t r0, Py_ssize_t r1,
        double k, double* s0, double* s1, double* s2) noexcept nogil:
    """*s0 = sum x, *s1 = sum (x - k), *s2 = sum (x - k)^2 over the spans (double; the
    element at span offset j goes to lane j % LANES2D)."""
    cdef double a0[LANES2D]
    cdef double a1[LANES2D]
    cdef double a2[LANES2D]
    cdef double v, t
    cdef Py_ssize_t i, j, l
    cdef const floating* xs
    for l in range(LANES2D):
        a0[l] = 0.0
        a1[l] = 0.0
        a2[l] = 0.0
    for i in range(r0, r1):
        xs = x + i * ld
        j = 0
        while j + LANES2D <= s:
            for l in range(LANES2D):
                v = xs[j + l]
                t = v - k
                a0[l] += v
                a1[l] += t
                a2[l] += t * t
            j += LANES2D
        for l in range(s - j):
            v = xs[j + l]
            t = v - k
            a0[l] += v
            a1[l] += t
            a2[l] += t * t
    _lanes_add(a0, LANES2D, s0)
    _lanes_add(a1, LANES2D, s1)
    _lanes_add(a2, LANES2D, s2)


cdef simd_clones_void _span_grad_sums(
        const floating* dout, const floating* x, Py_ssize_t ld, Py_ssize_t s,
        Py_ssize_t r0, Py_ssize_t r1, floating mu, floating iv, double* sdb,
        double* sdg) noexcept nogil:
    """*sdb = sum dout, *sdg = sum dout * xhat, xhat = (x - mu) * iv formed in the input
    precision as the reference does (double lanes as _span_stats)."""
    cdef double adb[LANES2D]
    cdef double adg[LANES2D]
    cdef floating g
    cdef Py_ssize_t i, j, l
    cdef const floating* ds
    cdef const floating* xs
    for l in range(LANES2D):
        adb[l] = 0.0
        adg[l] = 0.0
    for i in range(r0, r1):
        ds = dout + i * ld
        xs = x + i * ld
        j = 0
        while j + LANES2D <= s:
            for l in range(LANES2D):
                g = ds[j + l]
                adb[l] += g
                adg[l] += g * ((xs[j + l] - mu) * iv)
            j += LANES2D
        for l in range(s - j):
            g = ds[j + l]
            adb[l] += g
            adg[l] += g * ((xs[j + l] - mu) * iv)
    _lanes_add(adb, LANES2D, sdb)
    _lanes_add(adg, LANES2D, sdg)


cdef simd_clones_void _span_map(
        int kind, const floating* x, const floating* dout, floating* out, Py_ssize_t ld,
        Py_ssize_t s, Py_ssize_t r0, Py_ssize_t r1, floating mu, floating iv, floating a,
        floating b, floating cc) noexcept nogil:
    """The elementwise passes on one channel, in the tile kernels' operation order:
    PASS_AFFINE out = (x - mu) * a + b (a = scale, b = beta); PASS_DX_TRAIN
    out = a * dout + b * ((x - mu) * iv) + cc; else (eval) out = dout * a
    (a = gamma * invstd)."""
    cdef Py_ssize_t i, j
    cdef const floating* xs
    cdef const floating* ds
    cdef floating* os
    for i in range(r0, r1):
        xs = x + i * ld
        ds = dout + i * ld
        os = out + i * ld
        if kind == PASS_AFFINE:
            for j in range(s):
                os[j] = (xs[j] - mu) * a + b
        elif kind == PASS_DX_TRAIN:
            for j in range(s):
                os[j] = a * ds[j] + b * ((xs[j] - mu) * iv) + cc
        else:
            for j in range(s):
                os[j] = ds[j] * a


cdef void _pass_spans(const Pass *ps, Tile tl, const floating* x, const floating* dout,
                      floating* out, const floating* mean, const floating* c0,
                      const floating* c1, const floating* c2,
                      const floating* c3) noexcept nogil:
    """_pass_tile's twin for (N, C, S) inputs: channel tl.c0 of rows tl.r0..tl.r1."""
    cdef Py_ssize_t d = ps.d, c = tl.c0, ld = ps.d * ps.s, at = tl.c0 * ps.s
    cdef double* p = ps.part + tl.rb * ps.nsums * d + c if ps.part != NULL else NULL
    cdef floating mu = mean[c] if mean != NULL else 0
    if ps.kind == PASS_STATS:
        _span_stats(x + at, ld, ps.s, tl.r0, tl.r1, ps.shift[c], p, p + d, p + 2 * d)
        return
    if ps.kind == PASS_GRAD_SUMS or ps.kind == PASS_DX_EVAL_SUMS:
        _span_grad_sums(dout + at, x + at, ld, ps.s, tl.r0, tl.r1, mu, c0[c], p, p + d)
    if ps.kind == PASS_AFFINE:
        _span_map(PASS_AFFINE, x + at, NULL, out + at, ld, ps.s, tl.r0, tl.r1, mu, 0,
                  c0[c], c1[c], 0)
    elif ps.kind == PASS_DX_TRAIN:
        # c0 NULL: c2 already holds c2 * invstd (see _backward); (x - mu) * 1 is exact
        _span_map(PASS_DX_TRAIN, x + at, dout + at, out + at, ld, ps.s, tl.r0, tl.r1, mu,
                  c0[c] if c0 != NULL else 1, c1[c], c2[c], c3[c])
    elif ps.kind != PASS_GRAD_SUMS:
        _span_map(PASS_DX_EVAL, NULL, dout + at, out + at, ld, ps.s, tl.r0, tl.r1, 0, 0,
                  c1[c], 0, 0)


cdef void _pass_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const Pass *ps = <const Pass *>ctx
    cdef Tile tl
    tl.rb = t // ps.ncb
    tl.r0 = tl.rb * ps.rpb
    tl.r1 = min(tl.r0 + ps.rpb, ps.n)
    if ps.s:     # one channel
        tl.c0 = t - tl.rb * ps.ncb
        tl.c1 = tl.c0 + 1
    else:
        tl.c0 = (t - tl.rb * ps.ncb) * CB
        tl.c1 = min(tl.c0 + CB, ps.d)
    if ps.s and ps.flt:
        _pass_spans(ps, tl, <const double *>ps.x, <const double *>ps.dout,
                    <double *>ps.out, <const double *>ps.mean, <const double *>ps.c[0],
                    <const double *>ps.c[1], <const double *>ps.c[2],
                    <const double *>ps.c[3])
    elif ps.s:
        _pass_spans(ps, tl, <const float *>ps.x, <const float *>ps.dout, <float *>ps.out,
                    <const float *>ps.mean, <const float *>ps.c[0], <const float *>ps.c[1],
                    <const float *>ps.c[2], <const float *>ps.c[3])
    elif ps.flt:
        _pass_tile(ps, tl, <const double *>ps.x, <const double *>ps.dout,
                   <double *>ps.out, <const double *>ps.mean, <const double *>ps.c[0],
                   <const double *>ps.c[1], <const double *>ps.c[2],
                   <const double *>ps.c[3])
    else:
        _pass_tile(ps, tl, <const float *>ps.x, <const float *>ps.dout, <float *>ps.out,
                   <const float *>ps.mean, <const float *>ps.c[0], <const float *>ps.c[1],
                   <const float *>ps.c[2], <const float *>ps.c[3])


cdef void _run_pass(Pass *ps, int kind, int nthreads) noexcept nogil:
    ps.kind = kind
    ps.nsums = 3 if kind == PASS_STATS else 2
    ps.rpb = _block_rows(ps.n, ps.s)
    ps.ncb = ps.d if ps.s else nblocks(ps.d, CB)
    run_tasks(_pass_task, ps, nblocks(ps.n, ps.rpb) * ps.ncb, nthreads)


cdef void _new_pass(Pass *ps, const PlanOp *op, const void *x, const void *dout,
                    void *out) noexcept nogil:
    memset(ps, 0, sizeof(Pass))
    ps.flt, ps.n, ps.d, ps.s = op.flt, op.dim[0], op.dim[1], op.dim[2]
    ps.count = ps.n * max(1, ps.s)
    ps.x, ps.dout, ps.out = x, dout, out


# ----------------------------------------------------------------------------------
# forward, training: ptr = (x, gamma, beta, running_mean, running_var, out, mean,
# invstd); dim = (N, D, 0) or (N, C, S); arg = (momentum, eps)
# ----------------------------------------------------------------------------------
cdef int _forward_train(const PlanOp *op, const floating* x, const floating* gamma,
                        floating* running_mean, floating* running_var, floating* mean,
                        floating* invstd) noexcept nogil:
    cdef Py_ssize_t n = op.dim[0], d = op.dim[1], step = max(1, op.dim[2]), j
    cdef Py_ssize_t nrb = nblocks(n, _block_rows(n, op.dim[2]))
    cdef double dm, var, dn = <double>(n * step)
    cdef floating keep = <floating>(1.0 - op.arg[0]), mom = <floating>op.arg[0]
    cdef floating unbias = <floating>(dn / (dn - 1.0))   # N > 1 (inf for N = 1)
    cdef Pass ps
    # scratch: shift (d) | sums (3, d) | partials (nrb, 3, d) (double) | scale (d)
    cdef double* work = <double*>_scratch((4 + 3 * nrb) * d, d, sizeof(floating))
    if work == NULL:
        return -1
    cdef floating* scale = <floating*>(work + (4 + 3 * nrb) * d)
    cdef double* shift = work
    cdef double* sums = work + d
    for j in range(d):
        shift[j] = x[j * step] if isfinite(x[j * step]) else 0.0
    _new_pass(&ps, op, x, NULL, NULL)
    ps.shift, ps.part = shift, work + 4 * d
    _run_pass(&ps, PASS_STATS, op.nthreads)
    _combine(&ps, nrb, sums)
    for j in range(d):
        # mean - K: for float32 input, from s0 (its rounding is far below float32's);
        # for float64 input, s1 keeps the bits a shifted sum does not lose
        if floating is float:
            dm = sums[j] / dn - shift[j]
        else:
            dm = sums[d + j] / dn
        var = sums[2 * d + j] / dn - dm * dm
        if var < 0.0:        # rounding only; NaN passes through
            var = 0.0
        mean[j] = <floating>(sums[j] / dn)
        invstd[j] = <floating>(1.0 / sqrt(var + op.arg[1]))
        scale[j] = invstd[j] * gamma[j]
        if running_mean != NULL:
            running_mean[j] = running_mean[j] * keep + mom * mean[j]
        if running_var != NULL:
            running_var[j] = running_var[j] * keep + mom * <floating>var * unbias
    _new_pass(&ps, op, x, NULL, op.ptr[5])
    ps.mean, ps.c[0], ps.c[1] = mean, scale, op.ptr[2]
    _run_pass(&ps, PASS_AFFINE, op.nthreads)
    free(work)
    return 0


cdef int _forward_train_op(const PlanOp *op) noexcept nogil:
    if op.dim[0] == 0 or op.dim[1] == 0:
        return 0
    if op.flt:
        return _forward_train(op, <double*>op.ptr[0], <double*>op.ptr[1],
                              <double*>op.ptr[3], <double*>op.ptr[4], <double*>op.ptr[6],
                              <double*>op.ptr[7])
    return _forward_train(op, <float*>op.ptr[0], <float*>op.ptr[1], <float*>op.ptr[3],
                          <float*>op.ptr[4], <float*>op.ptr[6], <float*>op.ptr[7])


def bn_forward_train(x, gamma, beta, running_mean, running_var, double momentum,
                     double eps, out, mean, invstd, int nthreads=1):
    """Write out (N, D), mean (D,), invstd (D,); update running_mean/var (D,) in place
    (either may be None: no tracking). Requires N > 1."""
    _train_call(x, gamma, beta, running_mean, running_var, momentum, eps, out, mean,
                invstd, nthreads, False)


def bn2d_forward_train(x, gamma, beta, running_mean, running_var, double momentum,
                       double eps, out, mean, invstd, int nthreads=1):
    """bn_forward_train per channel of x (N, C, H, W); out (N, C, H, W). N*H*W > 1."""
    _train_call(x, gamma, beta, running_mean, running_var, momentum, eps, out, mean,
                invstd, nthreads, True)


cdef int _train_call(x, gamma, beta, running_mean, running_var, double momentum,
                     double eps, out, mean, invstd, int nthreads, bint spatial) except -1:
    cdef int tn = float_type(x)
    cdef PlanOp op
    cdef Py_ssize_t d = _sizes(&op, x, spatial)
    op.ptr[0] = _batch_data(x, tn, x.shape, False, "x")
    op.ptr[1] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[2] = array_data(beta, tn, d, -1, False, "beta")
    op.ptr[3] = optional_data(running_mean, tn, d, -1, True, "running_mean")
    op.ptr[4] = optional_data(running_var, tn, d, -1, True, "running_var")
    op.ptr[5] = _batch_data(out, tn, x.shape, True, "out")
    op.ptr[6] = array_data(mean, tn, d, -1, True, "mean")
    op.ptr[7] = array_data(invstd, tn, d, -1, True, "invstd")
    op.flt, op.nthreads, op.arg[0], op.arg[1] = tn == cnp.NPY_DOUBLE, nthreads, momentum, eps
    op.run = _forward_train_op
    submit(&op)
    return 0


cdef Py_ssize_t _sizes(PlanOp *op, x, bint spatial) except -1:
    """Clear op and set its sizes from x: (N, D, 0) for (N, D), or (N, C, H W) for
    (N, C, H, W) when `spatial`; returns D (or C)."""
    memset(op, 0, sizeof(PlanOp))
    if x.ndim != (4 if spatial else 2) or (spatial and x.shape[2] * x.shape[3] == 0):
        raise ValueError("fastnn.kernels: batch norm expects x of %s, got shape %s"
                         % ("non-empty (N, C, H, W)" if spatial else "(N, D)", x.shape))
    op.dim[0], op.dim[1] = x.shape[0], x.shape[1]
    op.dim[2] = x.shape[2] * x.shape[3] if spatial else 0
    return op.dim[1]


cdef void *_batch_data(a, int tn, shape, bint writable, str name) except NULL:
    """The data of an array of x's shape, (N, D) or (N, C, H, W), checked."""
    if len(shape) == 4:
        return array4_data(a, tn, shape[0], shape[1], shape[2], shape[3], writable, name)
    return array_data(a, tn, shape[0], shape[1], writable, name)


# ----------------------------------------------------------------------------------
# forward, eval: as training, arg[1] = eps
# ----------------------------------------------------------------------------------
cdef int _forward_eval(const PlanOp *op, const floating* gamma,
                       const floating* running_mean, const floating* running_var,
                       floating* mean, floating* invstd) noexcept nogil:
    cdef Py_ssize_t j, d = op.dim[1]
    cdef floating eps = <floating>op.arg[1]
    cdef Pass ps
    cdef floating* scale = <floating*>malloc(d * sizeof(floating))
    if scale == NULL:
        return -1
    for j in range(d):
        mean[j] = running_mean[j]
        invstd[j] = <floating>1 / fsqrt(running_var[j] + eps)
        scale[j] = invstd[j] * gamma[j]
    _new_pass(&ps, op, op.ptr[0], NULL, op.ptr[5])
    ps.mean, ps.c[0], ps.c[1] = mean, scale, op.ptr[2]
    _run_pass(&ps, PASS_AFFINE, op.nthreads)
    free(scale)
    return 0


cdef int _forward_eval_op(const PlanOp *op) noexcept nogil:
    if op.dim[0] == 0 or op.dim[1] == 0:
        return 0
    if op.flt:
        return _forward_eval(op, <double*>op.ptr[1], <double*>op.ptr[3],
                             <double*>op.ptr[4], <double*>op.ptr[6], <double*>op.ptr[7])
    return _forward_eval(op, <float*>op.ptr[1], <float*>op.ptr[3], <float*>op.ptr[4],
                         <float*>op.ptr[6], <float*>op.ptr[7])


def bn_forward_eval(x, gamma, beta, running_mean, running_var, double eps, out, mean,
                    invstd, int nthreads=1):
    """Normalise with the running statistics; also write mean = running_mean and
    invstd = 1/sqrt(running_var + eps) (D,) for the backward."""
    _eval_call(x, gamma, beta, running_mean, running_var, eps, out, mean, invstd, nthreads,
               False)


def bn2d_forward_eval(x, gamma, beta, running_mean, running_var, double eps, out, mean,
                      invstd, int nthreads=1):
    """bn_forward_eval per channel of x (N, C, H, W); out (N, C, H, W)."""
    _eval_call(x, gamma, beta, running_mean, running_var, eps, out, mean, invstd, nthreads,
               True)


cdef int _eval_call(x, gamma, beta, running_mean, running_var, double eps, out, mean,
                    invstd, int nthreads, bint spatial) except -1:
    cdef int tn = float_type(x)
    cdef PlanOp op
    cdef Py_ssize_t d = _sizes(&op, x, spatial)
    op.ptr[0] = _batch_data(x, tn, x.shape, False, "x")
    op.ptr[1] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[2] = array_data(beta, tn, d, -1, False, "beta")
    op.ptr[3] = array_data(running_mean, tn, d, -1, False, "running_mean")
    op.ptr[4] = array_data(running_var, tn, d, -1, False, "running_var")
    op.ptr[5] = _batch_data(out, tn, x.shape, True, "out")
    op.ptr[6] = array_data(mean, tn, d, -1, True, "mean")
    op.ptr[7] = array_data(invstd, tn, d, -1, True, "invstd")
    op.flt, op.nthreads, op.arg[1] = tn == cnp.NPY_DOUBLE, nthreads, eps
    op.run = _forward_eval_op
    submit(&op)
    return 0


# ----------------------------------------------------------------------------------
# backward: ptr = (dout, x, gamma, mean, invstd, dx, dgamma, dbeta); dim as forward;
# code = training
# ----------------------------------------------------------------------------------
cdef bint _fold_invstd(floating* cb, const floating* invstd, Py_ssize_t d) noexcept nogil:
    """cb *= invstd (rounded once, from double) when every product keeps its precision
    (a normal number, or zero because cb is), so that the dx pass skips forming xhat;
    otherwise (huge variances: invstd^2 underflows) leave cb alone and return False."""
    cdef Py_ssize_t j
    cdef floating f
    cdef floating tiny = FLT_MIN if floating is float else DBL_MIN
    for j in range(d):
        f = <floating>(<double>cb[j] * invstd[j])
        if not (fabs_(f) >= tiny and isfinite(f)) and cb[j] != 0 and cb[j] == cb[j]:
            return False
    for j in range(d):
        cb[j] = <floating>(<double>cb[j] * invstd[j])
    return True


cdef int _backward(const PlanOp *op, const floating* gamma, const floating* invstd,
                   floating* dgamma, floating* dbeta) noexcept nogil:
    cdef Py_ssize_t n = op.dim[0], d = op.dim[1], j
    cdef Py_ssize_t nrb = nblocks(n, _block_rows(n, op.dim[2]))
    cdef bint sums = op.code or dgamma != NULL or dbeta != NULL
    cdef Pass ps
    # scratch: sums (2, d) | partials (nrb, 2, d) (double) | ca, cb, cc (3 d)
    cdef Py_ssize_t nd = (2 + (2 * nrb if sums else 0)) * d
    cdef double* work = <double*>_scratch(nd, 3 * d, sizeof(floating))
    if work == NULL:
        return -1
    cdef floating* ca = <floating*>(work + nd)
    cdef floating* cb = ca + d
    cdef floating* cc = ca + 2 * d
    cdef floating dg, db, count = <floating>(n * max(1, op.dim[2]))
    _new_pass(&ps, op, op.ptr[1], op.ptr[0], op.ptr[5])
    ps.mean, ps.c[0], ps.c[1], ps.part = op.ptr[3], invstd, ca, work + 2 * d
    for j in range(d):
        ca[j] = gamma[j] * invstd[j]
    if sums:      # dbeta, dgamma (eval mode: with dx in the same pass)
        _run_pass(&ps, PASS_GRAD_SUMS if op.code else PASS_DX_EVAL_SUMS, op.nthreads)
        _combine(&ps, nrb, work)
        for j in range(d):
            db = <floating>work[j]
            dg = <floating>work[d + j]
            cb[j] = -ca[j] * dg / count
            cc[j] = -ca[j] * db / count
            if dbeta != NULL:
                dbeta[j] = db
            if dgamma != NULL:
                dgamma[j] = dg
    if op.code:
        if _fold_invstd(cb, invstd, d):
            ps.c[0] = NULL
        ps.c[2], ps.c[3] = cb, cc
        _run_pass(&ps, PASS_DX_TRAIN, op.nthreads)
    elif not sums:
        _run_pass(&ps, PASS_DX_EVAL, op.nthreads)
    free(work)
    return 0


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    cdef size_t itemsize = sizeof(double) if op.flt else sizeof(float)
    if op.dim[0] == 0 or op.dim[1] == 0:
        if op.ptr[6] != NULL:
            memset(op.ptr[6], 0, op.dim[1] * itemsize)
        if op.ptr[7] != NULL:
            memset(op.ptr[7], 0, op.dim[1] * itemsize)
        return 0
    if op.flt:
        return _backward(op, <double*>op.ptr[2], <double*>op.ptr[4], <double*>op.ptr[6],
                         <double*>op.ptr[7])
    return _backward(op, <float*>op.ptr[2], <float*>op.ptr[4], <float*>op.ptr[6],
                     <float*>op.ptr[7])


def bn_backward(dout, x, gamma, mean, invstd, bint training, dx, dgamma, dbeta,
                int nthreads=1):
    """Write dx (N, D), dgamma (D,), dbeta (D,) (dgamma/dbeta may be None)."""
    _backward_call(dout, x, gamma, mean, invstd, training, dx, dgamma, dbeta, nthreads,
                   False)


def bn2d_backward(dout, x, gamma, mean, invstd, bint training, dx, dgamma, dbeta,
                  int nthreads=1):
    """bn_backward per channel: dx (N, C, H, W), dgamma (C,), dbeta (C,) (may be None)."""
    _backward_call(dout, x, gamma, mean, invstd, training, dx, dgamma, dbeta, nthreads,
                   True)


cdef int _backward_call(dout, x, gamma, mean, invstd, bint training, dx, dgamma, dbeta,
                        int nthreads, bint spatial) except -1:
    cdef int tn = float_type(x)
    cdef PlanOp op
    cdef Py_ssize_t d = _sizes(&op, x, spatial)
    op.ptr[0] = _batch_data(dout, tn, x.shape, False, "dout")
    op.ptr[1] = _batch_data(x, tn, x.shape, False, "x")
    op.ptr[2] = array_data(gamma, tn, d, -1, False, "gamma")
    op.ptr[3] = array_data(mean, tn, d, -1, False, "mean")
    op.ptr[4] = array_data(invstd, tn, d, -1, False, "invstd")
    op.ptr[5] = _batch_data(dx, tn, x.shape, True, "dx")
    op.ptr[6] = optional_data(dgamma, tn, d, -1, True, "dgamma")
    op.ptr[7] = optional_data(dbeta, tn, d, -1, True, "dbeta")
    op.flt, op.code, op.nthreads = tn == cnp.NPY_DOUBLE, training, nthreads
    op.run = _backward_op
    submit(&op)
    return 0

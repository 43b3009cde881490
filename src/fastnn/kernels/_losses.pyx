# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Losses: Cython twin of `ref/losses.py` (same names, positional arguments,
gradient written into the preallocated array, batch-mean loss returned as a float).

Determinism: the loss is a sum of partial values whose boundaries never depend on the
thread count -- one value per row for softmax_cross_entropy / multiclass_hinge, one per
fixed block of SUM_BLOCK elements for bce_with_logits / mse -- computed in double by
whichever thread owns the row / block, stored, then added sequentially in index order.
Results are bit-identical for any nthreads (sums inside a row / block use _reduce's
lane_sum, whose association depends only on the length).

exp and log1p: softmax and BCE only need exp(x) for x <= 0 and log1p(e) for e in [0, 1];
they use _reduce's branch-free polynomial versions (<= 3 ulp from libm, vectorised by
GCC, unlike libm calls). exp flushes to exactly 0 below -88 (float32) / -709 (float64)
where libm would return a subnormal; exp(-inf) = 0 and NaN propagates.

bce_with_logits and mse accept arrays of any shape (C-contiguous, all the same shape):
they are processed as flat views (`a.reshape(-1)`, no copy).
Labels are int64 already range-checked by the caller; they are used as given.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from ._reduce cimport (SUM_BLOCK, f_expneg, f_log1p01, lane_sum, nblocks, seq_sum,
                      sigmoid_from_exp, vmax)

cdef enum:
    SUB = 256   # elements per stack-buffered sub-block (terms summed with lane_sum)

import numpy as _np

_F64 = _np.dtype(_np.float64)


cdef inline int _team(int nthreads, Py_ssize_t nwork) noexcept nogil:
    if nthreads < 1:
        return 1
    if nwork < nthreads:
        return <int>nwork
    return nthreads


cdef double* _scratch(Py_ssize_t n) except NULL:
    cdef double* p = <double*>malloc((n if n > 0 else 1) * sizeof(double))
    if p == NULL:
        raise MemoryError()
    return p


def labels_in_range(labels, Py_ssize_t c):
    """Whether every label (int64, (N,)) is in [0, c): one branch-free scan (with the
    GIL: it is the check made before a kernel uses labels as indices)."""
    cdef const int64_t[::1] lab = labels
    cdef Py_ssize_t i
    cdef int64_t bad = 0
    for i in range(lab.shape[0]):
        bad |= (lab[i] < 0) | (lab[i] >= c)
    return bad == 0


# ----------------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------------

cdef double _softmax_ce_row(const floating* z, floating* dz, Py_ssize_t c, int64_t y,
                            floating m, double inv_n) noexcept nogil:
    """One row: dz = (softmax(z) - onehot(y)) / N; returns logsumexp(z) - z[y] (double),
    m = vmax(z, c). Stable: exponents are z - max(z) <= 0. The max is exact in any order
    (SIMD lanes); a NaN skipped by its comparisons still reaches the exp sum, so NaN
    anywhere in z gives a NaN loss and a NaN gradient row."""
    cdef Py_ssize_t j
    cdef floating ey, kk
    cdef double s, r
    for j in range(c):
        dz[j] = f_expneg(z[j] - m)
    s = lane_sum(dz, c)
    ey = dz[y]
    r = 1.0 / s
    kk = <floating>(r * inv_n)
    for j in range(c):
        dz[j] = dz[j] * kk
    dz[y] = <floating>((<double>ey * r - 1.0) * inv_n)
    return log(s) - (<double>z[y] - <double>m)


cdef inline bint _argmax_is(const floating* z, Py_ssize_t c, floating m,
                            int64_t y) noexcept nogil:
    """Whether NumPy's argmax of the row (the first NaN if there is one, else the first
    maximum m) is y."""
    cdef Py_ssize_t j, first = -1
    for j in range(c):
        if z[j] != z[j]:
            first = j
            break
    if first < 0:
        for j in range(c):
            if z[j] == m:
                first = j
                break
    return first == y


cdef void _softmax_ce_rows(const floating* pz, floating* pdz, Py_ssize_t c,
                           const int64_t* labels, double inv_n, double* rows, double* hit,
                           bint count, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows [r0, r1): their losses into rows[], and (count) 1.0 / 0.0 into hit[] for
    whether their argmax is their label."""
    cdef Py_ssize_t i
    cdef floating m
    for i in range(r0, r1):
        m = vmax(pz + i * c, c)
        rows[i] = _softmax_ce_row(pz + i * c, pdz + i * c, c, labels[i], m, inv_n)
        if count:
            hit[i] = _argmax_is(pz + i * c, c, m, labels[i])


def softmax_cross_entropy(logits, labels, dlogits, int nthreads=1, bint count=False):
    """logits (N, C), labels (N,) int64 in [0, C) -> loss; writes dlogits (N, C). With
    count, -> (loss, number of rows whose argmax is their label)."""
    if logits.dtype == _F64:
        res = _softmax_cross_entropy_impl[double](logits, labels, dlogits, nthreads, count)
    else:
        res = _softmax_cross_entropy_impl[float](logits, labels, dlogits, nthreads, count)
    return res if count else res[0]


cdef tuple _softmax_cross_entropy_impl(const floating[:, ::1] logits,
                                       const int64_t[::1] labels, floating[:, ::1] dlogits,
                                       int nthreads, bint count):
    cdef Py_ssize_t n = logits.shape[0], c = logits.shape[1], i, hits = 0
    if n == 0 or c == 0:
        return float("nan"), 0
    cdef int nt = _team(nthreads, n)
    cdef double inv_n = 1.0 / <double>n, total
    cdef const floating* pz = &logits[0, 0]
    cdef floating* pdz = &dlogits[0, 0]
    cdef double* rows = _scratch(2 * n if count else n)   # losses | hits (0/1)
    cdef double* hit = rows + n
    try:
        with nogil:
            if nt <= 1:     # no OpenMP region: ~0.7 us even for one thread
                _softmax_ce_rows(pz, pdz, c, &labels[0], inv_n, rows, hit, count, 0, n)
            else:
                for i in prange(n, schedule="static", num_threads=nt):
                    _softmax_ce_rows(pz, pdz, c, &labels[0], inv_n, rows, hit, count, i,
                                     i + 1)
            total = seq_sum(rows, n)
            if count:
                for i in range(n):
                    hits += <Py_ssize_t>hit[i]
    finally:
        free(rows)
    return total / <double>n, hits


# ----------------------------------------------------------------------------------
# multiclass hinge (cs231n SVM)
# ----------------------------------------------------------------------------------

cdef double _hinge_span(const floating* s, floating* ds, Py_ssize_t j0, Py_ssize_t j1,
                        floating sy, floating margin, floating g,
                        Py_ssize_t* count) noexcept nogil:
    """Classes j0..j1 (all != y): margins (s_j - s_y) + margin; ds_j = g where active
    (margin > 0), else 0. Returns the sum of the active margins (double, lane_sum per
    sub-block of SUB) and adds the number of active classes to count."""
    cdef floating buf[SUB]
    cdef floating mj
    cdef Py_ssize_t j = j0, k, m, cnt = 0
    cdef double acc = 0.0
    while j < j1:
        m = SUB if j1 - j > SUB else j1 - j
        for k in range(m):
            mj = (s[j + k] - sy) + margin
            buf[k] = 0 if mj <= 0 else mj      # NaN margins propagate to the loss
            ds[j + k] = g if mj > 0 else 0
        for k in range(m):
            cnt += 1 if buf[k] > 0 else 0
        acc += lane_sum(buf, m)
        j += SUB
    count[0] += cnt
    return acc


cdef double _hinge_row(const floating* s, floating* ds, Py_ssize_t c, int64_t y,
                       floating margin, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t count = 0
    cdef floating sy = s[y]
    cdef floating g = (<floating>1) / <floating>n
    cdef double acc = _hinge_span(s, ds, 0, y, sy, margin, g, &count)
    acc += _hinge_span(s, ds, y + 1, c, sy, margin, g, &count)
    ds[y] = -(<floating>count) / <floating>n
    return acc


def multiclass_hinge(scores, labels, margin, dscores, int nthreads=1):
    """scores (N, C), labels (N,) int64 -> loss; writes dscores (N, C).
    As the reference, a NaN margin is inactive (contributes 0 loss and 0 gradient)."""
    if scores.dtype == _F64:
        return _multiclass_hinge_impl[double](scores, labels, margin, dscores, nthreads)
    return _multiclass_hinge_impl[float](scores, labels, margin, dscores, nthreads)


cdef object _multiclass_hinge_impl(const floating[:, ::1] scores, const int64_t[::1] labels,
                                   double margin, floating[:, ::1] dscores, int nthreads=1):
    cdef Py_ssize_t n = scores.shape[0], c = scores.shape[1], i
    if n == 0 or c == 0:
        return float("nan")
    cdef int nt = _team(nthreads, n)
    cdef floating mg = <floating>margin
    cdef double total
    cdef const floating* ps = &scores[0, 0]
    cdef floating* pds = &dscores[0, 0]
    cdef double* rows = _scratch(n)
    try:
        with nogil:
            if nt <= 1:
                for i in range(n):
                    rows[i] = _hinge_row(ps + i * c, pds + i * c, c, labels[i], mg, n)
            else:
                for i in prange(n, schedule="static", num_threads=nt):
                    rows[i] = _hinge_row(ps + i * c, pds + i * c, c, labels[i], mg, n)
            total = seq_sum(rows, n)
    finally:
        free(rows)
    return total / <double>n


# ----------------------------------------------------------------------------------
# binary cross-entropy with logits, mean squared error (flat, fixed element blocks)
# ----------------------------------------------------------------------------------

cdef double _bce_block(const floating* x, const floating* t, floating* dx, Py_ssize_t lo,
                       Py_ssize_t hi, floating size) noexcept nogil:
    """Terms max(x,0) - x t + log1p(exp(-|x|)) summed in double (lane_sum per sub-block
    of SUB); dx = (sigmoid(x) - t) / size. One exp per element, shared by the term and
    the stable sigmoid; exp and log1p are the vectorisable ones of _reduce."""
    cdef floating buf[SUB]
    cdef floating xi, ti, e, zero = 0
    cdef Py_ssize_t i = lo, k, m
    cdef double acc = 0.0
    while i < hi:
        m = SUB if hi - i > SUB else hi - i
        for k in range(m):
            xi = x[i + k]
            ti = t[i + k]
            e = f_expneg(-xi if xi >= 0 else xi)
            buf[k] = ((xi if xi > zero else zero) - xi * ti) + f_log1p01(e)
            dx[i + k] = (sigmoid_from_exp(xi, e) - ti) / size
        acc += lane_sum(buf, m)
        i += SUB
    return acc


def _bce_flat(x, t, dx, nthreads):
    if x.dtype == _F64:
        return _bce_flat_impl[double](x, t, dx, nthreads)
    return _bce_flat_impl[float](x, t, dx, nthreads)


cdef object _bce_flat_impl(const floating[::1] x, const floating[::1] t, floating[::1] dx,
                           int nthreads):
    cdef Py_ssize_t n = x.shape[0], nb = nblocks(n, SUM_BLOCK), b
    if n == 0:
        return float("nan")
    cdef int nt = _team(nthreads, nb)
    cdef floating size = <floating>n
    cdef double total
    cdef double* parts = _scratch(nb)
    try:
        with nogil:
            if nt <= 1:
                for b in range(nb):
                    parts[b] = _bce_block(&x[0], &t[0], &dx[0], b * SUM_BLOCK,
                                          min((b + 1) * SUM_BLOCK, n), size)
            else:
                for b in prange(nb, schedule="static", num_threads=nt):
                    parts[b] = _bce_block(&x[0], &t[0], &dx[0], b * SUM_BLOCK,
                                          min((b + 1) * SUM_BLOCK, n), size)
            total = seq_sum(parts, nb)
    finally:
        free(parts)
    return total / <double>n


def bce_with_logits(logits, targets, dlogits, int nthreads=1):
    """logits, targets: same shape -> loss (mean over all elements); writes dlogits."""
    return _bce_flat(logits.reshape(-1), targets.reshape(-1), dlogits.reshape(-1),
                     nthreads)


cdef double _mse_block(const floating* p, const floating* t, floating* dp, Py_ssize_t lo,
                       Py_ssize_t hi, floating scale) noexcept nogil:
    """dp = (p - t) * scale; returns sum (p - t)^2 in double. Eight fixed interleaved
    accumulators (combined in a fixed order) let the loop vectorize deterministically."""
    cdef Py_ssize_t i, k, m = lo + ((hi - lo) // 8) * 8
    cdef floating di
    cdef double acc[8]
    cdef double s
    for k in range(8):
        acc[k] = 0.0
    i = lo
    while i < m:
        for k in range(8):
            di = p[i + k] - t[i + k]
            acc[k] += <double>di * <double>di
            dp[i + k] = di * scale
        i += 8
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for i in range(m, hi):
        di = p[i] - t[i]
        s += <double>di * <double>di
        dp[i] = di * scale
    return s


def _mse_flat(p, t, dp, nthreads):
    if p.dtype == _F64:
        return _mse_flat_impl[double](p, t, dp, nthreads)
    return _mse_flat_impl[float](p, t, dp, nthreads)


cdef object _mse_flat_impl(const floating[::1] p, const floating[::1] t, floating[::1] dp,
                           int nthreads):
    cdef Py_ssize_t n = p.shape[0], nb = nblocks(n, SUM_BLOCK), b
    if n == 0:
        return float("nan")
    cdef int nt = _team(nthreads, nb)
    cdef floating scale = <floating>(2.0 / <double>n)
    cdef double total
    cdef double* parts = _scratch(nb)
    try:
        with nogil:
            if nt <= 1:
                for b in range(nb):
                    parts[b] = _mse_block(&p[0], &t[0], &dp[0], b * SUM_BLOCK,
                                          min((b + 1) * SUM_BLOCK, n), scale)
            else:
                for b in prange(nb, schedule="static", num_threads=nt):
                    parts[b] = _mse_block(&p[0], &t[0], &dp[0], b * SUM_BLOCK,
                                          min((b + 1) * SUM_BLOCK, n), scale)
            total = seq_sum(parts, nb)
    finally:
        free(parts)
    return total / <double>n


def mse(pred, target, dpred, int nthreads=1):
    """pred, target: same shape -> loss (mean over all elements); writes dpred."""
    return _mse_flat(pred.reshape(-1), target.reshape(-1), dpred.reshape(-1), nthreads)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Losses: compiled twin of `ref/losses.py` (same names, positional arguments, gradient
written into the preallocated array, batch-mean loss returned as a float).

Determinism: the loss is a sum of partial values whose boundaries never depend on the
thread count -- one value per row for softmax_cross_entropy / multiclass_hinge (a task
takes a block of whole rows, ROW_BLOCK elements or one row), one per
fixed block of SUM_BLOCK elements for bce_with_logits / mse -- computed in double by
whichever thread owns the row / block, stored, then added in index order. Results are
bit-identical for any nthreads (sums inside a row / block use _reduce's lane_sum, whose
association depends only on the length).

exp and log1p: softmax and BCE need exp(x) for x <= 0 and log1p(e) for e in [0, 1]; they
use _common.h's branch-free versions (a few ulp from libm, vectorised by GCC, unlike
libm calls). exp flushes to exactly 0 below about -87.7 (float32) / -708.7 (float64),
where libm would return a number too small to change any of these sums; exp(-inf) = 0
and NaN propagates.

bce_with_logits and mse accept arrays of any shape (C-contiguous, all the same shape):
they are processed as flat arrays. Labels are int64 already range-checked by the caller
(`labels_in_range`); the kernels use them as given.

Weights (torch's semantics): every kernel takes row weights `sample_weight` (N,), the
per-row losses also class weights `class_weight` (C,), both of the input's dtype (None:
ones). Row i weighs r_i = sample_weight[i] * class_weight[label_i]; the loss is
sum_i r_i l_i / sum_i r_i (l_i a row's loss; for the flat losses the mean over the row's
elements) and row i's gradient is scaled by r_i / sum_i r_i, inside the same pass over the
inputs. The total sum_i r_i is added in double (lane_sum) before that pass, which runs
only when it is positive (ZeroDivisionError otherwise). Unweighted calls run exactly the
arithmetic they always did.
"""
from cython cimport floating

cimport numpy as cnp
from libc.math cimport log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._activations cimport sigmoid_from_exp
from ._buffers cimport array_data, float_type, optional_data, rows
from ._common cimport (fabs_, fexp_neg, flog1p01, nblocks, run_tasks, sel,
                       simd_clones_flat_void, task_fn)
from ._plan cimport PlanOp
from ._reduce cimport lane_sum, seq_sum, vmax

cnp.import_array()

cdef enum:
    SUB = 256          # elements per stack-buffered sub-block (terms summed with lane_sum)
    SUM_BLOCK = 4096   # elements per partial sum of the flat losses (bce, mse)
    FILL = 16          # elements per store when spreading row weights over elements
    ROW_BLOCK = 2048   # elements per task of the per-row losses (whole rows, one at least)


def labels_in_range(labels, Py_ssize_t c):
    """Whether every label (int64, (N,)) is in [0, c): one branch-free scan (with the
    GIL: it is the check made before a kernel uses labels as indices)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray?>labels), i
    cdef const int64_t *lab = <const int64_t *>array_data(labels, cnp.NPY_INT64, n, -1,
                                                          False, "labels")
    cdef int64_t bad = 0
    for i in range(n):
        bad |= (lab[i] < 0) | (lab[i] >= c)
    return bad == 0


# A loss call packed as a PlanOp: ptr = (input, labels or targets, gradient, result,
# row weights or NULL, class weights or NULL); result is double[3]: the loss sum, (softmax
# with code = 1) the argmax hits, and the loss's denominator (dim[0]; weighted: the weight
# total, times the row length for the flat losses); dim = (rows, columns) (flat: elements,
# elements per row); arg[0] = the hinge margin / 1 for mse.
ctypedef struct LossJob:
    const PlanOp *op
    double *part       # per row (per-row losses) or per block (flat): its loss sum
    double *hit        # softmax with code: per row, 1.0 when its argmax is its label
    double *weight     # weighted per-row losses: r_i of every row (else NULL)
    double scale       # weighted: 1 / the loss's denominator
    Py_ssize_t rows    # per-row losses: rows per task

cdef enum:
    ZERO_WEIGHTS = -2  # what a weighted run returns when its weights sum to zero


cdef inline bint _weighted(const PlanOp *op) noexcept nogil:
    return op.ptr[4] != NULL or op.ptr[5] != NULL


cdef inline double _row_weight(const floating *sw, const floating *cw, const int64_t *lab,
                               Py_ssize_t i) noexcept nogil:
    """r_i = sw[i] * cw[lab[i]] in double (a NULL array counts as ones)."""
    cdef double r = 1.0
    if sw != NULL:
        r = sw[i]
    if cw != NULL:
        r *= cw[lab[i]]
    return r


cdef simd_clones_flat_void _weight_sum(const floating *sw, const floating *cw,
                                      const int64_t *lab, Py_ssize_t n, double *r,
                                      double *total) noexcept nogil:
    """*total = sum_i r_i over n rows in double (lane_sum: an order depending on n only);
    r_i stored in r, or, when r is NULL, the row weights sw summed alone."""
    cdef Py_ssize_t i
    if r == NULL:
        total[0] = lane_sum(sw, n)
        return
    for i in range(n):
        r[i] = _row_weight(sw, cw, lab, i)
    total[0] = lane_sum(r, n)


cdef double _weight_total(const PlanOp *op, Py_ssize_t n, double *r) noexcept nogil:
    """`_weight_sum` of the packed call's weights over its first n rows."""
    cdef double total
    if op.flt:
        _weight_sum(<const double *>op.ptr[4], <const double *>op.ptr[5],
                    <const int64_t *>op.ptr[1], n, r, &total)
    else:
        _weight_sum(<const float *>op.ptr[4], <const float *>op.ptr[5],
                    <const int64_t *>op.ptr[1], n, r, &total)
    return total


cdef int _sum_tasks(const PlanOp *op, task_fn task, Py_ssize_t nparts,
                    bint row_tasks) noexcept nogil:
    """Run `task` over the nparts parts (rows when row_tasks, in tasks of job.rows
    rows; else element blocks, a task each), each part's loss sum written to
    job.part[p] (and with op.code its hit to job.hit[p]); store the sums added in part
    order in the result. Weighted, first the weight total (the row weights r_i kept for
    row tasks): ZERO_WEIGHTS, nothing run, unless it is positive."""
    cdef double *result = <double *>op.ptr[3]
    cdef Py_ssize_t t, width = 1 if row_tasks else op.dim[1], nrows = op.dim[0] // width
    cdef Py_ssize_t ntasks = nparts
    cdef bint weighted = _weighted(op), keep = weighted and row_tasks
    cdef double total
    cdef LossJob job
    job.op = op
    job.rows = 1
    if row_tasks:
        job.rows = max(1, <Py_ssize_t>ROW_BLOCK // max(1, op.dim[1]))
        ntasks = nblocks(nparts, job.rows)
    job.part = <double *>malloc((2 * nparts + 1 + (nrows if keep else 0)) * sizeof(double))
    if job.part == NULL:
        return -1
    job.hit = job.part + nparts
    job.weight = job.hit + nparts + 1 if keep else NULL
    if weighted:
        total = _weight_total(op, nrows, job.weight)
        if not total > 0:
            free(job.part)
            return ZERO_WEIGHTS
        result[2] = total * <double>width
        job.scale = 1.0 / result[2]
    run_tasks(task, &job, ntasks, op.nthreads)
    result[0] = seq_sum(job.part, nparts)
    result[1] = 0
    if op.code:
        for t in range(nparts):
            result[1] += job.hit[t]
    free(job.part)
    return 0


cdef object _run_loss(PlanOp *op, bint empty, bint count):
    """Run the packed loss call; -> its loss sum over its denominator, or (that, hits)
    with count. An empty input has a NaN loss (a mean over nothing)."""
    cdef double result[3]
    cdef int rc = 0
    result[0] = result[1] = 0
    result[2] = op.dim[0]
    op.ptr[3] = result
    if empty:
        loss = float("nan")
    else:
        with nogil:
            rc = op.run(op)
        if rc == ZERO_WEIGHTS:
            raise ZeroDivisionError("fastnn.kernels: the batch's weights do not sum to a "
                                    "positive number")
        if rc != 0:
            raise MemoryError("fastnn.kernels: out of memory for kernel scratch space")
        loss = result[0] / result[2]
    if count:
        return loss, <Py_ssize_t>result[1]
    return loss


cdef object _row_loss(PlanOp *op, scores, labels, grad, int nthreads, bint count,
                      str sname, str gname, sample_weight, class_weight):
    """Check and pack a per-row loss call: scores and grad (N, C) of one float dtype,
    labels (N,) int64, optional weights (N,) and (C,) of that dtype; then run it (op.run
    and any argument already set)."""
    cdef int tn = float_type(scores)
    cdef Py_ssize_t c, n = rows(scores, sname, &c)
    op.ptr[0] = array_data(scores, tn, n, c, False, sname)
    op.ptr[1] = array_data(labels, cnp.NPY_INT64, n, -1, False, "labels")
    op.ptr[2] = array_data(grad, tn, n, c, True, gname)
    op.ptr[4] = optional_data(sample_weight, tn, n, -1, False, "sample_weight")
    op.ptr[5] = optional_data(class_weight, tn, c, -1, False, "class_weight")
    op.dim[0], op.dim[1] = n, c
    op.flt, op.code, op.nthreads = tn == cnp.NPY_DOUBLE, count, nthreads
    return _run_loss(op, n == 0 or c == 0, count)


# ----------------------------------------------------------------------------------
# softmax cross-entropy: one task per row
# ----------------------------------------------------------------------------------
cdef inline double _softmax_ce_row(const floating* z, floating* dz, Py_ssize_t c,
                                   int64_t y, floating m, double inv_n) noexcept nogil:
    """One row, dz holding exp(z - m): dz = (softmax(z) - onehot(y)) / N; returns
    logsumexp(z) - z[y] (double), m = vmax(z, c). Stable: exponents are z - max(z) <= 0.
    The max is exact in any order (SIMD lanes); a NaN skipped by its comparisons still
    reaches the exp sum, so NaN anywhere in z gives a NaN loss and a NaN gradient row."""
    cdef Py_ssize_t j
    cdef floating ey, kk
    cdef double s, r
    s = lane_sum(dz, c)
    ey = dz[y]
    r = 1.0 / s
    kk = <floating>(r * inv_n)
    for j in range(c):
        dz[j] = dz[j] * kk
    dz[y] = <floating>((<double>ey * r - 1.0) * inv_n)
    return log(s) - (<double>z[y] - <double>m)


cdef inline bint _argmax_is(const floating* z, Py_ssize_t c, floating m, int64_t y,
                            bint maybe_nan) noexcept nogil:
    """Whether NumPy's argmax of the row (the first NaN if there is one, else the first
    maximum m) is y: z[y] is m and no earlier entry is (a scan without exits, which
    vectorises); rows that may hold a NaN (`maybe_nan`: their loss is NaN) are scanned
    for one first."""
    cdef Py_ssize_t j
    cdef bint first_max = z[y] == m
    if maybe_nan:
        for j in range(c):
            if z[j] != z[j]:
                return j == y
    for j in range(y):
        first_max &= z[j] != m
    return first_max


cdef simd_clones_flat_void _softmax_rows(const LossJob *job, Py_ssize_t t,
                                         const floating *z, floating *dz) noexcept nogil:
    """Rows of task t: their exponents z - max(z) written to dz and exponentiated in one
    vector loop over the block (narrow rows would each leave most of a vector empty),
    then each row finished."""
    cdef Py_ssize_t n = job.op.dim[0], c = job.op.dim[1], i, j
    cdef Py_ssize_t r0 = t * job.rows, r1 = min(n, r0 + job.rows)
    cdef const int64_t *labels = <const int64_t *>job.op.ptr[1]
    cdef floating m[ROW_BLOCK]
    cdef double r, loss
    for i in range(r0, r1):
        m[i - r0] = vmax(z + i * c, c)
        for j in range(i * c, (i + 1) * c):
            dz[j] = z[j] - m[i - r0]
    for j in range(r0 * c, r1 * c):
        dz[j] = fexp_neg(dz[j])
    for i in range(r0, r1):
        if job.weight != NULL:
            r = job.weight[i]
            loss = _softmax_ce_row(z + i * c, dz + i * c, c, labels[i], m[i - r0],
                                   r * job.scale)
            job.part[i] = r * loss
        else:
            loss = _softmax_ce_row(z + i * c, dz + i * c, c, labels[i], m[i - r0],
                                   1.0 / <double>n)
            job.part[i] = loss
        if job.op.code:
            job.hit[i] = _argmax_is(z + i * c, c, m[i - r0], labels[i], loss != loss)


cdef void _softmax_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const LossJob *job = <const LossJob *>ctx
    if job.op.flt:
        _softmax_rows(job, t, <const double *>job.op.ptr[0], <double *>job.op.ptr[2])
    else:
        _softmax_rows(job, t, <const float *>job.op.ptr[0], <float *>job.op.ptr[2])


cdef int _softmax_op(const PlanOp *op) noexcept nogil:
    return _sum_tasks(op, _softmax_task, op.dim[0], True)


def softmax_cross_entropy(logits, labels, dlogits, int nthreads=1, bint count=False,
                          sample_weight=None, class_weight=None):
    """logits (N, C), labels (N,) int64 in [0, C) -> loss; writes dlogits (N, C). With
    count, -> (loss, number of rows whose argmax is their label). Weights: see the module
    docstring."""
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.run = _softmax_op
    return _row_loss(&op, logits, labels, dlogits, nthreads, count, "logits", "dlogits",
                     sample_weight, class_weight)


# ----------------------------------------------------------------------------------
# multiclass hinge (cs231n SVM): one task per row
# ----------------------------------------------------------------------------------
cdef inline double _hinge_span(const floating* s, floating* ds, Py_ssize_t c, int64_t y,
                               floating margin, floating g,
                               Py_ssize_t* count) noexcept nogil:
    """One row: margins (s_j - s_y) + margin, the label's own made inactive; ds_j = g where
    active (margin > 0), else 0 (ds[y] is the caller's). Returns the sum of the active
    margins (double, lane_sum per sub-block of SUB) and adds their number to count. One
    loop over the whole row (not the classes before and after y: narrow rows would run
    two short loops)."""
    cdef floating buf[SUB]
    cdef floating mj, sy = s[y]
    cdef Py_ssize_t j = 0, k, m, cnt = 0
    cdef double acc = 0.0
    while j < c:
        m = min(<Py_ssize_t>SUB, c - j)
        for k in range(m):
            mj = (s[j + k] - sy) + margin
            buf[k] = sel(mj <= 0, <floating>0, mj)      # NaN margins propagate to the loss
            ds[j + k] = sel(mj > 0, g, <floating>0)
        if j <= y < j + m:
            buf[y - j] = 0
        for k in range(m):
            cnt += buf[k] > 0
        acc += lane_sum(buf, m)
        j += SUB
    count[0] += cnt
    return acc


cdef inline void _hinge_row(const LossJob *job, Py_ssize_t i, const floating *scores,
                            floating *dscores) noexcept nogil:
    """Row i: each active class gets g = 1/N (weighted: r_i / total), the label -g times
    their count."""
    cdef Py_ssize_t n = job.op.dim[0], c = job.op.dim[1], count = 0
    cdef int64_t y = (<const int64_t *>job.op.ptr[1])[i]
    cdef const floating *s = scores + i * c
    cdef floating *ds = dscores + i * c
    cdef floating g, mg = <floating>job.op.arg[0]
    cdef double acc, r = 1.0, scale = 0.0
    if job.weight != NULL:
        r = job.weight[i]
        scale = r * job.scale
        g = <floating>scale
    else:
        g = (<floating>1) / <floating>n
    acc = _hinge_span(s, ds, c, y, mg, g, &count)
    if job.weight != NULL:
        ds[y] = <floating>(-<double>count * scale)
        job.part[i] = r * acc
    else:
        ds[y] = -(<floating>count) / <floating>n
        job.part[i] = acc


cdef simd_clones_flat_void _hinge_rows(const LossJob *job, Py_ssize_t t,
                                       const floating *scores,
                                       floating *dscores) noexcept nogil:
    """The rows of task t."""
    cdef Py_ssize_t i
    for i in range(t * job.rows, min(job.op.dim[0], (t + 1) * job.rows)):
        _hinge_row(job, i, scores, dscores)


cdef void _hinge_task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const LossJob *job = <const LossJob *>ctx
    if job.op.flt:
        _hinge_rows(job, t, <const double *>job.op.ptr[0], <double *>job.op.ptr[2])
    else:
        _hinge_rows(job, t, <const float *>job.op.ptr[0], <float *>job.op.ptr[2])


cdef int _hinge_op(const PlanOp *op) noexcept nogil:
    return _sum_tasks(op, _hinge_task, op.dim[0], True)


def multiclass_hinge(scores, labels, double margin, dscores, int nthreads=1,
                     sample_weight=None, class_weight=None):
    """scores (N, C), labels (N,) int64 -> loss; writes dscores (N, C). Weights: see the
    module docstring. As the reference, a NaN margin is inactive (contributes 0 loss and
    0 gradient)."""
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.run, op.arg[0] = _hinge_op, margin
    return _row_loss(&op, scores, labels, dscores, nthreads, False, "scores", "dscores",
                     sample_weight, class_weight)


# ----------------------------------------------------------------------------------
# binary cross-entropy with logits, mean squared error: flat, fixed element blocks
# ----------------------------------------------------------------------------------
cdef inline floating _bce_term(floating x, floating t, floating e) noexcept nogil:
    """max(x,0) - x t + log1p(e), e = exp(-|x|): one element's binary cross-entropy."""
    return (sel(x > 0, x, <floating>0) - x * t) + flog1p01(e)


cdef enum:
    BCE_DIVIDE = 0     # _bce_span: dx = (sigmoid(x) - t) / scale
    BCE_SCALE = 1      #            dx = (sigmoid(x) - t) * scale
    BCE_WEIGHTS = 2    #            terms *= w, dx = (sigmoid(x) - t) * (w scale)


cdef inline void _bce_span(const floating* x, const floating* t, floating* dx,
                           floating* terms, const floating* w, Py_ssize_t m, floating scale,
                           int mode) noexcept nogil:
    """m elements: terms[k] = max(x,0) - x t + log1p(exp(-|x|)) and dx[k] from sigmoid(x)
    - t as `mode` says (a vector loop per mode in the block functions' AVX-512 / AVX2
    clones; one exp per element, shared by the term and the stable sigmoid)."""
    cdef Py_ssize_t k
    cdef floating term
    if mode == BCE_DIVIDE:         # one loop per mode: a branch inside blocks vectorising
        for k in range(m):
            dx[k] = _bce_diff(x[k], t[k], terms + k) / scale
    elif mode == BCE_SCALE:
        for k in range(m):
            dx[k] = _bce_diff(x[k], t[k], terms + k) * scale
    else:
        for k in range(m):     # the term stays in a register: a store then reload of
            dx[k] = _bce_diff(x[k], t[k], &term) * (w[k] * scale)   # it stalled on Zen 4
            terms[k] = term * w[k]


cdef inline floating _bce_diff(floating x, floating t, floating *term) noexcept nogil:
    """sigmoid(x) - t; *term = the element's binary cross-entropy (one exp for both)."""
    cdef floating e = fexp_neg(-fabs_(x))
    term[0] = _bce_term(x, t, e)
    return sigmoid_from_exp(x, e) - t


cdef simd_clones_flat_void _bce_block(const floating* x, const floating* t, floating* dx,
                                 Py_ssize_t lo, Py_ssize_t hi, floating size,
                                 double *sum) noexcept nogil:
    """*sum = the terms summed in double (lane_sum per sub-block of SUB); dx = (sigmoid(x)
    - t) / size. The block functions are the SIMD clones: their spans, weight spreading
    and lane sums all run at the machine's vector width."""
    cdef floating buf[SUB]
    cdef Py_ssize_t i = lo, m
    cdef double acc = 0.0
    while i < hi:
        m = min(<Py_ssize_t>SUB, hi - i)
        _bce_span(x + i, t + i, dx + i, buf, NULL, m, size, BCE_DIVIDE)
        acc += lane_sum(buf, m)
        i += SUB
    sum[0] = acc


cdef inline const floating *_element_weights(const floating *sw, Py_ssize_t width, Py_ssize_t lo,
                                             Py_ssize_t m, floating *buf) noexcept nogil:
    """The row weights of flat elements lo..lo+m-1 of rows of `width` elements: sw + lo
    itself when rows are single elements, else `buf` filled row by row, FILL at a time (a
    row's overshoot is overwritten by the next row, or lies past m). buf has FILL elements
    before it and SUB + FILL from it: rows of up to FILL elements take one store each,
    the first from its (partial) row's start, without a branch."""
    cdef Py_ssize_t row = lo // width, e = lo - row * width, k, r
    cdef floating *p = buf - e
    cdef floating w
    if width == 1:
        return sw + lo
    if width <= FILL:
        for r in range((e + m + width - 1) // width):
            _fill(p + r * width, sw[row + r])
        return buf
    e = -e                   # buf position of the first row's first element
    while e < m:
        w = sw[row]
        k = max(e, 0)
        while k < e + width and k < m:
            _fill(buf + k, w)
            k += FILL
        e += width
        row += 1
    return buf


cdef inline void _fill(floating *a, floating w) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(FILL):
        a[k] = w


cdef simd_clones_flat_void _bce_block_weighted(const floating* x, const floating* t,
                                          floating* dx, Py_ssize_t lo, Py_ssize_t hi,
                                          const floating *sw, Py_ssize_t width, floating g,
                                          double *sum) noexcept nogil:
    """_bce_block with row weights w: terms times w summed; dx = (sigmoid(x) - t) * (w g).
    The sub-blocks are _bce_block's; one inside a single row takes that row's weight as a
    scale, one across rows a weight per element."""
    cdef floating buf[SUB]
    cdef floating wbuf[FILL + SUB + FILL]
    cdef Py_ssize_t i = lo, m, row
    cdef double acc = 0.0
    while i < hi:
        m = min(<Py_ssize_t>SUB, hi - i)
        row = i // width
        if (i + m - 1) // width == row:
            _bce_span(x + i, t + i, dx + i, buf, NULL, m, sw[row] * g, BCE_SCALE)
            acc += <double>sw[row] * lane_sum(buf, m)
        else:
            _bce_span(x + i, t + i, dx + i, buf, _element_weights(sw, width, i, m, wbuf + FILL), m,
                      g, BCE_WEIGHTS)
            acc += lane_sum(buf, m)
        i += m
    sum[0] = acc


cdef simd_clones_flat_void _mse_block(const floating* p, const floating* t, floating* dp,
                                 Py_ssize_t lo, Py_ssize_t hi, floating scale,
                                 double *sum) noexcept nogil:
    """dp = (p - t) * scale; *sum = sum (p - t)^2 in double. Eight fixed interleaved
    accumulators (combined in a fixed order) let the loop vectorise deterministically."""
    cdef Py_ssize_t i, k, m = lo + ((hi - lo) // 8) * 8
    cdef floating di
    cdef double acc[8]
    cdef double s
    for k in range(8):
        acc[k] = 0.0
    for i in range(lo, m, 8):
        for k in range(8):
            di = p[i + k] - t[i + k]
            acc[k] += <double>di * <double>di
            dp[i + k] = di * scale
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for i in range(m, hi):
        di = p[i] - t[i]
        s += <double>di * <double>di
        dp[i] = di * scale
    sum[0] = s


cdef simd_clones_flat_void _mse_block_weighted(const floating* p, const floating* t,
                                          floating* dp, Py_ssize_t lo, Py_ssize_t hi,
                                          const floating *sw, Py_ssize_t width, floating g,
                                          double *sum) noexcept nogil:
    """Row weights w: dp = (p - t) * (w g); *sum = sum w (p - t)^2 (lane_sum per
    sub-block of SUB)."""
    cdef floating buf[SUB]
    cdef floating wbuf[FILL + SUB + FILL]
    cdef const floating *w
    cdef floating di
    cdef Py_ssize_t i = lo, k, m
    cdef double acc = 0.0
    while i < hi:
        m = min(<Py_ssize_t>SUB, hi - i)
        w = _element_weights(sw, width, i, m, wbuf + FILL)
        for k in range(m):
            di = p[i + k] - t[i + k]
            buf[k] = di * di * w[k]
            dp[i + k] = di * (w[k] * g)
        acc += lane_sum(buf, m)
        i += SUB
    sum[0] = acc


cdef void _flat_block(const LossJob *job, Py_ssize_t b, const floating *x,
                      const floating *t, floating *g) noexcept nogil:
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t n = op.dim[0], lo = b * SUM_BLOCK, hi = min(lo + SUM_BLOCK, n)
    cdef const floating *sw = <const floating *>op.ptr[4]
    cdef bint is_mse = op.arg[0] != 0
    cdef double *part = job.part + b
    if sw != NULL and is_mse:
        _mse_block_weighted(x, t, g, lo, hi, sw, op.dim[1], <floating>(2.0 * job.scale),
                            part)
    elif sw != NULL:
        _bce_block_weighted(x, t, g, lo, hi, sw, op.dim[1], <floating>job.scale, part)
    elif is_mse:
        _mse_block(x, t, g, lo, hi, <floating>(2.0 / <double>n), part)
    else:
        _bce_block(x, t, g, lo, hi, <floating>n, part)


cdef void _flat_task(const void *ctx, Py_ssize_t b) noexcept nogil:
    cdef const LossJob *job = <const LossJob *>ctx
    cdef const PlanOp *op = job.op
    if op.flt:
        _flat_block(job, b, <const double *>op.ptr[0], <const double *>op.ptr[1],
                    <double *>op.ptr[2])
    else:
        _flat_block(job, b, <const float *>op.ptr[0], <const float *>op.ptr[1],
                    <float *>op.ptr[2])


cdef int _flat_op(const PlanOp *op) noexcept nogil:
    return _sum_tasks(op, _flat_task, nblocks(op.dim[0], SUM_BLOCK), False)


cdef object _flat_loss(x, t, g, int nthreads, bint is_mse, str xname, str tname,
                       str gname, sample_weight):
    """Check and pack a flat loss call (x, t, g of one shape and float dtype; optional
    row weights (x.shape[0],) of that dtype), then run it."""
    cdef int tn = float_type(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x), nrows
    cdef PlanOp op
    memset(&op, 0, sizeof(op))
    op.ptr[0] = array_data(x, tn, n, -2, False, xname)
    op.ptr[1] = array_data(t, tn, n, -2, False, tname)
    op.ptr[2] = array_data(g, tn, n, -2, True, gname)
    op.dim[0], op.dim[1] = n, 1
    op.flt, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, nthreads, is_mse
    op.run = _flat_op
    if sample_weight is not None:
        if cnp.PyArray_NDIM(<cnp.ndarray>x) == 0:
            raise ValueError("fastnn.kernels: %s must have a row axis to take row weights"
                             % xname)
        nrows = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
        op.ptr[4] = array_data(sample_weight, tn, nrows, -1, False, "sample_weight")
        if n > 0:
            op.dim[1] = n // nrows
    return _run_loss(&op, n == 0, False)


def bce_with_logits(logits, targets, dlogits, int nthreads=1, sample_weight=None):
    """logits, targets: same shape -> loss (mean over all elements; weighted: see the
    module docstring, rows along the first axis); writes dlogits."""
    return _flat_loss(logits, targets, dlogits, nthreads, False, "logits", "targets",
                      "dlogits", sample_weight)


def mse(pred, target, dpred, int nthreads=1, sample_weight=None):
    """pred, target: same shape -> loss (mean over all elements; weighted: see the module
    docstring, rows along the first axis); writes dpred."""
    return _flat_loss(pred, target, dpred, nthreads, True, "pred", "target", "dpred",
                      sample_weight)

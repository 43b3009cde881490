# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-d max and average pooling (NCHW): compiled twin of `fastnn.kernels.ref.pooling`
(same names, arguments and outputs).

Every (n, c) plane is independent: the planes are cut into blocks of PLANE_WORK elements
or more (by the shapes only) and `run_tasks` shares the blocks out, so results do not
depend on the thread count. Within a plane, each output's window is scanned in
row-major order over its cells inside the input (padded cells are never read: for max
they never win, for average they add zero), a row of outputs at a time:
  max:  the first cell is the running winner; a cell replaces it when it is larger, or
        when it is NaN and the winner is not (ties and later NaNs keep the first): a
        branch-free select, vectorised across the outputs of a row;
        backward adds dout at the kept position (checked to lie in its plane), in
        output order;
  avg:  the window's sum / (kh kw); backward adds dout / (kh kw) to the window's cells.
"""
from cython cimport floating

cimport numpy as cnp
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._buffers cimport float_type
from ._common cimport nblocks, run_tasks, sel, simd_clones_void
from ._nchw cimport array4_data, valid_outputs, window_outputs
from ._plan cimport PlanOp, submit

cnp.import_array()

cdef enum:
    PLANE_WORK = 1 << 14   # input elements per task, at least (whole planes)
    FLAT_2X2 = 1024        # outputs per chunk of _max_forward_2x2_flat (stack scratch)


ctypedef struct Pool:
    Py_ssize_t planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw   # PlanOp.dim, in order
    Py_ssize_t per_task
    bint two_by_two        # 2x2 windows, stride 2, no padding
    bint flat_2x2          # two_by_two, the input width even (w = 2 ow), ow <= FLAT_2X2
    Py_ssize_t *cols       # (kw, 2): per window column v, the outputs [lo, hi) of a row
                           # whose cell v is inside the input


cdef void _geometry(Pool *pl, const Py_ssize_t *dim) noexcept nogil:
    pl.planes, pl.h, pl.w, pl.oh, pl.ow = dim[0], dim[1], dim[2], dim[3], dim[4]
    pl.kh, pl.kw, pl.sh, pl.sw, pl.ph, pl.pw = dim[5], dim[6], dim[7], dim[8], dim[9], dim[10]
    pl.per_task = max(1, PLANE_WORK // max(1, pl.h * pl.w))
    pl.two_by_two = (pl.kh == 2 and pl.kw == 2 and pl.sh == 2 and pl.sw == 2 and pl.ph == 0
                     and pl.pw == 0)
    pl.flat_2x2 = pl.two_by_two and pl.w == 2 * pl.ow and pl.ow <= FLAT_2X2


cdef inline void _rows(const Pool *pl, Py_ssize_t i, Py_ssize_t *h0,
                       Py_ssize_t *h1) noexcept nogil:
    """The input rows [h0, h1) of output row i's windows (never empty: the padding is
    at most half the kernel)."""
    cdef Py_ssize_t top = i * pl.sh - pl.ph
    h0[0], h1[0] = max(0, top), min(pl.h, top + pl.kh)


# ---------------------------------------------------------------------------------------
# one plane each, an output row at a time: for each cell (u, v) of the window in
# row-major order, every output j of the row whose cell is inside the input (a strided,
# vectorisable loop over j); per output, the cells are thus visited in row-major order.
# ptr: max forward (x, out, idx), max backward (dout, idx, dx), avg forward (x, out),
# avg backward (dout, dx); dim = (N C, H, W, OH, OW, kh, kw, sh, sw, ph, pw) (max
# backward: the sizes only)
# ---------------------------------------------------------------------------------------
cdef inline bint _takes(floating c, floating b) noexcept nogil:
    """Whether a later cell c takes over from the running winner b: when larger, or when
    it is the first NaN."""
    return (c > b) | ((c != c) & (b == b))


cdef inline void _meet(floating c, Py_ssize_t at, floating *best,
                       Py_ssize_t *pos) noexcept nogil:
    """The cell x[at] = c takes over from the running winner as `_takes` says
    (branch-free: mask 0 or all ones)."""
    cdef floating b = best[0]
    cdef Py_ssize_t mask = -<Py_ssize_t>_takes(c, b)
    best[0] = sel(mask != 0, c, b)
    pos[0] = pos[0] ^ ((pos[0] ^ at) & mask)


cdef inline void _max_cells(const floating *x, floating *best, Py_ssize_t *pos,
                            Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t at0,
                            Py_ssize_t sw) noexcept nogil:
    """Outputs j in [lo, hi) of a row meet their window's cell x[at0 + j sw]."""
    cdef Py_ssize_t j
    for j in range(lo, hi):
        _meet(x[at0 + j * sw], at0 + j * sw, best + j, pos + j)


cdef simd_clones_void _max_forward_2x2(const Pool *pl, const floating *x, floating *out,
                                       Py_ssize_t *idx) noexcept nogil:
    """_max_forward for 2x2 windows, stride 2, no padding (LeNet's pooling): every cell
    inside, the four met in row-major order in one vectorised loop per output row."""
    cdef Py_ssize_t w = pl.w, i, j, at
    cdef floating *best
    cdef Py_ssize_t *pos
    for i in range(pl.oh):
        best = out + i * pl.ow
        pos = idx + i * pl.ow
        for j in range(pl.ow):
            at = 2 * i * w + 2 * j
            best[j] = x[at]
            pos[j] = at
            _meet(x[at + 1], at + 1, best + j, pos + j)
            _meet(x[at + w], at + w, best + j, pos + j)
            _meet(x[at + w + 1], at + w + 1, best + j, pos + j)


cdef simd_clones_void _max_forward_2x2_flat(const Pool *pl, const floating *x,
                                            floating *out, Py_ssize_t *idx) noexcept nogil:
    """_max_forward_2x2 for an even input width (w = 2 ow), in vector loops over chunks
    of whole output rows (rows of a few outputs would each leave most of a vector empty):
    the cells side by side meet first (with an even width the pairs of the chunk's input
    rows lie back to back: one flat loop), then each output's top pair meets its bottom
    pair (with `_meet`'s order: the first maximum in row-major order, the first NaN),
    then the winners' positions are written."""
    cdef Py_ssize_t ow = pl.ow, w = pl.w, rows = FLAT_2X2 // pl.ow, i0 = 0, i, n, k, t
    cdef floating pair[2 * FLAT_2X2]     # per pair of cells side by side: the winner
    cdef floating right[2 * FLAT_2X2]    # 1 where the right cell won, else 0
    cdef floating code[FLAT_2X2]         # per output: its winning cell, 0-3 row-major
    cdef int top[FLAT_2X2]               # per output of a chunk: its top pair
    cdef const floating *src
    cdef floating a, b
    cdef bint later
    for i in range(min(rows, pl.oh)):
        for k in range(ow):
            top[i * ow + k] = <int>(2 * i * ow + k)
    while i0 < pl.oh:
        n = min(rows, pl.oh - i0) * ow
        src = x + 2 * i0 * w
        for t in range(2 * n):
            a = src[2 * t]
            b = src[2 * t + 1]
            later = _takes(b, a)
            pair[t] = sel(later, b, a)
            right[t] = sel(later, <floating>1, <floating>0)
        for k in range(n):
            a = pair[top[k]]
            b = pair[top[k] + ow]
            later = _takes(b, a)
            out[i0 * ow + k] = sel(later, b, a)
            code[k] = sel(later, right[top[k] + ow] + 2, right[top[k]])
        for k in range(n):
            idx[i0 * ow + k] = (2 * i0 * w + 2 * <Py_ssize_t>top[k] + (<int>code[k] & 1)
                                + (<int>code[k] >> 1) * w)
        i0 += rows


cdef inline void _sum_cells(const floating *x, floating *acc, Py_ssize_t lo,
                            Py_ssize_t hi, Py_ssize_t sw, floating scale,
                            bint backward) noexcept nogil:
    """Forward: acc[j] += x[j sw]; backward: x[j sw] += acc[j] / scale (x is dx and acc
    dout), for j in [lo, hi)."""
    cdef Py_ssize_t j
    cdef floating *dx = <floating *>x
    if backward:
        for j in range(lo, hi):
            dx[j * sw] = dx[j * sw] + acc[j] / scale
    else:
        for j in range(lo, hi):
            acc[j] = acc[j] + x[j * sw]


cdef simd_clones_void _max_forward(const Pool *pl, const floating *x, floating *out,
                                   Py_ssize_t *idx) noexcept nogil:
    """out = the window's max, idx = its position: each output starts from its window's
    first cell, then every cell (the first again: no change) may take over."""
    cdef Py_ssize_t w = pl.w, ow = pl.ow, sw = pl.sw, pw = pl.pw
    cdef Py_ssize_t i, j, ih, v, h0, h1, lo, hi, at0
    cdef floating *best
    cdef Py_ssize_t *pos
    for i in range(pl.oh):
        best = out + i * ow
        pos = idx + i * ow
        _rows(pl, i, &h0, &h1)
        for j in range(ow):
            pos[j] = h0 * w + max(0, j * sw - pw)
            best[j] = x[pos[j]]
        for ih in range(h0, h1):
            for v in range(pl.kw):
                lo, hi = pl.cols[2 * v], pl.cols[2 * v + 1]
                at0 = ih * w + v - pw
                if sw == 2:      # a literal stride: vector loads and shuffles
                    _max_cells(x, best, pos, lo, hi, at0, 2)
                elif sw == 1:
                    _max_cells(x, best, pos, lo, hi, at0, 1)
                else:
                    _max_cells(x, best, pos, lo, hi, at0, sw)


cdef void _max_backward(const Pool *pl, const floating *dout, const Py_ssize_t *idx,
                        floating *dx) noexcept nogil:
    cdef Py_ssize_t o, at, size = pl.h * pl.w
    memset(dx, 0, size * sizeof(floating))
    for o in range(pl.oh * pl.ow):
        at = idx[o]
        if 0 <= at < size:          # a position from the forward: always in the plane
            dx[at] = dx[at] + dout[o]


cdef simd_clones_void _avg(const Pool *pl, const floating *src, floating *dst,
                           bint backward) noexcept nogil:
    """Forward: dst (out) = the window's sum of src (x) / (kh kw). Backward: dst (dx) =
    zero, plus every output's src (dout) / (kh kw) over its window's cells."""
    cdef Py_ssize_t i, j, ih, v, h0, h1, lo, hi, off
    cdef Py_ssize_t ow = pl.ow, sw = pl.sw
    cdef floating *row
    cdef floating *cells
    cdef const floating *g
    cdef floating area = <floating>(pl.kh * pl.kw)
    if backward:
        memset(dst, 0, pl.h * pl.w * sizeof(floating))
    for i in range(pl.oh):
        row = dst + i * ow
        g = src + i * ow
        if not backward:
            for j in range(ow):
                row[j] = 0
        _rows(pl, i, &h0, &h1)
        for ih in range(h0, h1):
            for v in range(pl.kw):
                off = ih * pl.w + v - pl.pw
                lo, hi = pl.cols[2 * v], pl.cols[2 * v + 1]
                cells = <floating *>(dst if backward else src) + off
                if sw == 2:      # a literal stride: vector loads and shuffles
                    _sum_cells(cells, <floating *>(g if backward else row), lo, hi, 2,
                               area, backward)
                elif sw == 1:
                    _sum_cells(cells, <floating *>(g if backward else row), lo, hi, 1,
                               area, backward)
                else:
                    _sum_cells(cells, <floating *>(g if backward else row), lo, hi, sw,
                               area, backward)
        if not backward:
            for j in range(ow):
                row[j] = row[j] / area


cdef enum:
    MAX_FORWARD = 0
    MAX_BACKWARD = 1
    AVG_FORWARD = 2
    AVG_BACKWARD = 3


ctypedef struct PoolJob:
    const PlanOp *op
    Pool pl


cdef void _planes(const PoolJob *job, Py_ssize_t t, floating *src) noexcept nogil:
    """Block t of planes; src: the call's first array (x or dout)."""
    cdef const Pool *pl = &job.pl
    cdef void * const *ptr = job.op.ptr
    cdef Py_ssize_t q, q1 = min(pl.planes, (t + 1) * pl.per_task)
    cdef Py_ssize_t ins = pl.h * pl.w, outs = pl.oh * pl.ow
    for q in range(t * pl.per_task, q1):
        if job.op.code == MAX_FORWARD and pl.flat_2x2:
            _max_forward_2x2_flat(pl, src + q * ins, <floating *>ptr[1] + q * outs,
                                  <Py_ssize_t *>ptr[2] + q * outs)
        elif job.op.code == MAX_FORWARD and pl.two_by_two:
            _max_forward_2x2(pl, src + q * ins, <floating *>ptr[1] + q * outs,
                             <Py_ssize_t *>ptr[2] + q * outs)
        elif job.op.code == MAX_FORWARD:
            _max_forward(pl, src + q * ins, <floating *>ptr[1] + q * outs,
                         <Py_ssize_t *>ptr[2] + q * outs)
        elif job.op.code == MAX_BACKWARD:
            _max_backward(pl, src + q * outs, <Py_ssize_t *>ptr[1] + q * outs,
                          <floating *>ptr[2] + q * ins)
        elif job.op.code == AVG_FORWARD:
            _avg(pl, src + q * ins, <floating *>ptr[1] + q * outs, False)
        else:
            _avg(pl, src + q * outs, <floating *>ptr[1] + q * ins, True)


cdef void _task(const void *ctx, Py_ssize_t t) noexcept nogil:
    cdef const PoolJob *job = <const PoolJob *>ctx
    if job.op.flt:
        _planes(job, t, <double *>job.op.ptr[0])
    else:
        _planes(job, t, <float *>job.op.ptr[0])


cdef int _pool_op(const PlanOp *op) noexcept nogil:
    cdef PoolJob job
    cdef Pool *pl = &job.pl
    cdef Py_ssize_t v
    job.op = op
    _geometry(pl, op.dim)
    pl.cols = <Py_ssize_t *>malloc(2 * pl.kw * sizeof(Py_ssize_t))
    if pl.cols == NULL:
        return -1
    for v in range(pl.kw):
        valid_outputs(pl.w, pl.ow, pl.sw, v - pl.pw, &pl.cols[2 * v], &pl.cols[2 * v + 1])
    run_tasks(_task, &job, nblocks(pl.planes, pl.per_task), op.nthreads)
    free(pl.cols)
    return 0


# ---------------------------------------------------------------------------------------
# def wrappers: geometry and every array checked in C
# ---------------------------------------------------------------------------------------
cdef void _pack(PlanOp *op, Pool *pl, int kind, Py_ssize_t planes, Py_ssize_t h,
                Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, geom, int tn,
                int nthreads) except *:
    """op's call record: sizes, geometry (kh, kw, sh, sw, ph, pw), precision, kind."""
    memset(op, 0, sizeof(PlanOp))
    for i, v in enumerate((planes, h, w, oh, ow) + tuple(geom)):
        op.dim[i] = v
    _geometry(pl, op.dim)
    op.flt, op.code, op.nthreads = tn == cnp.NPY_DOUBLE, kind, nthreads
    op.run = _pool_op


cdef void _out_size(x, geom, Py_ssize_t *oh, Py_ssize_t *ow) except *:
    """The output size of pooling x (N, C, H, W) with geom (kh, kw, sh, sw, ph, pw),
    checked: padding at most half the kernel (so no window is empty), the kernel within
    the padded input."""
    if not isinstance(x, cnp.ndarray) or x.ndim != 4 or len(geom) != 6:
        raise ValueError("fastnn.kernels: pooling expects a 4-d x and a 6-tuple geometry, "
                         "got %r, %r" % (getattr(x, "shape", x), geom))
    kh, kw, sh, sw, ph, pw = geom
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError("fastnn.kernels: pooling padding %r exceeds half the kernel %r"
                         % ((ph, pw), (kh, kw)))
    oh[0] = window_outputs(x.shape[2], kh, sh, ph, 1)
    ow[0] = window_outputs(x.shape[3], kw, sw, pw, 1)


def maxpool2d_forward(x, out, idx, geom, int nthreads=1):
    """Write out (N, C, OH, OW) and idx (the same shape, intp): each window's max and
    the winner's position ih * W + iw in its plane."""
    _submit(MAX_FORWARD, x, x, out, idx, geom, nthreads)


def maxpool2d_backward(dout, idx, dx, int nthreads=1):
    """Write dx (N, C, H, W): zero, plus dout at each window's winner (in output order)."""
    cdef PlanOp op
    cdef Pool pl
    cdef int tn = float_type(dout)
    if dout.ndim != 4 or dx.ndim != 4 or dout.shape[:2] != dx.shape[:2]:
        raise ValueError("fastnn.kernels: maxpool2d_backward expects 4-d dout and dx of one "
                         "batch and channel count, got %s, %s" % (dout.shape, dx.shape))
    n, c, oh, ow = dout.shape
    h, w = dx.shape[2:]
    _pack(&op, &pl, MAX_BACKWARD, n * c, h, w, oh, ow, (1, 1, 1, 1, 0, 0), tn, nthreads)
    op.ptr[0] = array4_data(dout, tn, n, c, oh, ow, False, "dout")
    op.ptr[1] = array4_data(idx, cnp.NPY_INTP, n, c, oh, ow, False, "idx")
    op.ptr[2] = array4_data(dx, tn, n, c, h, w, True, "dx")
    submit(&op)


def avgpool2d_forward(x, out, geom, int nthreads=1):
    """Write out (N, C, OH, OW): each window's mean, padded zeros included."""
    _submit(AVG_FORWARD, x, x, out, None, geom, nthreads)


def avgpool2d_backward(dout, dx, geom, int nthreads=1):
    """Write dx (N, C, H, W): every output's dout / (kh kw) added over its window."""
    _submit(AVG_BACKWARD, dx, dout, dx, None, geom, nthreads)


cdef int _submit(int kind, planes, src, dst, idx, geom, int nthreads) except -1:
    """Check and run a call with a geometry: `planes` is its (N, C, H, W) side (x, or
    dx), src -> dst the arrays it reads and writes, idx the max's positions (or None)."""
    cdef PlanOp op
    cdef Pool pl
    cdef Py_ssize_t oh, ow
    cdef int tn = float_type(src)
    cdef bint backward = kind == AVG_BACKWARD
    _out_size(planes, geom, &oh, &ow)
    n, c, h, w = planes.shape
    _pack(&op, &pl, kind, n * c, h, w, oh, ow, geom, tn, nthreads)
    if backward:
        op.ptr[0] = array4_data(src, tn, n, c, oh, ow, False, "dout")
        op.ptr[1] = array4_data(dst, tn, n, c, h, w, True, "dx")
    else:
        op.ptr[0] = array4_data(src, tn, n, c, h, w, False, "x")
        op.ptr[1] = array4_data(dst, tn, n, c, oh, ow, True, "out")
    if idx is not None:
        op.ptr[2] = array4_data(idx, cnp.NPY_INTP, n, c, oh, ow, True, "idx")
    submit(&op)
    return 0

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""2-d convolution (NCHW) with a fused activation: compiled twin of
`fastnn.kernels.ref.conv` (same names, arguments and outputs).

    forward   z_n (F, P) = W (F, K) @ col_n (K, P) (+ b),  out = f(z)
    backward  dz = dout * f'(z, out),  db = sum of dz,  dw = sum_n dz_n @ col_n^T,
              dx_n = col2im(W^T @ dz_n)

K = C KH KW, P = OH OW. col_n is image n unfolded ("im2col"): row (c, u, v), column
(i, j) holds x[n, c, i sh - ph + u dh, j sw - pw + v dw] (zero in the padding); W is w
(F, C, KH, KW) as it lies in memory; col2im adds a column matrix back onto the image
(the adjoint). The products go through `_blas.gemm` (single-threaded BLAS).

Three ways, chosen from the shapes (and the CPU) alone. float64, and any convolution
the other two do not take: im2col + GEMM as above. float32 on a CPU with AVX2 and FMA
(_conv_direct.h, no unfolded input, no packing, each output one fixed chain of
multiply-adds):
* direct (`_direct`): 3x3, stride 1, rows of 16 outputs or more -- register tiles of
  filters x pixels over the zero-padded image; dx as the convolution of the padded dz
  with the flipped, transposed kernel; dw over aligned, column-shifted copies of x;
* lanes (`_lanes`): stride 1, 3 or 5 kernel columns, narrower images -- blocks of L
  images (16 with AVX-512, 8 with AVX2) moved into vector lanes, so a vector holds one
  pixel of L images; the same tiles for the forward, dw per kernel row, dx scattered.
They replace the unfolding that dominated small convolutions (LeNet's 8 x 8 maps made
GEMMs of 16 rows) and the packing of every chunk by the BLAS.

Chunks: the batch is unfolded a chunk at a time, never whole. A chunk is several whole
images when one image's col has at most COL_BUDGET elements (their cols side by side:
one product for all of them, scattered to z with the bias and activation), else a range
of output rows of one image (product straight into z). The activation's forward and
gradient bodies are the shared spans of `_activations.pxd`; dz and db are formed in one
pass over dout per chunk, dz going to scratch. Scratch (the caller's `scratch` array,
conv2d_scratch_size elements): GROUPS x (K + F) x (widest chunk) for the unfolded input
and dz, plus (GROUPS - 1) F K weight-gradient partials; the widest chunk has at most
max(COL_BUDGET / K, OW) columns, so besides the partials the scratch is about
GROUPS x COL_BUDGET x (1 + F / K) elements whatever the batch. Direct or lanes add two
packed kernels (2 F K) and per run its padded images (direct: x, dz and dw's shifted
copies, about C + 2 F + 3 planes; lanes: x, dz and z or dx of one block of L images,
at most LANE_BUDGET elements), none of which grows with the batch.

Parallelism and determinism: "units" (a multi-image chunk, or an image with its row
chunks) are cut into at most GROUPS contiguous runs, GROUPS = the machine's processor
count (fixed for the process); a run is one task, done in order with its own scratch,
and the OpenMP team shares out the tasks. Chunks and runs depend on the shapes and the
machine only, never on the thread count; each run sums its weight and bias gradients
(bias in double, LANES fixed lanes) into its own partial, and the partials are added in
run order at the end: results are bit-identical for any thread count. An image's dx is
written only by the run that owns the image. (Lanes: the units are the blocks of L
images.) The direct and lane kernels' z and dx are the same bits with AVX-512 and with
AVX2 (one chain of multiply-adds per output); dw adds vector lanes, 16 or 8, at the end.
"""
from cython cimport floating

cimport numpy as cnp
from libc.stdint cimport uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from ._activations cimport (ACT_IDENTITY, ACT_NUM_CODES, act_backward_span,
                            act_forward_span)
from ._blas cimport gemm
from ._buffers cimport array_data, float_type, optional_data
from ._common cimport nblocks, omp_get_num_procs, run_tasks, simd_clones_void
from ._nchw cimport array4_data, valid_outputs, window_outputs
from ._plan cimport PlanOp, submit

from . import _activations   # noqa: F401  (refuses to import when its codes are stale)

cdef extern from "_conv_direct.h" nogil:
    enum: FASTNN_C3_SLACK
    int fastnn_c3_level() noexcept
    void fastnn_c3_image(int level, const float *x, Py_ssize_t nc, Py_ssize_t hp,
                         Py_ssize_t wp, const float *w, Py_ssize_t nf, float *out,
                         Py_ssize_t oh, Py_ssize_t ow) noexcept
    void fastnn_c3_dw_image(int level, const float *x, Py_ssize_t nc, Py_ssize_t hp,
                            Py_ssize_t wp, const float *d, Py_ssize_t nf, Py_ssize_t oh,
                            Py_ssize_t r, float *xs, float *dw) noexcept
    Py_ssize_t fastnn_ck_lanes(int level) noexcept
    void fastnn_ck_dx_block(int level, const float *d, Py_ssize_t fs, Py_ssize_t dr,
                            Py_ssize_t nf, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh,
                            Py_ssize_t kw, const float *w, Py_ssize_t nc, float *dx,
                            Py_ssize_t cs, Py_ssize_t dxr) noexcept
    void fastnn_ck_block(int level, const float *x, Py_ssize_t nc, Py_ssize_t hp,
                         Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw, const float *w,
                         Py_ssize_t nf, float *out, Py_ssize_t oh, Py_ssize_t ow) noexcept
    void fastnn_ck_dw_block(int level, const float *x, Py_ssize_t nc, Py_ssize_t hp,
                            Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw, const float *d,
                            Py_ssize_t nf, Py_ssize_t fs, Py_ssize_t dr, Py_ssize_t oh,
                            Py_ssize_t ow, float *dw) noexcept

cnp.import_array()

cdef enum:
    COL_BUDGET = 1 << 16   # elements of one chunk's unfolded input (K x columns), at most
    MAX_GROUPS = 16        # runs of chunks (parallel tasks) at most
    LANES = 16             # double accumulators per bias-gradient sum (fixed association)
    ALIGN = 16             # floats per 64 bytes: the direct dw's rows and alignment
    LANE_BUDGET = 1 << 20  # elements of a run's lane buffers, at most

cdef Py_ssize_t GROUPS = max(1, min(<int>MAX_GROUPS, omp_get_num_procs()))
cdef int C3_LEVEL = fastnn_c3_level()   # the direct 3x3 kernel: 2 AVX-512, 1 AVX2, 0 none


def direct_level():
    """The instruction set of the direct and lane kernels on this CPU: "avx512", "avx2"
    or None (im2col + GEMM only)."""
    return {2: "avx512", 1: "avx2"}.get(C3_LEVEL)


def _set_direct_level(level):
    """Tests: run the direct and lane kernels at a lower level than the CPU's (1: AVX2,
    0: off, im2col + GEMM only); returns the previous level. Scratch sizes depend on
    it: size buffers after setting it."""
    global C3_LEVEL
    if level not in (0, 1, 2) or level > fastnn_c3_level():
        raise ValueError("fastnn.kernels: level %r is not available on this CPU" % (level,))
    previous, C3_LEVEL = C3_LEVEL, level
    return previous


ctypedef struct Conv:
    Py_ssize_t n, c, h, w, f, kh, kw, sh, sw, ph, pw, dh, dw   # PlanOp.dim, in order
    Py_ssize_t oh, ow, k, p
    Py_ssize_t imgs        # images per chunk (1: chunks of output rows)
    Py_ssize_t rows        # output rows per chunk (OH with whole images)
    Py_ssize_t cols        # columns of the widest chunk
    Py_ssize_t units       # whole-image chunks, or images cut into row chunks
    Py_ssize_t groups      # runs of units
    bint direct            # float32 calls on the direct 3x3 kernels (`_direct`)
    Py_ssize_t xpad, dpad  # direct: elements of a run's padded x and padded dz
    Py_ssize_t r           # direct: OW rounded up to 16 (dw's aligned rows)
    Py_ssize_t dwork       # direct: elements of a run's dw operands (`_backward_direct`)
    bint lanes             # float32 calls on the lane kernels (`_lanes`)
    Py_ssize_t L, blocks   # lanes: images per block (vector lanes), blocks of the batch
    Py_ssize_t lx, ldz     # lanes: elements of a run's padded x and padded dz, by lanes
    Py_ssize_t ltmp        # lanes: elements of a run's z, dz or dx of a block, by lanes
    Py_ssize_t region      # direct or lanes: elements of a run's own buffers


cdef void _geometry(Conv *cv, const Py_ssize_t *dim) noexcept nogil:
    """Sizes from dim (N, C, H, W, F, KH, KW, sh, sw, ph, pw, dh, dw; checked by
    _conv_dims) and the chunking: a function of the shapes and GROUPS only."""
    cdef Py_ssize_t chunks, runs
    cv.n, cv.c, cv.h, cv.w, cv.f = dim[0], dim[1], dim[2], dim[3], dim[4]
    cv.kh, cv.kw, cv.sh, cv.sw = dim[5], dim[6], dim[7], dim[8]
    cv.ph, cv.pw, cv.dh, cv.dw = dim[9], dim[10], dim[11], dim[12]
    cv.oh = (cv.h + 2 * cv.ph - cv.dh * (cv.kh - 1) - 1) // cv.sh + 1
    cv.ow = (cv.w + 2 * cv.pw - cv.dw * (cv.kw - 1) - 1) // cv.sw + 1
    cv.k = cv.c * cv.kh * cv.kw
    cv.p = cv.oh * cv.ow
    if cv.k * cv.p <= COL_BUDGET:
        # whole images; as many chunks as a multiple of the runs (balanced runs)
        chunks = nblocks(cv.n, max(1, COL_BUDGET // (cv.k * cv.p)))
        runs = max(1, min(GROUPS, cv.n))
        cv.imgs = max(1, nblocks(cv.n, max(1, nblocks(chunks, runs) * runs)))
        cv.rows = cv.oh
        cv.units = nblocks(cv.n, cv.imgs)
    else:
        cv.imgs = 1
        cv.rows = nblocks(cv.oh, nblocks(cv.k * cv.p, COL_BUDGET))
        cv.units = cv.n
    cv.cols = cv.imgs * cv.rows * cv.ow
    cv.groups = min(GROUPS, cv.units)
    cv.direct = _direct(cv)
    cv.xpad = cv.c * (cv.h + 2 * cv.ph) * (cv.w + 2 * cv.pw) + FASTNN_C3_SLACK
    cv.dpad = cv.f * (cv.h + 2) * (cv.w + 2) + FASTNN_C3_SLACK
    cv.r = nblocks(cv.ow, ALIGN) * ALIGN
    cv.dwork = (cv.f * cv.oh + 3 * (cv.oh + 2)) * cv.r + ALIGN
    cv.region = cv.xpad + cv.dpad + cv.dwork
    cv.L = fastnn_ck_lanes(C3_LEVEL)
    cv.lx = cv.c * (cv.h + 2 * cv.ph) * (cv.w + 2 * cv.pw) * cv.L + 2 * cv.L
    cv.ldz = cv.f * cv.p * cv.L + 2 * cv.L
    cv.ltmp = max(cv.f * cv.p * cv.L + 2 * cv.L, cv.lx)
    cv.lanes = _lanes(cv)
    if cv.lanes:
        cv.blocks = nblocks(cv.n, cv.L)
        cv.groups = min(GROUPS, cv.blocks)
        cv.region = cv.lx + cv.ldz + cv.ltmp


cdef inline bint _lanes(const Conv *cv) noexcept nogil:
    """Whether float32 calls run on the lane kernels (_conv_direct.h's lane mode: a
    vector holds one pixel of L images, so narrow images fill whole vectors) instead of
    im2col + GEMM: not `_direct`, stride 1, no dilation, 3 or 5 kernel columns, padding
    below the kernel, a batch of 8 or more, 8 filters and 32 products per output or more
    (LeNet's first convolution, 6 filters of 1 x 5 x 5, ran 1.4x slower than im2col: its
    tiles are too narrow to pay for moving images into lanes and back), a run's buffers
    of at most LANE_BUDGET elements, a CPU with AVX2 and FMA."""
    return (C3_LEVEL > 0 and not cv.direct and cv.sh == 1 and cv.sw == 1 and cv.dh == 1
            and cv.dw == 1 and (cv.kw == 3 or cv.kw == 5) and cv.ph < cv.kh
            and cv.pw < cv.kw and cv.n >= 8 and cv.f >= 8 and cv.k >= 32
            and cv.lx + cv.ldz + cv.ltmp <= LANE_BUDGET)


cdef inline bint _direct(const Conv *cv) noexcept nogil:
    """Whether float32 calls run on the direct 3x3 kernels (_conv_direct.h) instead of
    im2col + GEMM: 3x3, stride 1, no dilation, padding at most 2 (dx is then the 3x3
    convolution of dz padded by 2 - padding with the flipped, transposed kernel), output
    rows of 16 at least (narrower ones fill too little of a tile), a CPU with AVX2 and
    FMA."""
    return (C3_LEVEL > 0 and cv.kh == 3 and cv.kw == 3 and cv.sh == 1 and cv.sw == 1
            and cv.dh == 1 and cv.dw == 1 and cv.ph <= 2 and cv.pw <= 2 and cv.ow >= 16)


cdef inline Py_ssize_t _direct_at(const Conv *cv) noexcept nogil:
    """Where the direct / lane region starts in scratch. Before it: per run, the
    unfolded input (K x cols) and dz (F x cols); weight-gradient partials of every run
    but the first (which sums into dw itself). The region: the two packed kernels
    (`_pack_direct`), then each run's own buffers (`region` elements, `_direct_x`)."""
    return _partials_at(cv) + max(0, cv.groups - 1) * cv.f * cv.k


cdef inline Py_ssize_t _partials_at(const Conv *cv) noexcept nogil:
    """Where the weight-gradient partials start in scratch (after the runs' unfolded
    inputs and dz)."""
    return cv.groups * (cv.k + cv.f) * cv.cols


cdef inline Py_ssize_t _scratch_size(const Conv *cv) noexcept nogil:
    return _direct_at(cv) + ((2 * cv.f * cv.k + cv.groups * cv.region)
                             if cv.direct or cv.lanes else 0)


cdef int _conv_dims(x_shape, w_shape, geom, Py_ssize_t *dim) except -1:
    """dim = (N, C, H, W, F, KH, KW, sh, sw, ph, pw, dh, dw), checked: 4-d shapes with
    matching channels, a geometry whose (dilated) kernel fits the padded input."""
    if len(x_shape) != 4 or len(w_shape) != 4 or len(geom) != 6:
        raise ValueError("fastnn.kernels: conv2d expects 4-d x and w and a 6-tuple geometry, "
                         "got %r, %r, %r" % (x_shape, w_shape, geom))
    if w_shape[1] != x_shape[1]:
        raise ValueError("fastnn.kernels: w has %d input channels, x has %d"
                         % (w_shape[1], x_shape[1]))
    values = tuple(x_shape) + (w_shape[0], w_shape[2], w_shape[3]) + tuple(geom)
    for i in range(13):
        dim[i] = values[i]
    if dim[0] < 0 or dim[1] < 1 or dim[4] < 1:
        raise ValueError("fastnn.kernels: conv2d needs N >= 0, C >= 1 and F >= 1, got x %r, "
                         "w %r" % (x_shape, w_shape))
    window_outputs(dim[2], dim[5], dim[7], dim[9], dim[11])
    window_outputs(dim[3], dim[6], dim[8], dim[10], dim[12])
    return 0


def conv2d_scratch_size(x_shape, w_shape, geom):
    """Elements of working memory conv2d_forward / conv2d_backward need (see the module
    docstring for the bound)."""
    cdef Py_ssize_t dim[13]
    cdef Conv cv
    _conv_dims(x_shape, w_shape, geom, dim)
    _geometry(&cv, dim)
    return _scratch_size(&cv)


# ---------------------------------------------------------------------------------------
# unfolding: rows [r0, r1) of images n0 .. n0 + nb (L = (r1 - r0) OW columns per image)
# ---------------------------------------------------------------------------------------
cdef inline void _gather_rows(floating *dst, const floating *src, Py_ssize_t rows,
                              Py_ssize_t ld, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t ow,
                              Py_ssize_t sw) noexcept nogil:
    """`rows` rows of ow elements (dst contiguous, src rows ld apart): dst[j] =
    src[(j - lo) sw] for j in [lo, hi), zeros elsewhere."""
    cdef Py_ssize_t t, j, n = hi - lo
    if sw == 1 and lo == 0 and hi == ow:      # no padding in this row: a plain copy
        for t in range(rows):
            for j in range(n):
                dst[t * ow + j] = src[t * ld + j]
        return
    for t in range(rows):
        for j in range(lo):
            dst[j] = 0
        if sw == 1:
            for j in range(n):
                dst[lo + j] = src[j]
        else:
            for j in range(n):
                dst[lo + j] = src[j * sw]
        for j in range(hi, ow):
            dst[j] = 0
        dst += ow
        src += ld


cdef inline void _scatter_rows(floating *dst, const floating *src, Py_ssize_t rows,
                               Py_ssize_t ld, Py_ssize_t n, Py_ssize_t ow,
                               Py_ssize_t sw) noexcept nogil:
    """The adjoint of _gather_rows on the copied part: dst[t ld + j sw] += src[t ow + j]
    for j < n (src: the first copied element of the first row)."""
    cdef Py_ssize_t t, j
    for t in range(rows):
        if sw == 1:
            for j in range(n):
                dst[j] = dst[j] + src[j]
        else:
            for j in range(n):
                dst[j * sw] = dst[j * sw] + src[j]
        dst += ld
        src += ow


cdef simd_clones_void _unfold(const Conv *cv, floating *col, floating *x, Py_ssize_t n0,
                              Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1,
                              bint adjoint) noexcept nogil:
    """col (K, nb L), column b L + (i - r0) OW + j, = the windows of x (im2col); or,
    `adjoint`, x += those windows' entries of col (col2im). Per kernel offset (u, v) the
    output rows and columns that read the input (not the padding) are found once."""
    cdef Py_ssize_t h = cv.h, w = cv.w, ow = cv.ow, kh = cv.kh, kw = cv.kw
    cdef Py_ssize_t sw = cv.sw, ld = cv.sh * w, L = (r1 - r0) * ow, width = nb * L
    cdef Py_ssize_t u, v, b, c, ilo, ihi, lo, hi, top, left
    cdef floating *row
    cdef floating *img        # the input cell of the chunk's first copied element
    for u in range(kh):
        top = u * cv.dh - cv.ph                  # input row of output row 0
        valid_outputs(h, r1, cv.sh, top, &ilo, &ihi)
        ilo = max(ilo, r0)
        ihi = max(ihi, ilo)
        for v in range(kw):
            left = v * cv.dw - cv.pw             # input column of output column 0
            valid_outputs(w, ow, sw, left, &lo, &hi)
            for b in range(nb):
                for c in range(cv.c):
                    row = col + ((c * kh + u) * kw + v) * width + b * L
                    img = (x + ((n0 + b) * cv.c + c) * h * w + (ilo * cv.sh + top) * w
                           + lo * sw + left)
                    if adjoint:
                        _scatter_rows(img, row + (ilo - r0) * ow + lo, ihi - ilo, ld,
                                      hi - lo, ow, sw)
                        continue
                    memset(row, 0, (ilo - r0) * ow * sizeof(floating))
                    _gather_rows(row + (ilo - r0) * ow, img, ihi - ilo, ld, lo, hi, ow, sw)
                    memset(row + (ihi - r0) * ow, 0, (r1 - ihi) * ow * sizeof(floating))


# ---------------------------------------------------------------------------------------
# the elementwise passes of a chunk
# ---------------------------------------------------------------------------------------
cdef inline double _sum(const floating *a, Py_ssize_t n) noexcept nogil:
    """sum(a[:n]) in double: LANES running sums (lane j takes a[i] with i % LANES == j),
    then added in lane order -- the same association on every machine."""
    cdef double acc[LANES]
    cdef double s = 0
    cdef Py_ssize_t i = 0, j
    for j in range(LANES):
        acc[j] = 0
    while i + LANES <= n:
        for j in range(LANES):
            acc[j] += a[i + j]
        i += LANES
    for j in range(n - i):
        acc[j] += a[i + j]
    for j in range(LANES):
        s += acc[j]
    return s


cdef simd_clones_void _emit(const Conv *cv, const floating *zc, Py_ssize_t ld,
                            const floating *b, floating *z, floating *out, Py_ssize_t n0,
                            Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1, int code,
                            floating p, bint act) noexcept nogil:
    """For every (image, filter) span of the chunk: z = zc (+ b) (zc: (F, nb L) with row
    stride ld; zc == z when the product went to z), then out = f(z)."""
    cdef Py_ssize_t L = (r1 - r0) * cv.ow, bi, f, j, at
    cdef const floating *src
    cdef floating *zs
    cdef floating bf
    for bi in range(nb):
        for f in range(cv.f):
            at = ((n0 + bi) * cv.f + f) * cv.p + r0 * cv.ow
            zs = z + at
            src = zc + f * ld + bi * L
            if b != NULL:
                bf = b[f]
                for j in range(L):
                    zs[j] = src[j] + bf
            elif src != zs:
                memcpy(zs, src, L * sizeof(floating))
            if act:
                act_forward_span(zs, out + at, L, code, p)


cdef simd_clones_void _dz_db(const Conv *cv, const floating *dout, const floating *z,
                             const floating *out, floating *dz, double *dbsum,
                             Py_ssize_t n0, Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1,
                             int code, floating p, bint act) noexcept nogil:
    """dz (F, nb L) = dout * f'(z, out) over the chunk (a copy of dout without an
    activation); dbsum[f] += the sum of dz's row f (in span order), unless NULL."""
    cdef Py_ssize_t L = (r1 - r0) * cv.ow, ld = nb * L, bi, f, at
    cdef floating *d
    for bi in range(nb):
        for f in range(cv.f):
            at = ((n0 + bi) * cv.f + f) * cv.p + r0 * cv.ow
            d = dz + f * ld + bi * L
            if act:
                act_backward_span(dout + at, z + at, out + at, d, L, code, p)
            else:
                memcpy(d, dout + at, L * sizeof(floating))
            if dbsum != NULL:
                dbsum[f] += _sum(d, L)


# ---------------------------------------------------------------------------------------
# the direct and lane kernels (float32): packed weights and padded images
# region at _direct_at: wf (F K), wt (F K), then `region` elements per run (direct: padded
# x, padded dz, dw's aligned dz rows and shifted x; lanes: x, dz and z / dx by lanes)
# ---------------------------------------------------------------------------------------
cdef void _pack_direct(const Conv *cv, const float *w, float *region) noexcept nogil:
    """wf[(c KK + k) F + f] = w[f, c, k] (the forward's weights, k = KW u + v, KK = KH
    KW); then dx's: direct, wt[(f KK + k) C + c] = w[f, c, KK - 1 - k] (the kernel
    flipped and transposed); lanes, wt[(k F + f) C + c] = w[f, c, k] (the scatter's)."""
    cdef Py_ssize_t f, c, k, kk = cv.kh * cv.kw
    cdef float *wt = region + cv.f * cv.k
    for f in range(cv.f):
        for c in range(cv.c):
            for k in range(kk):
                region[(c * kk + k) * cv.f + f] = w[(f * cv.c + c) * kk + k]
                if cv.lanes:
                    wt[(k * cv.f + f) * cv.c + c] = w[(f * cv.c + c) * kk + k]
                else:
                    wt[(f * kk + k) * cv.c + c] = w[(f * cv.c + c) * kk + kk - 1 - k]


cdef inline float *_direct_x(const Conv *cv, float *scratch, Py_ssize_t g) noexcept nogil:
    """Run g's padded x (its padded dz and dw's operands follow)."""
    return scratch + _direct_at(cv) + 2 * cv.f * cv.k + g * cv.region


cdef void _pad_image(const Conv *cv, const float *x, float *pad, bint zero) noexcept nogil:
    """pad (C, H + 2 ph, W + 2 pw, then the slack) = image x zero-padded; `zero`: zero
    the whole buffer first (a run's first image: the next ones only overwrite the
    interior, the padding stays zero)."""
    cdef Py_ssize_t c, r, hp = cv.h + 2 * cv.ph, wp = cv.w + 2 * cv.pw
    if zero:
        memset(pad, 0, cv.xpad * sizeof(float))
    for c in range(cv.c):
        for r in range(cv.h):
            memcpy(pad + (c * hp + r + cv.ph) * wp + cv.pw, x + (c * cv.h + r) * cv.w,
                   cv.w * sizeof(float))


cdef void _forward_direct(const ConvJob *job, Py_ssize_t g, float *scratch) noexcept nogil:
    """Run g's images: x padded into the run's buffer, z = the direct 3x3 convolution,
    then bias and activation."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t n, n0 = cv.units * g // cv.groups * cv.imgs
    cdef float *pad = _direct_x(cv, scratch, g)
    cdef float *z
    for n in range(n0, min(cv.n, cv.units * (g + 1) // cv.groups * cv.imgs)):
        _pad_image(cv, <const float *>op.ptr[0] + n * cv.c * cv.h * cv.w, pad, n == n0)
        z = <float *>op.ptr[3] + n * cv.f * cv.p
        fastnn_c3_image(C3_LEVEL, pad, cv.c, cv.h + 2 * cv.ph, cv.w + 2 * cv.pw,
                        scratch + _direct_at(cv), cv.f, z, cv.oh, cv.ow)
        if op.ptr[2] != NULL or job.act:
            _emit(cv, z, cv.p, <float *>op.ptr[2], <float *>op.ptr[3], <float *>op.ptr[4],
                  n, 1, 0, cv.oh, op.code, <float>op.arg[0], job.act)


cdef simd_clones_void _dz_rows(const Conv *cv, const float *dout, const float *z,
                               const float *out, float *drow, float *dpad, double *dbsum,
                               int code, float p, bint act) noexcept nogil:
    """One image's dz = dout * f'(z, out) (without an activation, dout itself) by rows:
    into drow's aligned rows (R apart) unless drow is NULL (then dz is dout); dbsum[f]
    += each row's sum unless NULL; into dpad, padded by 2 - padding, unless NULL."""
    cdef Py_ssize_t f, r, hq = cv.h + 2, wq = cv.w + 2, top = 2 - cv.ph, left = 2 - cv.pw
    cdef Py_ssize_t at
    cdef const float *row
    cdef float *aligned
    for f in range(cv.f):
        for r in range(cv.oh):
            at = (f * cv.oh + r) * cv.ow
            row = dout + at
            if drow != NULL:
                aligned = drow + (f * cv.oh + r) * cv.r
                if act:
                    act_backward_span(row, z + at, out + at, aligned, cv.ow, code, p)
                else:
                    memcpy(aligned, row, cv.ow * sizeof(float))
                row = aligned
            if dbsum != NULL:
                dbsum[f] += _sum(row, cv.ow)
            if dpad != NULL:
                memcpy(dpad + (f * hq + r + top) * wq + left, row, cv.ow * sizeof(float))


cdef void _backward_direct(const ConvJob *job, Py_ssize_t g, float *scratch) noexcept nogil:
    """Run g's images: dz in aligned rows (dout itself when its rows are aligned and no
    activation is fused), db's sums; x padded; dw (+)= the direct weight gradient; with
    dx, dz zero-padded by 2 - padding and dx = the direct 3x3 convolution of it with the
    flipped, transposed kernel. The padded buffers are zeroed once, then only their
    interiors rewritten."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t n, at, n0 = cv.units * g // cv.groups * cv.imgs
    cdef Py_ssize_t n1 = min(cv.n, cv.units * (g + 1) // cv.groups * cv.imgs)
    cdef float *xpad = _direct_x(cv, scratch, g)
    cdef float *dpad = xpad + cv.xpad if op.ptr[5] != NULL else NULL
    cdef float *drow = <float *>((<uintptr_t>(xpad + cv.xpad + cv.dpad) + 63)
                                 & ~(<uintptr_t>63))
    cdef float *xs = drow + cv.f * cv.oh * cv.r
    cdef float *dwg = _run_dw(job, scratch, g)
    cdef bint inplace = not job.act and cv.r == cv.ow
    memset(dwg, 0, cv.f * cv.k * sizeof(float))
    if dpad != NULL:
        memset(dpad, 0, cv.dpad * sizeof(float))
    if not inplace:
        memset(drow, 0, cv.f * cv.oh * cv.r * sizeof(float))
    for n in range(n0, n1):
        at = n * cv.f * cv.p
        _pad_image(cv, <const float *>op.ptr[1] + n * cv.c * cv.h * cv.w, xpad, n == n0)
        _dz_rows(cv, <const float *>op.ptr[0] + at, <const float *>op.ptr[3] + at,
                 <const float *>op.ptr[4] + at, NULL if inplace else drow, dpad,
                 job.dbsum + g * cv.f if job.dbsum != NULL else NULL, op.code,
                 <float>op.arg[0], job.act)
        fastnn_c3_dw_image(C3_LEVEL, xpad, cv.c, cv.h + 2 * cv.ph, cv.w + 2 * cv.pw,
                           <const float *>op.ptr[0] + at if inplace else drow, cv.f, cv.oh,
                           cv.r, xs, dwg)
        if dpad != NULL:
            fastnn_c3_image(C3_LEVEL, dpad, cv.f, cv.h + 2, cv.w + 2,
                            scratch + _direct_at(cv) + cv.f * cv.k, cv.c,
                            <float *>op.ptr[5] + n * cv.c * cv.h * cv.w, cv.h, cv.w)


cdef void _to_lanes(const float *src, Py_ssize_t nb, Py_ssize_t bs, Py_ssize_t planes,
                    Py_ssize_t qs, Py_ssize_t h, Py_ssize_t w, Py_ssize_t top,
                    Py_ssize_t left, Py_ssize_t hp, Py_ssize_t wp, Py_ssize_t L, float *dst,
                    Py_ssize_t size) noexcept nogil:
    """dst (planes, hp, wp, L) = nb images of `planes` (h, w) planes, plane q of image b
    at src + b bs + q qs, zero-padded by (top, left), image b in lane b (lanes nb.. and
    the padding zero); size: dst's elements."""
    cdef Py_ssize_t b, q, i, j
    cdef const float *s
    cdef float *d
    memset(dst, 0, size * sizeof(float))
    for b in range(nb):
        for q in range(planes):
            s = src + b * bs + q * qs
            for i in range(h):
                d = dst + ((q * hp + i + top) * wp + left) * L + b
                for j in range(w):
                    d[j * L] = s[i * w + j]


cdef inline void _x_lanes(const Conv *cv, const float *x, Py_ssize_t n0, Py_ssize_t nb,
                          float *xt) noexcept nogil:
    """xt = images n0 .. n0 + nb of x by lanes, zero-padded."""
    _to_lanes(x + n0 * cv.c * cv.h * cv.w, nb, cv.c * cv.h * cv.w, cv.c, cv.h * cv.w, cv.h,
              cv.w, cv.ph, cv.pw, cv.h + 2 * cv.ph, cv.w + 2 * cv.pw, cv.L, xt, cv.lx)


cdef void _from_lanes(const float *src, Py_ssize_t nb, Py_ssize_t planes, Py_ssize_t h,
                      Py_ssize_t w, Py_ssize_t top, Py_ssize_t left, Py_ssize_t hp,
                      Py_ssize_t wp, Py_ssize_t L, float *dst) noexcept nogil:
    """dst (nb, planes, h, w) = lanes 0..nb-1 of src (planes, hp, wp, L) without its
    padding (top, left): `_to_lanes`'s inverse."""
    cdef Py_ssize_t b, q, i, j
    cdef const float *s
    for b in range(nb):
        for q in range(planes):
            for i in range(h):
                s = src + ((q * hp + i + top) * wp + left) * L + b
                for j in range(w):
                    dst[((b * planes + q) * h + i) * w + j] = s[j * L]


cdef void _forward_lanes(const ConvJob *job, Py_ssize_t g, float *scratch) noexcept nogil:
    """Run g's blocks of L images: x by lanes, z = the lane kernel's convolution, back to
    images, then bias and activation."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t blk, n0, nb, b
    cdef float *xt = _direct_x(cv, scratch, g)
    cdef float *tmp = xt + cv.lx + cv.ldz
    cdef float *z
    for blk in range(cv.blocks * g // cv.groups, cv.blocks * (g + 1) // cv.groups):
        n0 = blk * cv.L
        nb = min(cv.L, cv.n - n0)
        _x_lanes(cv, <const float *>op.ptr[0], n0, nb, xt)
        fastnn_ck_block(C3_LEVEL, xt, cv.c, cv.h + 2 * cv.ph, cv.w + 2 * cv.pw, cv.kh, cv.kw,
                        scratch + _direct_at(cv), cv.f, tmp, cv.oh, cv.ow)
        z = <float *>op.ptr[3]
        _from_lanes(tmp, nb, cv.f, cv.oh, cv.ow, 0, 0, cv.oh, cv.ow, cv.L,
                    z + n0 * cv.f * cv.p)
        if op.ptr[2] != NULL or job.act:
            for b in range(nb):
                _emit(cv, z + (n0 + b) * cv.f * cv.p, cv.p, <float *>op.ptr[2], z,
                      <float *>op.ptr[4], n0 + b, 1, 0, cv.oh, op.code, <float>op.arg[0],
                      job.act)


cdef void _backward_lanes(const ConvJob *job, Py_ssize_t g, float *scratch) noexcept nogil:
    """Run g's blocks: dz and db of the block's images, dz and x by lanes, dw (+)= the
    lane weight gradient, dx = dz's products with the kernel scattered onto a padded dx
    (the multiply-adds of the product, none on the padding), back to images."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t blk, n0, nb
    cdef Py_ssize_t hp = cv.h + 2 * cv.ph, wp = cv.w + 2 * cv.pw
    cdef float *xt = _direct_x(cv, scratch, g)
    cdef float *dzt = xt + cv.lx
    cdef float *tmp = dzt + cv.ldz
    cdef float *dwg = _run_dw(job, scratch, g)
    memset(dwg, 0, cv.f * cv.k * sizeof(float))
    for blk in range(cv.blocks * g // cv.groups, cv.blocks * (g + 1) // cv.groups):
        n0 = blk * cv.L
        nb = min(cv.L, cv.n - n0)
        _dz_db(cv, <float *>op.ptr[0], <float *>op.ptr[3], <float *>op.ptr[4], tmp,
               job.dbsum + g * cv.f if job.dbsum != NULL else NULL, n0, nb, 0, cv.oh,
               op.code, <float>op.arg[0], job.act)
        _to_lanes(tmp, nb, cv.p, cv.f, nb * cv.p, cv.oh, cv.ow, 0, 0, cv.oh, cv.ow, cv.L,
                  dzt, cv.ldz)
        _x_lanes(cv, <const float *>op.ptr[1], n0, nb, xt)
        fastnn_ck_dw_block(C3_LEVEL, xt, cv.c, hp, wp, cv.kh, cv.kw, dzt, cv.f,
                           cv.p * cv.L, cv.ow * cv.L, cv.oh, cv.ow, dwg)
        if op.ptr[5] != NULL:
            memset(tmp, 0, cv.lx * sizeof(float))
            fastnn_ck_dx_block(C3_LEVEL, dzt, cv.p * cv.L, cv.ow * cv.L, cv.f, cv.oh, cv.ow,
                               cv.kh, cv.kw, scratch + _direct_at(cv) + cv.f * cv.k, cv.c,
                               tmp, hp * wp * cv.L, wp * cv.L)
            _from_lanes(tmp, nb, cv.c, cv.h, cv.w, cv.ph, cv.pw, hp, wp, cv.L,
                        <float *>op.ptr[5] + n0 * cv.c * cv.h * cv.w)


# ---------------------------------------------------------------------------------------
# a run of chunks (one task)
# forward:  ptr = (x, w, b, z, out, scratch)
# backward: ptr = (dout, x, w, z, out, dx, dw, db, scratch)
# dim = (N, C, H, W, F, KH, KW, sh, sw, ph, pw, dh, dw); code, arg[0] = the activation
# ---------------------------------------------------------------------------------------
ctypedef struct ConvJob:
    const PlanOp *op
    Conv cv
    bint backward
    bint act           # forward: out = f(z) is computed; backward: dz = dout * f'
    double *dbsum      # backward with db: (groups, F) partial sums, zeroed


cdef inline floating *_run_dw(const ConvJob *job, floating *scratch,
                              Py_ssize_t g) noexcept nogil:
    """Where run g sums its weight gradient: dw itself for run 0, else its partial."""
    if g == 0:
        return <floating *>job.op.ptr[6]
    return scratch + _partials_at(&job.cv) + (g - 1) * job.cv.f * job.cv.k


cdef void _forward_chunk(const ConvJob *job, floating *col, floating *zc, Py_ssize_t n0,
                         Py_ssize_t nb, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Unfold the chunk, z = W col (one image: straight into z, rows of stride P; several:
    into zc), then bias and activation (the scatter from zc to z on the way)."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t ncols = nb * (r1 - r0) * cv.ow, ld = ncols
    cdef floating *z = <floating *>op.ptr[3]
    _unfold(cv, col, <floating *>op.ptr[0], n0, nb, r0, r1, False)
    if nb == 1:
        zc = z + n0 * cv.f * cv.p + r0 * cv.ow
        ld = cv.p
    gemm(False, False, cv.f, ncols, cv.k, <floating *>op.ptr[1], cv.k, col, ncols, 0, zc,
         ld)
    if op.ptr[2] != NULL or job.act or nb > 1:
        _emit(cv, zc, ld, <floating *>op.ptr[2], z, <floating *>op.ptr[4], n0, nb, r0, r1,
              op.code, <floating>op.arg[0], job.act)


cdef void _backward_chunk(const ConvJob *job, Py_ssize_t g, floating *col, floating *dz,
                          floating *dwg, bint first, Py_ssize_t n0, Py_ssize_t nb,
                          Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dz and db of the chunk, then dw (+)= dz col^T, then dx += col2im(W^T dz)."""
    cdef const Conv *cv = &job.cv
    cdef const PlanOp *op = job.op
    cdef Py_ssize_t ncols = nb * (r1 - r0) * cv.ow, size = cv.c * cv.h * cv.w
    cdef floating *dx = <floating *>op.ptr[5]
    _dz_db(cv, <floating *>op.ptr[0], <floating *>op.ptr[3], <floating *>op.ptr[4], dz,
           job.dbsum + g * cv.f if job.dbsum != NULL else NULL, n0, nb, r0, r1, op.code,
           <floating>op.arg[0], job.act)
    _unfold(cv, col, <floating *>op.ptr[1], n0, nb, r0, r1, False)
    gemm(False, True, cv.f, cv.k, ncols, dz, ncols, col, ncols, 0 if first else 1, dwg,
         cv.k)
    if dx == NULL:
        return
    gemm(True, False, cv.k, ncols, cv.f, <floating *>op.ptr[2], cv.k, dz, ncols, 0, col,
         ncols)
    if r0 == 0:
        memset(dx + n0 * size, 0, nb * size * sizeof(floating))
    _unfold(cv, col, dx, n0, nb, r0, r1, True)


cdef void _run(const ConvJob *job, Py_ssize_t g, floating *scratch) noexcept nogil:
    """Run g: its units in order, each unit's chunks in order."""
    cdef const Conv *cv = &job.cv
    cdef Py_ssize_t u, n0, nb, r0, r1
    cdef floating *col = scratch + g * (cv.k + cv.f) * cv.cols
    cdef floating *zc = col + cv.k * cv.cols
    cdef floating *dwg = NULL
    cdef bint first = True
    if floating is float:
        if cv.lanes or cv.direct:      # fastnn's own kernels: a run function each way
            if cv.lanes and job.backward:
                _backward_lanes(job, g, scratch)
            elif cv.lanes:
                _forward_lanes(job, g, scratch)
            elif job.backward:
                _backward_direct(job, g, scratch)
            else:
                _forward_direct(job, g, scratch)
            return
    if job.backward:
        dwg = _run_dw(job, scratch, g)
    for u in range(cv.units * g // cv.groups, cv.units * (g + 1) // cv.groups):
        n0 = u * cv.imgs
        nb = min(cv.imgs, cv.n - n0)
        r0 = 0
        while r0 < cv.oh:
            r1 = min(cv.oh, r0 + cv.rows)
            if job.backward:
                _backward_chunk(job, g, col, zc, dwg, first, n0, nb, r0, r1)
            else:
                _forward_chunk(job, col, zc, n0, nb, r0, r1)
            first = False
            r0 = r1


cdef void _run_task(const void *ctx, Py_ssize_t g) noexcept nogil:
    cdef const ConvJob *job = <const ConvJob *>ctx
    cdef void *scratch = job.op.ptr[8 if job.backward else 5]
    if job.op.flt:
        _run(job, g, <double *>scratch)
    else:
        _run(job, g, <float *>scratch)


cdef int _forward_op(const PlanOp *op) noexcept nogil:
    cdef ConvJob job
    memset(&job, 0, sizeof(job))
    job.op = op
    _geometry(&job.cv, op.dim)
    job.act = op.code != ACT_IDENTITY or op.ptr[3] != op.ptr[4]
    if (job.cv.direct or job.cv.lanes) and not op.flt:
        _pack_direct(&job.cv, <const float *>op.ptr[1],
                     <float *>op.ptr[5] + _direct_at(&job.cv))
    run_tasks(_run_task, &job, job.cv.groups, op.nthreads)
    return 0


cdef void _sum_partials(const ConvJob *job, floating *scratch) noexcept nogil:
    """dw += the runs' partials in run order; db = the runs' sums in run order."""
    cdef const Conv *cv = &job.cv
    cdef Py_ssize_t g, j, fk = cv.f * cv.k
    cdef floating *dw = <floating *>job.op.ptr[6]
    cdef floating *db = <floating *>job.op.ptr[7]
    cdef floating *part = scratch + _partials_at(cv)
    cdef double s
    if cv.groups == 0:      # an empty batch: sums over nothing
        memset(dw, 0, fk * sizeof(floating))
    for g in range(1, cv.groups):
        for j in range(fk):
            dw[j] = dw[j] + part[(g - 1) * fk + j]
    if db != NULL:
        for j in range(cv.f):
            s = 0
            for g in range(cv.groups):
                s += job.dbsum[g * cv.f + j]
            db[j] = <floating>s


cdef int _backward_op(const PlanOp *op) noexcept nogil:
    cdef ConvJob job
    memset(&job, 0, sizeof(job))
    job.op = op
    job.backward = True
    _geometry(&job.cv, op.dim)
    job.act = op.code != ACT_IDENTITY
    if op.ptr[7] != NULL:
        job.dbsum = <double *>calloc(max(1, job.cv.groups * job.cv.f), sizeof(double))
        if job.dbsum == NULL:
            return -1
    if (job.cv.direct or job.cv.lanes) and not op.flt:
        _pack_direct(&job.cv, <const float *>op.ptr[2],
                     <float *>op.ptr[8] + _direct_at(&job.cv))
    run_tasks(_run_task, &job, job.cv.groups, op.nthreads)
    if op.flt:
        _sum_partials(&job, <double *>op.ptr[8])
    else:
        _sum_partials(&job, <float *>op.ptr[8])
    free(job.dbsum)
    return 0


# ---------------------------------------------------------------------------------------
# def wrappers: every array checked in C (dtype, C-contiguity, shape, writeability)
# ---------------------------------------------------------------------------------------
cdef int _pack(PlanOp *op, Conv *cv, x, w, z, out, geom, int code, double p,
               int nthreads, int first, bint backward) except -1:
    """The part both calls share: code, sizes, geometry, precision; x and w checked into
    slots `first` and first + 1, z and out into 3 and 4. Returns the dtype number."""
    if code < 0 or code >= ACT_NUM_CODES:
        raise ValueError("fastnn.kernels: unknown activation code %r" % (code,))
    memset(op, 0, sizeof(PlanOp))
    if not isinstance(x, cnp.ndarray) or not isinstance(w, cnp.ndarray):
        raise TypeError("fastnn.kernels: conv2d x and w must be ndarrays")
    _conv_dims(x.shape, w.shape, geom, op.dim)
    _geometry(cv, op.dim)
    cdef int tn = float_type(x)
    op.flt, op.code, op.nthreads, op.arg[0] = tn == cnp.NPY_DOUBLE, code, nthreads, p
    op.ptr[first] = array4_data(x, tn, cv.n, cv.c, cv.h, cv.w, False, "x")
    op.ptr[first + 1] = array4_data(w, tn, cv.f, cv.c, cv.kh, cv.kw, False, "w")
    op.ptr[3] = array4_data(z, tn, cv.n, cv.f, cv.oh, cv.ow, not backward, "z")
    op.ptr[4] = array4_data(out, tn, cv.n, cv.f, cv.oh, cv.ow, not backward, "out")
    return tn


def conv2d_forward(x, w, b, z, out, geom, scratch, int code, double p, int nthreads=1):
    """Write z (pre-activation) and out = f(z), both (N, F, OH, OW); z may be out when
    code is IDENTITY. scratch: conv2d_scratch_size(x.shape, w.shape, geom) elements."""
    cdef PlanOp op
    cdef Conv cv
    cdef int tn = _pack(&op, &cv, x, w, z, out, geom, code, p, nthreads, 0, False)
    op.ptr[2] = optional_data(b, tn, cv.f, -1, False, "b")
    op.ptr[5] = array_data(scratch, tn, _scratch_size(&cv), -2, True, "scratch")
    op.run = _forward_op
    submit(&op)


def conv2d_backward(dout, x, w, z, out, dx, dw, db, geom, scratch, int code, double p,
                    int nthreads=1):
    """Write dw (F, C, KH, KW), db (F,) unless None and dx (N, C, H, W) unless None."""
    cdef PlanOp op
    cdef Conv cv
    cdef int tn = _pack(&op, &cv, x, w, z, out, geom, code, p, nthreads, 1, True)
    op.ptr[0] = array4_data(dout, tn, cv.n, cv.f, cv.oh, cv.ow, False, "dout")
    if dx is not None:
        op.ptr[5] = array4_data(dx, tn, cv.n, cv.c, cv.h, cv.w, True, "dx")
    op.ptr[6] = array4_data(dw, tn, cv.f, cv.c, cv.kh, cv.kw, True, "dw")
    op.ptr[7] = optional_data(db, tn, cv.f, -1, True, "db")
    op.ptr[8] = array_data(scratch, tn, _scratch_size(&cv), -2, True, "scratch")
    op.run = _backward_op
    submit(&op)

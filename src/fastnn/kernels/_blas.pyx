# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Row-major matrix products: the one place where fastnn's kernels call BLAS.

    gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):  C = op(A) op(B) + beta C

Every matrix is row-major with a row stride (element (i, j) of A is a[i * lda + j]);
op(A) = A^T when `ta` (then A is k x m), op(B) = B^T when `tb`; C is m x n. beta = 0
overwrites C without reading it. Call sites think in row-major terms only: the
translation to column-major BLAS (C^T = op(B)^T op(A)^T, a row-major matrix read as its
column-major transpose) lives here, with the matrix-vector shapes sent to gemv (about
9x faster than gemm when one side is a single row or column).

Sizes. BLAS takes 32-bit ints, so a product with m, n or k above `int_limit` is split
into products that fit (k in slices accumulated with beta = 1); a leading dimension
above it (a row longer than the limit) cannot be expressed to BLAS at all, and that
product runs as plain loops (only shapes beyond 2^31 columns reach them). The limit is
INT_MAX; tests lower it (set_int_limit) to run these paths on small arrays. The BLAS
calls check their sizes once more: one above the limit (a bug upstream) fills the
result with NaN instead of handing BLAS a truncated int.

Library. The products go through function pointers (sgemm, dgemm, sgemv, dgemv,
Fortran BLAS signatures), one set per shape class (CLASSES): SciPy's OpenBLAS by
default, or another library's (`use_library`, chosen once per process by
`fastnn.kernels.blas_select` before any kernel runs). A product's class depends on its
shape alone, so a process computes a given product with one library whatever the
thread count.
"""
from cython cimport floating
from libc.limits cimport INT_MAX
from libc.math cimport NAN
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

cdef Py_ssize_t int_limit = INT_MAX

ctypedef void (*sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *,
                         float *, int *, float *, float *, int *) noexcept nogil
ctypedef void (*dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *,
                         double *, int *, double *, double *, int *) noexcept nogil
ctypedef void (*sgemv_t)(char *, int *, int *, float *, float *, int *, float *, int *,
                         float *, float *, int *) noexcept nogil
ctypedef void (*dgemv_t)(char *, int *, int *, double *, double *, int *, double *, int *,
                         double *, double *, int *) noexcept nogil

#: the shape classes a library is chosen for: matrix-vector products, and matrix
#: products with a side of at most THIN (edge tiles dominate them) or wider
CLASSES = ("vector", "thin", "wide")
cdef enum:
    THIN = 128
    THIN_CLASS = 0
    WIDE_CLASS = 1

cdef sgemm_t _sgemm[2]
cdef dgemm_t _dgemm[2]
cdef sgemv_t _sgemv = sgemv
cdef dgemv_t _dgemv = dgemv
_sgemm[THIN_CLASS] = _sgemm[WIDE_CLASS] = sgemm
_dgemm[THIN_CLASS] = _dgemm[WIDE_CLASS] = dgemm
cdef dict _library = {c: "openblas" for c in CLASSES}


def library():
    """{shape class: the name of the BLAS library its products call} ("openblas":
    SciPy's, the default)."""
    return dict(_library)


def use_library(str name, addresses=None, classes=CLASSES):
    """Route the products of `classes` (of CLASSES) to library `name`: `addresses` maps
    "sgemm", "dgemm", "sgemv" and "dgemv" to the addresses of its Fortran-interface
    functions (None: SciPy's OpenBLAS). The caller keeps the library loaded for the life
    of the process; call it before any kernel runs (`fastnn.kernels.blas_select` does,
    at import): a shape's class, and so its library, is then fixed for the process."""
    global _sgemv, _dgemv
    cdef int i
    if not set(classes) <= set(CLASSES):
        raise ValueError("use_library: classes must be among %s, got %r" % (CLASSES, classes))
    if addresses is not None and (sorted(addresses) != ["dgemm", "dgemv", "sgemm", "sgemv"]
                                  or not all(isinstance(a, int) and a > 0
                                             for a in addresses.values())):
        raise ValueError("use_library: addresses must map sgemm, dgemm, sgemv and "
                         "dgemv to non-null function addresses, got %r" % (addresses,))
    for c in classes:
        if c == "vector":
            _sgemv = sgemv if addresses is None else <sgemv_t><size_t>addresses["sgemv"]
            _dgemv = dgemv if addresses is None else <dgemv_t><size_t>addresses["dgemv"]
        else:
            i = THIN_CLASS if c == "thin" else WIDE_CLASS
            _sgemm[i] = sgemm if addresses is None else <sgemm_t><size_t>addresses["sgemm"]
            _dgemm[i] = dgemm if addresses is None else <dgemm_t><size_t>addresses["dgemm"]
        _library[c] = name


def matmul(a, b):
    """a @ b for C-contiguous 2-d float32 or float64 arrays of one dtype, through the
    kernels' `gemm` (for tests and the library choice); returns a new array."""
    import numpy as np
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == b.ndim == 2
            and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)):
        raise TypeError("matmul: expected two 2-d float32 or float64 arrays of one dtype")
    if a.shape[1] != b.shape[0]:
        raise ValueError("matmul: shapes %s and %s do not chain" % (a.shape, b.shape))
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    c = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if a.dtype == np.float32:
        _matmul[float](a, b, c)
    else:
        _matmul[double](a, b, c)
    return c


cdef void _matmul(floating[:, ::1] a, floating[:, ::1] b, floating[:, ::1] c) noexcept:
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if m == 0 or n == 0:
        return
    with nogil:
        gemm(False, False, m, n, k, &a[0, 0] if k else NULL, k, &b[0, 0] if k else NULL,
             n, 0, &c[0, 0], n)


def get_int_limit():
    """The largest size passed to one BLAS call."""
    return int_limit


def set_int_limit(Py_ssize_t n):
    """Lower (or restore, with INT_MAX) the largest size passed to one BLAS call; for
    tests of the splitting paths. Never change it while kernels run."""
    global int_limit
    if not 1 <= n <= INT_MAX:
        raise ValueError("set_int_limit: expected 1 <= n <= %d, got %d" % (INT_MAX, n))
    int_limit = n


cdef void gemm(bint ta, bint tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
               floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    cdef Py_ssize_t lim = int_limit, s = 0
    if m <= 0 or n <= 0:
        return
    if m > lim:        # slices of rows of C (rows of op(A))
        while s < m:
            gemm(ta, tb, min(lim, m - s), n, k, a + (s if ta else s * lda), lda, b, ldb,
                 beta, c + s * ldc, ldc)
            s += lim
    elif n > lim:      # slices of columns of C (columns of op(B))
        while s < n:
            gemm(ta, tb, m, min(lim, n - s), k, a, lda, b + (s * ldb if tb else s), ldb,
                 beta, c + s, ldc)
            s += lim
    elif k > lim:      # slices of the sum, accumulated in C
        while s < k:
            gemm(ta, tb, m, n, min(lim, k - s), a + (s * lda if ta else s), lda,
                 b + (s if tb else s * ldb), ldb, beta if s == 0 else 1, c, ldc)
            s += lim
    elif k == 0:
        _scale(m, n, beta, c, ldc)
    elif lda > lim or ldb > lim or ldc > lim:
        _gemm_loops(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)
    elif m == 1:       # one row of C: c = op(B)^T a
        _gemv(tb, n, k, b, ldb, a, lda if ta else 1, beta, c, 1)
    elif n == 1:       # one column of C: c = op(A) b
        _gemv(not ta, m, k, a, lda, b, 1 if tb else ldb, beta, c, ldc)
    else:
        _gemm_blas(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)


cdef inline bint _fit(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, Py_ssize_t d,
                      Py_ssize_t e, Py_ssize_t f) noexcept nogil:
    """Whether all six sizes fit in one BLAS call."""
    return max(max(max(a, b), max(c, d)), max(e, f)) <= int_limit


cdef void _fill_nan(Py_ssize_t m, Py_ssize_t n, floating *c, Py_ssize_t ldc) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = <floating>NAN


cdef inline void _gemm_blas(bint ta, bint tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                            const floating *a, Py_ssize_t lda, const floating *b,
                            Py_ssize_t ldb, floating beta, floating *c,
                            Py_ssize_t ldc) noexcept nogil:
    """Column-major BLAS on the transposes: C^T (n x m) = op(B)^T op(A)^T."""
    if not _fit(m, n, k, lda, ldb, ldc):
        _fill_nan(m, n, c, ldc)
        return
    cdef char transa = b'T' if tb else b'N', transb = b'T' if ta else b'N'
    cdef int M = <int>n, N = <int>m, K = <int>k, LDA = <int>ldb, LDB = <int>lda
    cdef int LDC = <int>ldc
    cdef floating one = 1
    cdef int cls = THIN_CLASS if min(min(m, n), k) <= THIN else WIDE_CLASS
    if floating is float:
        _sgemm[cls](&transa, &transb, &M, &N, &K, &one, <float *>b, &LDA, <float *>a,
                    &LDB, &beta, c, &LDC)
    else:
        _dgemm[cls](&transa, &transb, &M, &N, &K, &one, <double *>b, &LDA, <double *>a,
                    &LDB, &beta, c, &LDC)


cdef inline void _gemv(bint row_major_t, Py_ssize_t n, Py_ssize_t k, const floating *a,
                       Py_ssize_t lda, const floating *x, Py_ssize_t incx, floating beta,
                       floating *y, Py_ssize_t incy) noexcept nogil:
    """y (n) = M x + beta y, x of k elements, where M (n x k) is A^T for a row-major
    A (k x n) when `row_major_t` is False, and A (n x k) itself when it is True -- in
    column-major terms, the row-major array read with leading dimension lda."""
    if not _fit(n, k, lda, incx, incy, 1):
        _fill_nan(n, 1, y, incy)
        return
    cdef char trans = b'T' if row_major_t else b'N'
    cdef int rows = <int>(k if row_major_t else n), cols = <int>(n if row_major_t else k)
    cdef int LDA = <int>lda, INCX = <int>incx, INCY = <int>incy
    cdef floating one = 1
    if floating is float:
        _sgemv(&trans, &rows, &cols, &one, <float *>a, &LDA, <float *>x, &INCX, &beta, y,
               &INCY)
    else:
        _dgemv(&trans, &rows, &cols, &one, <double *>a, &LDA, <double *>x, &INCX, &beta, y,
               &INCY)


cdef void _scale(Py_ssize_t m, Py_ssize_t n, floating beta, floating *c,
                 Py_ssize_t ldc) noexcept nogil:
    """C = beta C, or zeros when beta == 0 (an empty sum)."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = beta * c[i * ldc + j] if beta != 0 else 0


cdef void _gemm_loops(bint ta, bint tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
                      floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    """The product as loops, for rows longer than BLAS can address; B is read along its
    rows: dot products (double sums) when tb, row updates of C otherwise."""
    cdef Py_ssize_t i, j, p
    cdef floating *ci
    cdef floating aip
    cdef double acc
    _scale(m, n, beta, c, ldc)
    for i in range(m):
        ci = c + i * ldc
        if tb:
            for j in range(n):
                acc = 0
                for p in range(k):
                    acc += <double>(a[p * lda + i] if ta else a[i * lda + p]) * b[j * ldb + p]
                ci[j] += <floating>acc
        else:
            for p in range(k):
                aip = a[p * lda + i] if ta else a[i * lda + p]
                for j in range(n):
                    ci[j] += aip * b[p * ldb + j]

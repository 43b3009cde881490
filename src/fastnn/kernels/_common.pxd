# cython: language_level=3
"""What every compiled kernel shares (cimported, inlined): how work is handed to the
OpenMP team, the fast exp family and branch-free selects of `_common.h`, and the
precision-generic spellings of libm functions over the fused `floating` type.

Work is cut into tasks whose boundaries depend on the shapes only (never on the thread
count); `run_tasks` runs them on the team, or in a plain loop when the team is one
thread (an OpenMP region costs ~0.7 us even then). A task function receives the
kernel's argument record (`ctx`, usually its PlanOp) and a task index.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport fabs, fabsf, sqrt, sqrtf

cdef extern from "_common.h" nogil:
    const int FASTNN_HAVE_OPENMP
    int omp_get_max_threads() noexcept
    int omp_get_num_procs() noexcept
    # `void`, plus (GCC, x86-64 Linux) AVX-512F/AVX2/baseline clones picked at load time
    ctypedef void simd_clones_void "FASTNN_SIMD_CLONES_VOID"
    ctypedef void simd_clones_flat_void "FASTNN_SIMD_CLONES_FLAT_VOID"
    float fastnn_self(bint c, float a, float b) noexcept
    double fastnn_seld(bint c, double a, double b) noexcept
    float fastnn_expf(float x) noexcept
    float fastnn_expm1f(float x) noexcept
    float fastnn_tanhf(float x) noexcept
    float fastnn_expf_neg(float x) noexcept
    double fastnn_exp_neg(double x) noexcept
    float fastnn_log1p01f(float e) noexcept
    double fastnn_log1p01(double e) noexcept


# ------------------------------------------------------------------- the team
ctypedef void (*task_fn)(const void *ctx, Py_ssize_t task) noexcept nogil


cdef inline int team(int nthreads, Py_ssize_t ntasks) noexcept nogil:
    """Threads worth starting for `ntasks` tasks: at most one per task, at least 1."""
    if nthreads < 1 or ntasks <= 1:
        return 1
    return <int>ntasks if ntasks < nthreads else nthreads


cdef inline void run_tasks(task_fn fn, const void *ctx, Py_ssize_t ntasks,
                           int nthreads) noexcept nogil:
    """fn(ctx, t) for t in range(ntasks): statically scheduled on the team, or in order
    on this thread when the team is one thread."""
    cdef Py_ssize_t t
    cdef int nt = team(nthreads, ntasks)
    if nt <= 1:
        for t in range(ntasks):
            fn(ctx, t)
        return
    for t in prange(ntasks, schedule="static", num_threads=nt):
        fn(ctx, t)


cdef inline Py_ssize_t nblocks(Py_ssize_t n, Py_ssize_t block) noexcept nogil:
    """Blocks of `block` elements covering n (n >= 0, block > 0)."""
    return (n + block - 1) // block


# ------------------------------------------------------------- elementary math
cdef inline floating sel(bint c, floating a, floating b) noexcept nogil:
    """c ? a : b without a branch (a bit blend; both operands are evaluated)."""
    if floating is float:
        return fastnn_self(c, a, b)
    else:
        return fastnn_seld(c, a, b)


cdef inline floating fexp_neg(floating x) noexcept nogil:
    """exp(x) for x <= 0, vectorisable, flushed to 0 where it is below the smallest
    normal number (see _common.h)."""
    if floating is float:
        return fastnn_expf_neg(x)
    else:
        return fastnn_exp_neg(x)


cdef inline floating fabs_(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating flog1p01(floating e) noexcept nogil:
    """log1p(e) for e in [0, 1], vectorisable."""
    if floating is float:
        return fastnn_log1p01f(e)
    else:
        return fastnn_log1p01(e)

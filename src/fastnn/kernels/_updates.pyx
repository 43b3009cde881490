# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Optimizer updates: compiled twin of `ref/updates.py` (torch.optim formulas).

Each function makes one fused in-place pass over p, g and the state buffers, split into
fixed chunks of CHUNK elements shared out by `run_tasks`. Updates are elementwise, so
results never depend on the thread count.

Shapes: every array is treated as a flat contiguous buffer of the same number of
elements (callers pass the parameter's own memory, so the update lands there); all
share one dtype. Momentum buffers are None exactly when momentum == 0.

Arithmetic mirrors the reference's operation order in the array's precision (scalars
rounded to the array dtype first), except Adam's, which folds the bias corrections
into two scalars to divide once per element (equal up to rounding). Weight decay is
added to a private copy of the gradient, never written into g; AdamW multiplies p by
1 - lr*wd before the step.

Vectorisation: the build passes -fno-math-errno, so GCC vectorises loops containing
sqrt (IEEE sqrt is correctly rounded, so vector and scalar give the same bits); each
update is one branch-free loop, compiled as AVX-512F / AVX2 / SSE2 clones picked at
load time (`simd_clones_void`). The sqrt-and-divide updates are bound by the divider's
throughput, not memory.
"""
from cython cimport floating

cimport numpy as cnp
from libc.math cimport pow, sqrt

from ._buffers cimport array_data, float_type, optional_data
from ._common cimport fsqrt, nblocks, run_tasks, simd_clones_void

cnp.import_array()

cdef enum:
    CHUNK = 16384   # elements per task

cdef enum Rule:
    SGD, ADAGRAD, RMSPROP, ADAM

cdef enum:          # Update.flags
    USE_WD = 1      # L2 weight decay added to the gradient (Adam: unless DECOUPLED)
    USE_MOM = 2
    NESTEROV = 4
    FIRST = 8       # SGD: the momentum buffer is uninitialised
    DECOUPLED = 16  # AdamW


ctypedef struct Update:
    Rule rule
    int flags
    bint flt
    Py_ssize_t n
    void *p
    const void *g
    void *s1           # state: momentum / state_sum / square_avg / exp_avg
    void *s2           # state: RMSprop momentum / exp_avg_sq
    double a[8]        # the rule's scalars, in the order its range function takes them


# ----------------------------------------------------------------------------------
# one range of each rule
# ----------------------------------------------------------------------------------
cdef simd_clones_void _sgd_range(floating* p, const floating* g, floating* buf,
                                 Py_ssize_t lo, Py_ssize_t hi, floating lr, floating mom,
                                 floating damp1, floating wd, int flags) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d, b
    cdef bint use_wd = flags & USE_WD, nesterov = flags & NESTEROV
    if not flags & USE_MOM:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            p[i] = p[i] - lr * d
    elif flags & FIRST:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            buf[i] = d
            p[i] = p[i] - lr * ((d + mom * d) if nesterov else d)
    else:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            b = buf[i] * mom + damp1 * d
            buf[i] = b
            p[i] = p[i] - lr * ((d + mom * b) if nesterov else b)


cdef simd_clones_void _adagrad_range(floating* p, const floating* g, floating* ss,
                                     Py_ssize_t lo, Py_ssize_t hi, floating clr,
                                     floating eps, floating wd, int flags) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d, q
    cdef bint use_wd = flags & USE_WD
    for i in range(lo, hi):
        d = (g[i] + wd * p[i]) if use_wd else g[i]
        q = ss[i] + d * d
        ss[i] = q
        p[i] = p[i] - (clr * d) / (fsqrt(q) + eps)


cdef simd_clones_void _rmsprop_range(floating* p, const floating* g, floating* sq,
                                     floating* buf, Py_ssize_t lo, Py_ssize_t hi,
                                     floating lr, floating alpha, floating alpha1,
                                     floating eps, floating mom, floating wd,
                                     int flags) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d, q, b
    cdef bint use_wd = flags & USE_WD
    if flags & USE_MOM:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            q = sq[i] * alpha + alpha1 * d * d
            sq[i] = q
            b = buf[i] * mom + d / (fsqrt(q) + eps)
            buf[i] = b
            p[i] = p[i] - lr * b
    else:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            q = sq[i] * alpha + alpha1 * d * d
            sq[i] = q
            p[i] = p[i] - (lr * d) / (fsqrt(q) + eps)


cdef simd_clones_void _adam_range(floating* p, const floating* g, floating* m1,
                                  floating* v2, Py_ssize_t lo, Py_ssize_t hi,
                                  floating decay, floating wd, floating beta1c,
                                  floating beta2, floating beta2c, floating step_size,
                                  floating eps, int flags) noexcept nogil:
    """p -= step_size * m / (sqrt(v) + eps) with the bias corrections folded into
    step_size and eps (see adam_step); AdamW first decays p by `decay`."""
    cdef Py_ssize_t i
    cdef floating d, a, b
    cdef bint use_wd = flags & USE_WD
    if flags & DECOUPLED:
        for i in range(lo, hi):
            p[i] = p[i] * decay
            d = g[i]
            a = m1[i] + beta1c * (d - m1[i])
            b = v2[i] * beta2 + beta2c * d * d
            m1[i] = a
            v2[i] = b
            p[i] = p[i] - (step_size * a) / (fsqrt(b) + eps)
    else:
        for i in range(lo, hi):
            d = (g[i] + wd * p[i]) if use_wd else g[i]
            a = m1[i] + beta1c * (d - m1[i])
            b = v2[i] * beta2 + beta2c * d * d
            m1[i] = a
            v2[i] = b
            p[i] = p[i] - (step_size * a) / (fsqrt(b) + eps)


cdef void _chunk(const Update *u, Py_ssize_t lo, Py_ssize_t hi, floating *p,
                 const floating *g, floating *s1, floating *s2) noexcept nogil:
    """Elements [lo, hi) of the update, its scalars rounded to the arrays' precision."""
    cdef const double *a = u.a
    if u.rule == SGD:
        _sgd_range(p, g, s1, lo, hi, <floating>a[0], <floating>a[1], <floating>a[2],
                   <floating>a[3], u.flags)
    elif u.rule == ADAGRAD:
        _adagrad_range(p, g, s1, lo, hi, <floating>a[0], <floating>a[1], <floating>a[2],
                       u.flags)
    elif u.rule == RMSPROP:
        _rmsprop_range(p, g, s1, s2, lo, hi, <floating>a[0], <floating>a[1],
                       <floating>a[2], <floating>a[3], <floating>a[4], <floating>a[5],
                       u.flags)
    else:
        _adam_range(p, g, s1, s2, lo, hi, <floating>a[0], <floating>a[1], <floating>a[2],
                    <floating>a[3], <floating>a[4], <floating>a[5], <floating>a[6],
                    u.flags)


cdef void _update_task(const void *ctx, Py_ssize_t c) noexcept nogil:
    cdef const Update *u = <const Update *>ctx
    cdef Py_ssize_t lo = c * CHUNK, hi = min(lo + CHUNK, u.n)
    if u.flt:
        _chunk(u, lo, hi, <double *>u.p, <const double *>u.g, <double *>u.s1,
               <double *>u.s2)
    else:
        _chunk(u, lo, hi, <float *>u.p, <const float *>u.g, <float *>u.s1, <float *>u.s2)


cdef int _run(Update *u, Rule rule, p, g, s1, s2, bint s1_needed, bint s2_needed,
              int nthreads) except -1:
    """Check every array in C (p writeable, all of p's dtype and element count; a
    state buffer may be None only when its rule does not need it), then run."""
    cdef int tn = float_type(p)
    u.rule, u.flt = rule, tn == cnp.NPY_DOUBLE
    u.n = cnp.PyArray_SIZE(<cnp.ndarray>p)
    u.p = array_data(p, tn, u.n, -2, True, "p")
    u.g = array_data(g, tn, u.n, -2, False, "g")
    u.s1 = optional_data(s1, tn, u.n, -2, True, "the first state buffer")
    u.s2 = optional_data(s2, tn, u.n, -2, True, "the second state buffer")
    if (s1_needed and u.s1 == NULL) or (s2_needed and u.s2 == NULL):
        raise ValueError("fastnn.kernels: this update needs its state buffers, got None")
    with nogil:
        run_tasks(_update_task, u, nblocks(u.n, CHUNK), nthreads)
    return 0


# ----------------------------------------------------------------------------------
# the kernels
# ----------------------------------------------------------------------------------
def sgd_step(p, g, buf, double lr, double momentum, double dampening, bint nesterov,
             double weight_decay, bint first, int nthreads=1):
    """SGD; buf is the momentum buffer (None when momentum == 0); first: buf
    uninitialised. Arrays of any shape (processed flat)."""
    cdef Update u
    u.flags = ((USE_WD if weight_decay != 0 else 0) | (USE_MOM if momentum != 0 else 0)
               | (NESTEROV if nesterov else 0) | (FIRST if first else 0))
    u.a[0], u.a[1], u.a[2], u.a[3] = lr, momentum, 1.0 - dampening, weight_decay
    _run(&u, SGD, p, g, buf, None, momentum != 0, False, nthreads)


def adagrad_step(p, g, state_sum, double clr, double eps, double weight_decay,
                 int nthreads=1):
    """Adagrad: state_sum += g^2; p -= clr * g / (sqrt(state_sum) + eps)."""
    cdef Update u
    u.flags = USE_WD if weight_decay != 0 else 0
    u.a[0], u.a[1], u.a[2] = clr, eps, weight_decay
    _run(&u, ADAGRAD, p, g, state_sum, None, True, False, nthreads)


def rmsprop_step(p, g, square_avg, momentum_buf, double lr, double alpha, double eps,
                 double momentum, double weight_decay, int nthreads=1):
    """RMSprop (not centred); momentum_buf is None when momentum == 0."""
    cdef Update u
    u.flags = (USE_WD if weight_decay != 0 else 0) | (USE_MOM if momentum != 0 else 0)
    u.a[0], u.a[1], u.a[2], u.a[3] = lr, alpha, 1.0 - alpha, eps
    u.a[4], u.a[5] = momentum, weight_decay
    _run(&u, RMSPROP, p, g, square_avg, momentum_buf, True, momentum != 0, nthreads)


def adam_step(p, g, m, v, double lr, double beta1, double beta2, double eps,
              double weight_decay, double step, bint decoupled, int nthreads=1):
    """Adam (decoupled=False: L2 added to g) or AdamW (decoupled=True: p *= 1 - lr*wd);
    step is the 1-based step count used for bias correction."""
    cdef Update u
    cdef double bias1 = 1.0 - pow(beta1, step)
    cdef double bias2_sqrt = sqrt(1.0 - pow(beta2, step))
    u.flags = (DECOUPLED if decoupled else 0) | (USE_WD if weight_decay != 0 else 0)
    # torch: p -= lr/bias1 * m / (sqrt(v)/bias2_sqrt + eps); multiplied through by
    # bias2_sqrt, one division per element instead of two (the updates are bound by the
    # divider): p -= (lr*bias2_sqrt/bias1) * m / (sqrt(v) + eps*bias2_sqrt)
    u.a[0], u.a[1], u.a[2] = 1.0 - lr * weight_decay, weight_decay, 1.0 - beta1
    u.a[3], u.a[4] = beta2, 1.0 - beta2
    u.a[5], u.a[6] = lr * bias2_sqrt / bias1, eps * bias2_sqrt
    _run(&u, ADAM, p, g, m, v, True, True, nthreads)

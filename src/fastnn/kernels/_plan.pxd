# A kernel call as data: what the def wrappers of _dense, _batchnorm and _activations
# build after checking their arguments, so a recorded sequence of them can be replayed
# by one C loop (fastnn.kernels._plan.Program) without re-entering Python.

cdef enum:
    PLAN_SLOTS = 10      # array pointers per call
    PLAN_DIMS = 13       # sizes per call (a convolution: N, C, H, W, F, then kernel,
                         # stride, padding and dilation per axis)

ctypedef struct PlanOp:
    # runs the call; returns 0, or -1 when scratch memory could not be allocated
    int (*run)(const PlanOp *op) noexcept nogil
    void *ptr[PLAN_SLOTS]    # array data (NULL: unused / None)
    Py_ssize_t dim[PLAN_DIMS]  # sizes
    int flt                  # 1: float64, 0: float32
    int code                 # activation code / flags
    int nthreads
    double arg[3]            # scalars (activation parameter, momentum, eps, ...)

cdef int submit(PlanOp *op) except -1

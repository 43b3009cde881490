# Row-major matrix products over BLAS, for every kernel (implemented in _blas.pyx).
from cython cimport floating

# Largest size BLAS takes (its int); products beyond it are split. Lowered by tests only.
cdef Py_ssize_t int_limit

cdef void gemm(bint ta, bint tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
               floating beta, floating *c, Py_ssize_t ldc) noexcept nogil

# cython: language_level=3
# What the NCHW kernels share (_conv, _pooling, the 2-d batch norm of _batchnorm): the
# 4-d buffer check of their def wrappers and the window arithmetic of convolution and
# pooling (output o along an axis reads input o * stride + offset).
cimport numpy as cnp

from ._buffers cimport array_data


cdef inline void *array4_data(object a, int typenum, Py_ssize_t n, Py_ssize_t c,
                              Py_ssize_t h, Py_ssize_t w, bint writable,
                              str name) except NULL:
    """array_data (C-contiguous, aligned, dtype `typenum`, writeable when `writable`) for
    an array of exactly shape (n, c, h, w)."""
    if (not isinstance(a, cnp.ndarray) or cnp.PyArray_NDIM(<cnp.ndarray>a) != 4
            or a.shape != (n, c, h, w)):
        raise ValueError("fastnn.kernels: %s must be an array of shape %s, got %s"
                         % (name, (n, c, h, w), getattr(a, "shape", type(a).__name__)))
    return array_data(a, typenum, n * c * h * w, -2, writable, name)


cdef inline Py_ssize_t window_outputs(Py_ssize_t size, Py_ssize_t k, Py_ssize_t stride,
                                      Py_ssize_t pad, Py_ssize_t dil) except -1:
    """Outputs along an axis: (size + 2 pad - dil (k - 1) - 1) // stride + 1; ValueError
    unless every size is positive (pad >= 0) and the dilated kernel fits the padded
    input (the numerator is then >= 0, so C's division is the floor)."""
    if size < 1 or k < 1 or stride < 1 or pad < 0 or dil < 1:
        raise ValueError("fastnn.kernels: bad window (size %d, kernel %d, stride %d, "
                         "padding %d, dilation %d)" % (size, k, stride, pad, dil))
    if dil * (k - 1) + 1 > size + 2 * pad:
        raise ValueError("fastnn.kernels: the kernel (%d, dilation %d) is larger than the "
                         "padded input (%d)" % (k, dil, size + 2 * pad))
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


cdef inline void valid_outputs(Py_ssize_t size, Py_ssize_t nout, Py_ssize_t stride,
                               Py_ssize_t offset, Py_ssize_t *lo,
                               Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the outputs o in [0, nout) whose input o * stride + offset lies in
    [0, size) (an empty range has lo == hi)."""
    cdef Py_ssize_t last = size - 1 - offset
    lo[0] = 0 if offset >= 0 else min(nout, (stride - 1 - offset) // stride)
    hi[0] = 0 if last < 0 else min(nout, last // stride + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]

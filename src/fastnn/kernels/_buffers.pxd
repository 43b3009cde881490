# The calling convention of every compiled kernel's def wrapper: check each array in C,
# take its raw data pointer, pack the call into a PlanOp, run it without the GIL.
#
# Acquiring a typed memoryview costs ~0.3 us per array (buffer protocol + format
# parsing); a training step passes ~40 arrays to kernels. The wrappers instead take the
# data pointer after checking, in C (~20 ns), exactly what the memoryview would have
# checked: ndarray, dtype, C-contiguity, writeability and shape. The Python-visible
# validation above (fastnn.ops, the layers) has already checked all of it with clear
# messages; this keeps memory safe even if a caller one day does not.
cimport numpy as cnp

from ._plan cimport PlanOp

cdef inline object _shape_of(Py_ssize_t d0, Py_ssize_t d1):
    if d1 == -1:
        return (d0,)
    if d1 == -2:
        return "(%d elements)" % d0
    return (d0, d1)


cdef inline str _describe(object a):
    from fastnn.core.validation import layout_faults
    faults = layout_faults(a)
    return "%s %s%s" % (a.dtype.str, a.shape, " (%s)" % ", ".join(faults) if faults else "")


cdef inline void *array_data(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                             bint writable, str name) except NULL:
    """The data pointer of `a`, which must be a C-contiguous, aligned ndarray of
    `typenum` (cnp.NPY_FLOAT, cnp.NPY_DOUBLE, cnp.NPY_INTP, ...) of shape (d0, d1), or
    (d0,) when d1 == -1, or of any shape with d0 elements when d1 == -2; writeable when
    `writable`."""
    cdef cnp.ndarray arr
    if not isinstance(a, cnp.ndarray):
        raise TypeError("fastnn.kernels: %s must be an ndarray, got %s"
                        % (name, type(a).__name__))
    arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)
            or (writable and not cnp.PyArray_ISWRITEABLE(arr))
            or (d1 == -2 and cnp.PyArray_SIZE(arr) != d0)
            or (d1 == -1 and (cnp.PyArray_NDIM(arr) != 1 or arr.shape[0] != d0))
            or (d1 >= 0 and (cnp.PyArray_NDIM(arr) != 2 or arr.shape[0] != d0
                             or arr.shape[1] != d1))):
        raise ValueError("fastnn.kernels: %s must be an aligned C-contiguous%s %s array of "
                         "shape %s, got %s" % (name, " writeable" if writable else "",
                                               cnp.PyArray_DescrFromType(typenum),
                                               _shape_of(d0, d1), _describe(a)))
    return cnp.PyArray_DATA(arr)


cdef inline void *optional_data(object a, int typenum, Py_ssize_t d0, Py_ssize_t d1,
                                bint writable, str name) except? NULL:
    """array_data, or NULL for None."""
    if a is None:
        return NULL
    return array_data(a, typenum, d0, d1, writable, name)


cdef inline int float_type(object a) except -1:
    """cnp.NPY_DOUBLE for a float64 array, cnp.NPY_FLOAT otherwise (array_data checks)."""
    return cnp.NPY_DOUBLE if cnp.PyArray_TYPE(<cnp.ndarray?>a) == cnp.NPY_DOUBLE \
        else cnp.NPY_FLOAT


cdef inline int run_op(const PlanOp *op) except -1:
    """Run a packed call now, without the GIL and never recorded (kernels that are not
    part of a recordable layer use this; the others `submit`)."""
    cdef int rc
    with nogil:
        rc = op.run(op)
    if rc != 0:
        raise MemoryError("fastnn.kernels: out of memory for kernel scratch space")
    return 0

# cython: language_level=3, boundscheck=False, wraparound=False
"""Recorded kernel programs: a Sequential's forward or backward replayed by one C loop.

Every def wrapper of the compiled Dense, batch-norm and activation kernels checks its
arguments, packs the call into a `PlanOp` and hands it to `submit`, which runs it and,
when this thread is recording, also appends a copy to the `Recorder`. A `Program` made
from a recording replays the calls with no Python in between: the per-call cost of the
wrappers (argument parsing, checks, about 0.5-1 us each) is paid once, at recording.

This module only runs op lists: it reads no layer and writes no attribute of any Python
object. What a replay means for the layers (their caches, the model's last output) is
`fastnn.layers.replay`'s business.

Safety: a Program holds references to every array whose memory the calls touch
(`fastnn.layers.replay` checks that each recorded pointer is the data of an array it
holds, or a patched input slot), so replaying can never touch freed memory. Whether a
recording is still *meaningful* is told by version stamps (`fastnn.core.generation`):
the Program keeps the stamps it was given and their values, and `current()` compares.
"""
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    static __thread void *fastnn_plan_recorder = NULL;
    """
    void *fastnn_plan_recorder

cdef enum:
    OPS_LIMIT = 64        # longest replayable program (each op is copied to the stack)
    INPUTS_LIMIT = 4      # arrays patched in per replay
    DIMS_LIMIT = 4        # dimensions of each of them

#: the longest program `Program` accepts (longer recordings are run, never replayed)
MAX_OPS = OPS_LIMIT


cdef int submit(PlanOp *op) except -1:
    """Run one packed kernel call (without the GIL); record it when recording."""
    cdef int rc
    with nogil:
        rc = op.run(op)
    if rc != 0:
        raise MemoryError("fastnn.kernels: out of memory for kernel scratch space")
    if fastnn_plan_recorder != NULL:
        (<Recorder>fastnn_plan_recorder)._add(op)
    return 0


cdef class Recorder:
    """Collects the calls submitted by this thread between start() and stop()."""
    cdef PlanOp *ops
    cdef Py_ssize_t n, cap
    cdef bint active

    def __dealloc__(self):
        free(self.ops)

    cdef int _add(self, const PlanOp *op) except -1:
        cdef PlanOp *grown
        if self.n == self.cap:
            grown = <PlanOp *>realloc(self.ops, (2 * self.cap + 8) * sizeof(PlanOp))
            if grown == NULL:
                raise MemoryError()
            self.ops = grown
            self.cap = 2 * self.cap + 8
        memcpy(&self.ops[self.n], op, sizeof(PlanOp))
        self.n += 1
        return 0

    def start(self):
        if fastnn_plan_recorder != NULL:
            raise RuntimeError("fastnn.kernels: a recording is already running")
        self.n = 0
        self.active = True
        global fastnn_plan_recorder
        fastnn_plan_recorder = <void *>self

    def stop(self):
        global fastnn_plan_recorder
        if self.active:
            fastnn_plan_recorder = NULL
            self.active = False

    def __len__(self):
        return self.n

    def pointers(self):
        """[(call index, slot, address)] of every non-NULL array pointer recorded."""
        cdef Py_ssize_t k, s
        return [(k, s, <size_t>self.ops[k].ptr[s]) for k in range(self.n)
                for s in range(PLAN_SLOTS) if self.ops[k].ptr[s] != NULL]


cdef class Program:
    """A recording made replayable: `run(*inputs)` patches the slots listed in `patches`
    with the data of the given arrays and runs every call in order, without the GIL.

    patches: [(call index, slot, input number)]; specs: per input number, the
    (dtype, shape) the array must have (C-contiguous). `keep` holds every array the
    calls touch, for as long as the Program lives. `stamps`: 1-D C-contiguous int64
    arrays (version stamps) whose values at construction `current()` compares with."""
    cdef PlanOp *ops
    cdef Py_ssize_t n
    cdef int[:, ::1] patch
    cdef Py_ssize_t nin
    cdef int typenum[INPUTS_LIMIT]
    cdef int ndim[INPUTS_LIMIT]
    cdef Py_ssize_t dims[INPUTS_LIMIT][DIMS_LIMIT]
    cdef tuple specs
    cdef object keep
    cdef tuple stamps
    cdef cnp.int64_t **watched      # every element of every stamp ...
    cdef cnp.int64_t *seen          # ... and its value at construction
    cdef Py_ssize_t nwatched

    def __cinit__(self, Recorder rec, patches, specs, keep, stamps=()):
        if rec.n > OPS_LIMIT:
            raise ValueError("fastnn.kernels: program too long (%d calls, at most %d)"
                             % (rec.n, OPS_LIMIT))
        self.ops = <PlanOp *>malloc(max(rec.n, 1) * sizeof(PlanOp))
        if self.ops == NULL:
            raise MemoryError()
        memcpy(self.ops, rec.ops, rec.n * sizeof(PlanOp))
        self.n = rec.n
        self._set_inputs(patches, specs)
        self._watch(stamps)
        self.keep = keep

    cdef _set_inputs(self, patches, specs):
        arr = np.zeros((len(patches), 3), np.intc)
        for i, (k, s, j) in enumerate(patches):
            if not (0 <= k < self.n and 0 <= s < PLAN_SLOTS and 0 <= j < len(specs)):
                raise ValueError("fastnn.kernels: bad patch %r" % ((k, s, j),))
            arr[i] = (k, s, j)
        self.patch = arr
        self.specs = tuple((np.dtype(dt), tuple(shape)) for dt, shape in specs)
        if len(self.specs) > INPUTS_LIMIT:
            raise ValueError("fastnn.kernels: at most %d program inputs" % INPUTS_LIMIT)
        self.nin = len(self.specs)
        for i, (dt, shape) in enumerate(self.specs):
            if len(shape) > DIMS_LIMIT:
                raise ValueError("fastnn.kernels: program inputs have at most %d dimensions"
                                 % DIMS_LIMIT)
            self.typenum[i] = dt.num
            self.ndim[i] = len(shape)
            for d in range(len(shape)):
                self.dims[i][d] = shape[d]

    cdef _watch(self, stamps):
        cdef cnp.ndarray s
        cdef Py_ssize_t i, k = 0
        self.stamps = tuple(stamps)
        for s in self.stamps:
            if (cnp.PyArray_TYPE(s) != cnp.NPY_INT64 or cnp.PyArray_NDIM(s) != 1
                    or not cnp.PyArray_IS_C_CONTIGUOUS(s)):
                raise ValueError("fastnn.kernels: a stamp must be a 1-D int64 array, got %r"
                                 % (s,))
            k += cnp.PyArray_DIMS(s)[0]
        self.watched = <cnp.int64_t **>malloc(max(k, 1) * sizeof(cnp.int64_t *))
        self.seen = <cnp.int64_t *>malloc(max(k, 1) * sizeof(cnp.int64_t))
        if self.watched == NULL or self.seen == NULL:
            raise MemoryError()
        for s in self.stamps:
            for i in range(cnp.PyArray_DIMS(s)[0]):
                self.watched[self.nwatched] = (<cnp.int64_t *>cnp.PyArray_DATA(s)) + i
                self.seen[self.nwatched] = self.watched[self.nwatched][0]
                self.nwatched += 1

    def __dealloc__(self):
        free(self.ops)
        free(self.watched)
        free(self.seen)

    def __len__(self):
        return self.n

    cpdef bint current(self):
        """Whether every stamp still has its value of construction time."""
        cdef Py_ssize_t i
        for i in range(self.nwatched):
            if self.watched[i][0] != self.seen[i]:
                return False
        return True

    cdef bint _fits(self, object x, Py_ssize_t i):
        cdef cnp.ndarray a
        cdef int d
        if not isinstance(x, cnp.ndarray):
            return False
        a = <cnp.ndarray>x
        if (cnp.PyArray_TYPE(a) != self.typenum[i] or cnp.PyArray_NDIM(a) != self.ndim[i]
                or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
            return False
        for d in range(self.ndim[i]):
            if cnp.PyArray_DIMS(a)[d] != self.dims[i][d]:
                return False
        return True

    def run(self, *inputs):
        """Replay with `inputs` (each checked against its spec) in the patched slots,
        whether or not the Program is `current()` (the caller decides)."""
        cdef Py_ssize_t m = len(inputs)
        if m != self.nin:
            raise TypeError("fastnn.kernels: Program.run expects %d arrays, got %d"
                            % (self.nin, m))
        self._run(inputs)

    cdef int _run(self, tuple inputs) except -1:
        cdef PlanOp local[OPS_LIMIT]
        cdef void *data[INPUTS_LIMIT]
        cdef Py_ssize_t k, i
        cdef int rc = 0
        for i in range(self.nin):
            x = inputs[i]
            if not self._fits(x, i):
                raise ValueError("fastnn.kernels: Program input %d must be a C-contiguous "
                                 "%s array of shape %s, got %r"
                                 % (i, self.specs[i][0], self.specs[i][1], x))
            data[i] = cnp.PyArray_DATA(<cnp.ndarray>x)
        memcpy(local, self.ops, self.n * sizeof(PlanOp))
        for i in range(self.patch.shape[0]):
            local[self.patch[i, 0]].ptr[self.patch[i, 1]] = data[self.patch[i, 2]]
        with nogil:
            for k in range(self.n):
                rc = local[k].run(&local[k])
                if rc != 0:
                    break
        if rc != 0:
            raise MemoryError("fastnn.kernels: out of memory for kernel scratch space")
        return 0

    def copy_run(self, x, buf, out):
        """The public forward's replay, in one call since at batch 1 the Python around a
        replay costs as much as the replay: when the Program is `current()` and x is an
        ndarray of exactly the dtype (byte order included) and shape of `buf` (this
        one-input Program's input), copy x into buf, replay on buf and return a fresh
        C-order copy of `out` (the array the recording returned). Otherwise None, and
        nothing is run."""
        cdef cnp.ndarray xa, ba = <cnp.ndarray?>buf
        cdef int d
        if not isinstance(x, cnp.ndarray) or not self.current():
            return None
        xa = <cnp.ndarray>x
        if (cnp.PyArray_NDIM(xa) != cnp.PyArray_NDIM(ba)
                or cnp.PyArray_TYPE(xa) != cnp.PyArray_TYPE(ba)
                or not cnp.PyArray_ISNOTSWAPPED(xa) or not cnp.PyArray_ISNOTSWAPPED(ba)):
            return None
        for d in range(cnp.PyArray_NDIM(xa)):
            if cnp.PyArray_DIMS(xa)[d] != cnp.PyArray_DIMS(ba)[d]:
                return None
        if cnp.PyArray_IS_C_CONTIGUOUS(xa):     # same dtype and shape: plain bytes
            memmove(cnp.PyArray_DATA(ba), cnp.PyArray_DATA(xa), cnp.PyArray_NBYTES(ba))
        else:
            cnp.PyArray_CopyInto(ba, xa)
        self._run((ba,))
        return cnp.PyArray_NewCopy(<cnp.ndarray?>out, cnp.NPY_CORDER)

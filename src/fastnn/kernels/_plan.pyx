# cython: language_level=3, boundscheck=False, wraparound=False
"""Recorded kernel programs: a Sequential's forward or backward replayed by one C loop.

Every def wrapper of the compiled Dense, batch-norm and activation kernels checks its
arguments, packs the call into a `PlanOp` and hands it to `submit`, which runs it and,
when this thread is recording, also appends a copy to the `Recorder`. A `Program` made
from a recording replays the calls with no Python in between: the per-call cost of the
wrappers (argument parsing, checks, about 0.5-1 us each) is paid once, at recording.

Safety: a Program holds references to every array whose memory the calls touch
(`fastnn.layers.plan` checks that each recorded pointer is the data of an array it holds,
or a patched slot), so replaying can never touch freed memory; whether the recording is
still *meaningful* (same parameters, modes, thread counts) is decided by
`fastnn.layers.plan` before each replay.
"""
from libc.stdlib cimport free, realloc
from cpython.object cimport PyObject_GenericSetAttr
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
    MAX_OPS = 64          # longest replayable program (each op is copied to the stack)


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
    """A recording made replayable: `run(inputs)` patches the slots listed in `patches`
    with the data of the given arrays and runs every call in order, without the GIL.

    patches: [(call index, slot, input number)]; specs: per input number, the
    (dtype, shape) the array must have (C-contiguous). `keep` holds every array the
    calls touch, for as long as the Program lives."""
    cdef PlanOp *ops
    cdef Py_ssize_t n
    cdef int[:, ::1] patch
    cdef Py_ssize_t nin
    cdef int typenum[4]
    cdef int ndim[4]
    cdef Py_ssize_t dims[4][4]
    cdef tuple specs
    cdef object keep

    def __cinit__(self, Recorder rec, patches, specs, keep):
        if rec.n > MAX_OPS:
            raise ValueError("fastnn.kernels: program too long (%d calls)" % rec.n)
        self.ops = <PlanOp *>realloc(NULL, max(rec.n, 1) * sizeof(PlanOp))
        if self.ops == NULL:
            raise MemoryError()
        memcpy(self.ops, rec.ops, rec.n * sizeof(PlanOp))
        self.n = rec.n
        arr = np.zeros((len(patches), 3), np.intc)
        for i, (k, s, j) in enumerate(patches):
            if not (0 <= k < rec.n and 0 <= s < PLAN_SLOTS and 0 <= j < len(specs)):
                raise ValueError("fastnn.kernels: bad patch %r" % ((k, s, j),))
            arr[i] = (k, s, j)
        self.patch = arr
        self.specs = tuple((np.dtype(dt), tuple(shape)) for dt, shape in specs)
        if len(self.specs) > 4:
            raise ValueError("fastnn.kernels: at most 4 program inputs")
        self.nin = len(self.specs)
        for i, (dt, shape) in enumerate(self.specs):
            if len(shape) > 4:
                raise ValueError("fastnn.kernels: program inputs have at most 4 dimensions")
            self.typenum[i] = dt.num
            self.ndim[i] = len(shape)
            for d in range(len(shape)):
                self.dims[i][d] = shape[d]
        self.keep = keep

    def __dealloc__(self):
        free(self.ops)

    def __len__(self):
        return self.n

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
        """Replay with `inputs` (each checked against its spec) in the patched slots."""
        cdef Py_ssize_t m = len(inputs)
        if m != self.nin:
            raise TypeError("fastnn.kernels: Program.run expects %d arrays, got %d"
                            % (self.nin, m))
        self._run(inputs)

    cdef int _run(self, tuple inputs) except -1:
        cdef PlanOp local[MAX_OPS]
        cdef void *data[4]
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


cdef class ForwardReplay:
    """A recorded forward of a Sequential and what replaying it means to the layers: the
    array it returns (`out`) and the cache it leaves in each layer (`caches`, the first
    naming the recorded input). `fastnn.layers.plan` decides when it is current (`gen`);
    this class only runs it, in C, since at batch 1 the Python around a replay costs as
    much as the replay."""
    cdef readonly Program program
    cdef readonly object gen, out
    cdef readonly tuple layers, caches

    def __cinit__(self, Program program, gen, out, layers, caches):
        self.program, self.gen, self.out = program, gen, out
        self.layers, self.caches = tuple(layers), tuple(caches)
        if len(self.layers) != len(self.caches) or not self.layers:
            raise ValueError("fastnn.kernels: one cache per layer expected")

    cpdef object run(self, x, plans, key):
        """Replay on x (the recorded shape and dtype, C-contiguous); restore the layers'
        caches (another forward may have replaced them since; the first names x); note
        x, key and the first cache as `plans`' last forward. Returns `out`."""
        cdef Py_ssize_t i
        self.program._run((x,))
        c = self.caches[0]
        if c.x is not x:
            c = c._replace(x=x)
        PyObject_GenericSetAttr(self.layers[0], "_cache", c)
        for i in range(1, len(self.layers)):
            PyObject_GenericSetAttr(self.layers[i], "_cache", self.caches[i])
        plans.last_x = x
        plans.last_key = key
        plans.last_cache = c
        return self.out

    def public(self, seq, plans, key, x, buf):
        """Sequential.forward's work when x is an ndarray of exactly the dtype (byte
        order included) and shape of `buf`, seq's input buffer for this replay (else
        None): under seq's lock, copy x into buf, replay, and return a fresh copy of the
        output (noting its shape and dtype as seq._out)."""
        cdef cnp.ndarray xa, ba = <cnp.ndarray?>buf, out
        cdef int d
        if not isinstance(x, cnp.ndarray):
            return None
        xa = <cnp.ndarray>x
        if (cnp.PyArray_NDIM(xa) != cnp.PyArray_NDIM(ba)
                or cnp.PyArray_TYPE(xa) != cnp.PyArray_TYPE(ba)
                or not cnp.PyArray_ISNOTSWAPPED(xa) or not cnp.PyArray_ISNOTSWAPPED(ba)):
            return None
        for d in range(cnp.PyArray_NDIM(xa)):
            if cnp.PyArray_DIMS(xa)[d] != cnp.PyArray_DIMS(ba)[d]:
                return None
        lock = seq._lock
        lock.acquire()
        try:
            if cnp.PyArray_IS_C_CONTIGUOUS(xa):     # same dtype and shape: plain bytes
                memmove(cnp.PyArray_DATA(ba), cnp.PyArray_DATA(xa), cnp.PyArray_NBYTES(ba))
            else:
                cnp.PyArray_CopyInto(ba, xa)
            out = cnp.PyArray_NewCopy(<cnp.ndarray?>self.run(ba, plans, key), cnp.NPY_CORDER)
            PyObject_GenericSetAttr(seq, "_out", ((<object>out).shape, out.dtype))
        finally:
            lock.release()
        return out

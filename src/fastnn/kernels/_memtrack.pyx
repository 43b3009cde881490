# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A counting NumPy data-memory handler (NEP 49) behind `fastnn.memory`.

NumPy allocates every array's data through the handler of the current context
(`PyDataMem_SetHandler`, a contextvar), and remembers that handler in each array so the
data is freed through it as well. This module's handler wraps malloc / calloc / realloc /
free and keeps process-wide counters:

* allocations: malloc and calloc calls, and realloc calls that grow a block
  (a realloc of NULL is a malloc);
* allocated bytes: requested sizes (a growing realloc adds the growth);
* frees: free calls (and shrinking reallocs are not counted here);
* live bytes: bytes currently held by blocks this handler allocated;
* peak bytes: the highest live value since the last `reset_peak()`.

Each block carries a 16-byte header holding its size, so live bytes stay exact whatever
size NumPy passes to free and across realloc (which is not told the old size). The data
pointer stays 16-byte aligned, like malloc's.

The handler is one static struct and the capsule is kept by this module for the life
of the process: arrays allocated while counting are still freed through it after the
context manager that installed it has exited, from any thread. The counters are updated
with atomic operations (GCC/Clang `__atomic` builtins, MSVC Interlocked functions), so
threads never corrupt them; they are not per thread, though: two threads counting at
the same time see each other's allocations.
"""
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <stdint.h>

    #define FNN_MT_HEADER 16   /* keeps malloc's 16-byte alignment on 64-bit platforms */

    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    static __inline long long fnn_mt_add(volatile long long *p, long long v) {
        return _InterlockedExchangeAdd64(p, v) + v;
    }
    static __inline long long fnn_mt_load(volatile long long *p) {
        return _InterlockedCompareExchange64(p, 0, 0);
    }
    static __inline long long fnn_mt_swap(volatile long long *p, long long v) {
        return _InterlockedExchange64(p, v);
    }
    static __inline int fnn_mt_cas(volatile long long *p, long long *expected, long long v) {
        long long prev = _InterlockedCompareExchange64(p, v, *expected);
        if (prev == *expected) return 1;
        *expected = prev;
        return 0;
    }
    #else
    static inline long long fnn_mt_add(volatile long long *p, long long v) {
        return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
    }
    static inline long long fnn_mt_load(volatile long long *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline long long fnn_mt_swap(volatile long long *p, long long v) {
        return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
    }
    static inline int fnn_mt_cas(volatile long long *p, long long *expected, long long v) {
        return __atomic_compare_exchange_n(p, expected, v, 0, __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED);
    }
    #endif

    typedef struct {
        volatile long long count, nbytes, frees, live, peak;
    } fnn_mt_counters;

    static fnn_mt_counters fnn_mt_c = {0, 0, 0, 0, 0};

    /* peak = max(peak, v) */
    static void fnn_mt_raise_peak(long long v) {
        long long cur = fnn_mt_load(&fnn_mt_c.peak);
        while (v > cur && !fnn_mt_cas(&fnn_mt_c.peak, &cur, v)) {
        }
    }

    static void fnn_mt_grow(long long nbytes) {
        fnn_mt_add(&fnn_mt_c.count, 1);
        fnn_mt_add(&fnn_mt_c.nbytes, nbytes);
        fnn_mt_raise_peak(fnn_mt_add(&fnn_mt_c.live, nbytes));
    }

    static void *fnn_mt_finish(char *base, size_t size) {
        memcpy(base, &size, sizeof(size_t));
        return base + FNN_MT_HEADER;
    }

    static size_t fnn_mt_size_of(void *ptr) {
        size_t size;
        memcpy(&size, (char *)ptr - FNN_MT_HEADER, sizeof(size_t));
        return size;
    }

    static void *fnn_mt_malloc(void *ctx, size_t size) {
        char *base;
        (void)ctx;
        if (size > SIZE_MAX - FNN_MT_HEADER) return NULL;
        base = (char *)malloc(size + FNN_MT_HEADER);
        if (base == NULL) return NULL;
        fnn_mt_grow((long long)size);
        return fnn_mt_finish(base, size);
    }

    static void *fnn_mt_calloc(void *ctx, size_t nelem, size_t elsize) {
        char *base;
        size_t size;
        (void)ctx;
        if (elsize != 0 && nelem > (SIZE_MAX - FNN_MT_HEADER) / elsize) return NULL;
        size = nelem * elsize;
        base = (char *)calloc(1, size + FNN_MT_HEADER);
        if (base == NULL) return NULL;
        fnn_mt_grow((long long)size);
        return fnn_mt_finish(base, size);
    }

    static void *fnn_mt_realloc(void *ctx, void *ptr, size_t new_size) {
        char *base;
        size_t old;
        if (ptr == NULL) return fnn_mt_malloc(ctx, new_size);
        if (new_size > SIZE_MAX - FNN_MT_HEADER) return NULL;
        old = fnn_mt_size_of(ptr);
        base = (char *)realloc((char *)ptr - FNN_MT_HEADER, new_size + FNN_MT_HEADER);
        if (base == NULL) return NULL;            /* the old block is untouched */
        if (new_size > old) {
            fnn_mt_grow((long long)(new_size - old));
        } else {
            fnn_mt_add(&fnn_mt_c.live, -(long long)(old - new_size));
        }
        return fnn_mt_finish(base, new_size);
    }

    static void fnn_mt_free(void *ctx, void *ptr, size_t size) {
        (void)ctx; (void)size;                /* the header knows the true size */
        if (ptr == NULL) return;
        fnn_mt_add(&fnn_mt_c.frees, 1);
        fnn_mt_add(&fnn_mt_c.live, -(long long)fnn_mt_size_of(ptr));
        free((char *)ptr - FNN_MT_HEADER);
    }

    static PyDataMem_Handler fnn_mt_handler = {
        "fastnn_memtrack",
        1,
        {NULL, fnn_mt_malloc, fnn_mt_calloc, fnn_mt_realloc, fnn_mt_free}
    };

    static PyObject *fnn_mt_new_capsule(void) {
        return PyCapsule_New(&fnn_mt_handler, "mem_handler", NULL);
    }

    static long long fnn_mt_reset_peak(void) {
        return fnn_mt_swap(&fnn_mt_c.peak, fnn_mt_load(&fnn_mt_c.live));
    }
    """
    ctypedef struct fnn_mt_counters:
        long long count, nbytes, frees, live, peak
    fnn_mt_counters fnn_mt_c
    long long fnn_mt_load(long long *p) nogil
    long long fnn_mt_reset_peak() nogil
    void fnn_mt_raise_peak(long long v) nogil
    object fnn_mt_new_capsule()

# the one capsule wrapping the static handler; never released
_CAPSULE = fnn_mt_new_capsule()


def handler():
    """The counting handler as a "mem_handler" PyCapsule (for `set_handler`)."""
    return _CAPSULE


def set_handler(capsule):
    """Make `capsule` the data-memory handler of the current context (thread / task);
    returns the previous one. Wraps `PyDataMem_SetHandler`."""
    return cnp.PyDataMem_SetHandler(capsule)


def get_handler():
    """The current context's data-memory handler capsule (`PyDataMem_GetHandler`)."""
    return cnp.PyDataMem_GetHandler()


def counters():
    """(allocations, allocated bytes, frees, live bytes, peak live bytes) so far."""
    return (fnn_mt_load(&fnn_mt_c.count), fnn_mt_load(&fnn_mt_c.nbytes),
            fnn_mt_load(&fnn_mt_c.frees), fnn_mt_load(&fnn_mt_c.live),
            fnn_mt_load(&fnn_mt_c.peak))


def reset_peak():
    """Set the peak to the current live bytes; returns the peak it had before."""
    return fnn_mt_reset_peak()


def restore_peak(long long previous):
    """Peak = max(peak, previous): undoes a `reset_peak` for an enclosing measurement."""
    fnn_mt_raise_peak(previous)

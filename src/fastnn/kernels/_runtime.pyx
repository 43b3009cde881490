# cython: language_level=3
"""Build facts of the compiled backend, read by fastnn.show_config()."""
from ._openmp cimport FASTNN_HAVE_OPENMP, omp_get_max_threads


def openmp_enabled():
    """True when this extension was compiled with OpenMP."""
    return bool(FASTNN_HAVE_OPENMP)


def max_threads():
    """The OpenMP runtime's default team size (OMP_NUM_THREADS or the core count)."""
    return int(omp_get_max_threads())


cdef extern from *:
    """
    #ifndef FASTNN_COMPILE_ARGS
    #define FASTNN_COMPILE_ARGS ""
    #endif
    """
    const char *FASTNN_COMPILE_ARGS


def compile_args():
    """The compiler and linker flags the kernels were built with."""
    return FASTNN_COMPILE_ARGS.decode().split()

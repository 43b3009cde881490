# cython: language_level=3
"""Facts about the compiled backend and its OpenMP runtime, read by fastnn.core.threads
and fastnn.show_config()."""
from ._common cimport FASTNN_HAVE_OPENMP, omp_get_max_threads


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


cdef extern from *:
    """
    #include <stdlib.h>
    #ifndef _WIN32
    #include <pthread.h>
    static pthread_mutex_t fastnn_probe_gate = PTHREAD_MUTEX_INITIALIZER;

    static void *fastnn_probe_wait(void *arg)
    {
        (void)arg;
        pthread_mutex_lock(&fastnn_probe_gate);     /* held until all were created */
        pthread_mutex_unlock(&fastnn_probe_gate);
        return NULL;
    }

    /* How many of k threads with this stack size (0: the default) can exist at once. */
    static int fastnn_creatable_threads(int k, size_t stacksize)
    {
        pthread_t *ids = (pthread_t *)malloc((size_t)(k > 0 ? k : 1) * sizeof(pthread_t));
        pthread_attr_t attr;
        int made = 0, i;
        if (ids == NULL || pthread_attr_init(&attr) != 0) {
            free(ids);
            return 0;
        }
        if (stacksize > 0)
            pthread_attr_setstacksize(&attr, stacksize);
        pthread_mutex_lock(&fastnn_probe_gate);
        while (made < k && pthread_create(&ids[made], &attr, fastnn_probe_wait, NULL) == 0)
            made++;
        pthread_mutex_unlock(&fastnn_probe_gate);
        for (i = 0; i < made; i++)
            pthread_join(ids[i], NULL);
        pthread_attr_destroy(&attr);
        free(ids);
        return made;
    }
    #else
    static int fastnn_creatable_threads(int k, size_t stacksize) { (void)stacksize; return k; }
    #endif
    """
    int fastnn_creatable_threads(int k, size_t stacksize) nogil


def creatable_threads(int k, size_t stacksize=0):
    """How many of k more threads (stack size in bytes, 0: the default) the process can
    create right now: they are created together, then joined."""
    cdef int made
    with nogil:
        made = fastnn_creatable_threads(k, stacksize)
    return made

# OpenMP runtime functions, with serial stubs when the build has no OpenMP
# (Cython's prange already degrades to a plain loop without _OPENMP).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTNN_HAVE_OPENMP 1
    #else
    #define FASTNN_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    static int omp_get_num_procs(void) { return 1; }
    static void omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int FASTNN_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil
    void omp_set_num_threads(int n) noexcept nogil

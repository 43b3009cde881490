"""Backend registry, thread settings and build report (`fastnn.show_config`)."""
import contextlib
import importlib
import os
import threading
import types

import numpy as np
import scipy

from . import generation as _generation
from ..kernels import ref as kernel_ref

_KERNEL_NAMES = tuple(kernel_ref.__all__)
_CYTHON_MODULES = ("_activations", "_dense", "_batchnorm", "_losses", "_updates")

# Work (elements touched) below which a kernel runs on one thread: waking a second
# thread costs more than it saves on small arrays.
PARALLEL_MIN_WORK = 1 << 15
# set_num_threads' upper bound: more threads than this never helps, and libgomp aborts
# the whole process (it does not raise) when the OS refuses to create a thread.
MAX_THREADS = 1024


def _load_cython_backend():
    """Collect the compiled kernels into one namespace, or return (None, reason)."""
    funcs = {}
    try:
        for mod in _CYTHON_MODULES:
            m = importlib.import_module("fastnn.kernels." + mod)
            funcs.update({k: getattr(m, k) for k in dir(m) if k in _KERNEL_NAMES})
        runtime = importlib.import_module("fastnn.kernels._runtime")
    except ImportError as exc:
        return None, None, str(exc)
    missing = sorted(set(_KERNEL_NAMES) - set(funcs))
    if missing:
        return None, None, "compiled kernels missing: " + ", ".join(missing)
    return types.SimpleNamespace(name="cython", **funcs), runtime, None


_NUMPY = types.SimpleNamespace(name="numpy", **{k: getattr(kernel_ref, k) for k in _KERNEL_NAMES})
_CYTHON, _RUNTIME, _CYTHON_ERROR = _load_cython_backend()
_BACKENDS = {"numpy": _NUMPY}
if _CYTHON is not None:
    _BACKENDS["cython"] = _CYTHON

class _ThreadState(threading.local):
    """Per-thread settings. The class attribute is every thread's default, so reading it
    never raises (getattr with a default on a missing attribute cost ~1 us per call, and
    every kernel call asks for the backend)."""
    backend = None      # set by use_backend: overrides _default_backend in this thread


_state = _ThreadState()
_default_backend = "cython" if _CYTHON is not None else "numpy"


def _env_threads():
    for var in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "")
        if val.isdigit() and int(val) > 0:
            return int(val)
    if _RUNTIME is not None:
        return _RUNTIME.max_threads()
    return os.cpu_count() or 1


_num_threads = _env_threads()


def _apply_blas_limits(all_libraries=True):
    """One thread pool per backend. The Cython kernels split their GEMMs across their own
    OpenMP team, so the BLAS library they call runs single-threaded (two pools spinning
    on each other's cores made steps up to 10x slower); other BLAS libraries (NumPy's,
    which the NumPy backend uses) get the configured thread count once the user sets
    one with set_num_threads."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        if _is_kernel_blas(lib.filepath):
            lib.set_num_threads(1)
        elif all_libraries:
            lib.set_num_threads(_num_threads)


def _is_kernel_blas(path):
    """True for the BLAS that scipy.linalg.cython_blas (the kernels' GEMMs) calls: the one
    shipped inside SciPy's distribution (scipy.libs/, scipy/.dylibs, scipy_openblas32/).
    A system BLAS shared with NumPy is left multi-threaded."""
    return _CYTHON is not None and os.path.realpath(path).startswith(_SCIPY_ROOT)


_SCIPY_ROOT = os.path.dirname(os.path.realpath(scipy.__file__))   # .../site-packages/scipy
_apply_blas_limits(all_libraries=False)   # importing fastnn leaves NumPy's BLAS alone


def set_backend(name):
    """Select the kernel backend for this process: "cython" (default when built) or "numpy"."""
    global _default_backend
    _check_backend(name, "set_backend")
    _default_backend = name
    _state.backend = None


def get_backend():
    """Name of the active backend ("cython" or "numpy")."""
    return _state.backend or _default_backend


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the block on backend `name` (in this thread), then restore."""
    _check_backend(name, "use_backend")
    previous = _state.backend
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = previous


def _check_backend(name, fn):
    if name not in ("cython", "numpy"):
        raise ValueError('%s: backend must be "cython" or "numpy", got %r' % (fn, name))
    if name not in _BACKENDS:
        raise RuntimeError("%s: the cython backend is not available (%s); reinstall with "
                           "a working C compiler" % (fn, _CYTHON_ERROR))


def backend():
    """The active backend's kernel namespace (functions of `kernels.ref.__all__`)."""
    return _BACKENDS[get_backend()]


def set_num_threads(n):
    """Use n threads (1 <= n <= MAX_THREADS) in the Cython kernels (OpenMP; their GEMMs
    are split across these threads over a single-threaded BLAS) and in NumPy's BLAS."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError("set_num_threads: expected a positive int, got %r" % (n,))
    if n > MAX_THREADS:
        raise ValueError("set_num_threads: expected at most %d threads, got %d (the OpenMP "
                         "runtime aborts the process when it cannot create a thread)"
                         % (MAX_THREADS, n))
    _num_threads = int(n)
    _generation.bump()
    _apply_blas_limits()


def get_num_threads():
    """Number of threads OpenMP kernels use."""
    return _num_threads


def threads_for(work):
    """Thread count for a kernel touching `work` elements: 1 for small work, and 1 in a
    process forked after this one ran a multi-threaded kernel (see _after_fork_in_child)."""
    global _pool_started
    if work < PARALLEL_MIN_WORK or _num_threads == 1 or _forked_child:
        return 1
    _pool_started = True
    return _num_threads


# Fork safety. GNU libgomp is not fork-safe: once a parallel region has run, the runtime
# keeps a pool of worker threads, and a child created by fork() (multiprocessing's "fork"
# start method) inherits the pool's bookkeeping but not its threads, so its next
# multi-threaded region waits forever for them. A one-thread region does not use the pool
# (verified by tests/test_concurrency.py), so a child forked after this process ran a
# multi-threaded kernel runs every kernel on one thread, whatever set_num_threads says.
# BLAS (OpenBLAS) resets its own pool at fork and keeps its threads. A child forked
# before any multi-threaded kernel ran, or a "spawn"/"forkserver" child, is unaffected.
_pool_started = False    # threads_for handed out > 1 thread: libgomp's pool may exist
_forked_child = False    # forked after that: OpenMP kernels stay on one thread


def _after_fork_in_child():
    global _forked_child
    if _pool_started:
        _forked_child = True
        _generation.bump()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_name():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join("%s %s (%s, %s)" % (i.get("internal_api"), i.get("version"),
                                         i.get("architecture"), os.path.basename(i.get("filepath", "")))
                     for i in libs) or "unknown"


def show_config(print_=True):
    """Report the build and runtime configuration; prints it and returns a dict."""
    from .. import __version__
    import scipy.linalg  # noqa: F401  (load scipy's BLAS so threadpoolctl sees it)

    cfg = {
        "version": __version__,
        "backend": get_backend(),
        "cython": _CYTHON is not None,
        "openmp": bool(_RUNTIME.openmp_enabled()) if _RUNTIME is not None else False,
        "num_threads": _num_threads,
        "blas": _blas_name(),
        "compile_args": _RUNTIME.compile_args() if _RUNTIME is not None else [],
        "numpy": np.__version__,
    }
    if _CYTHON is None:
        cfg["cython_error"] = _CYTHON_ERROR
    if print_:
        width = max(len(k) for k in cfg)
        for k, v in cfg.items():
            print("%-*s : %s" % (width, k, " ".join(v) if isinstance(v, list) else v))
    return cfg

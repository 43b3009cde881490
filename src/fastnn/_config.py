"""Backend registry, thread settings and build report (`fastnn.show_config`)."""
import contextlib
import importlib
import os
import threading
import types

import numpy as np

from .kernels import numpy_ref

_KERNEL_NAMES = tuple(numpy_ref.__all__)
_CYTHON_MODULES = ("_activations", "_dense", "_batchnorm", "_losses", "_updates")

# Work (elements touched) below which a kernel runs on one thread: waking a second
# thread costs more than it saves on small arrays.
PARALLEL_MIN_WORK = 1 << 15


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


_NUMPY = types.SimpleNamespace(name="numpy", **{k: getattr(numpy_ref, k) for k in _KERNEL_NAMES})
_CYTHON, _RUNTIME, _CYTHON_ERROR = _load_cython_backend()
_BACKENDS = {"numpy": _NUMPY}
if _CYTHON is not None:
    _BACKENDS["cython"] = _CYTHON

_state = threading.local()
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
_blas_limiter = None


def set_backend(name):
    """Select the kernel backend for this process: "cython" (default when built) or "numpy"."""
    global _default_backend
    _check_backend(name, "set_backend")
    _default_backend = name
    _state.backend = None


def get_backend():
    """Name of the active backend ("cython" or "numpy")."""
    return getattr(_state, "backend", None) or _default_backend


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the block on backend `name` (in this thread), then restore."""
    _check_backend(name, "use_backend")
    previous = getattr(_state, "backend", None)
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
    """The active backend's kernel namespace (functions of `kernels.numpy_ref.__all__`)."""
    return _BACKENDS[get_backend()]


def set_num_threads(n):
    """Use n threads in OpenMP kernels, and limit BLAS to n threads so they never
    oversubscribe the cores together."""
    global _num_threads, _blas_limiter
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError("set_num_threads: expected a positive int, got %r" % (n,))
    _num_threads = int(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    _blas_limiter = threadpool_limits(limits=_num_threads, user_api="blas")


def get_num_threads():
    """Number of threads OpenMP kernels use."""
    return _num_threads


def threads_for(work):
    """Thread count for a kernel touching `work` elements: 1 for small work."""
    return 1 if work < PARALLEL_MIN_WORK else _num_threads


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
    from . import __version__
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

"""The kernel registry (which implementation runs each operation), backend selection and
the build report (`fastnn.show_config`).

Every operation has a NumPy reference (`fastnn.kernels.ref.<family>`) and, usually, a
compiled twin in `fastnn.kernels._<family>` with the same name and signature. The
registry is per operation (Thinc's Ops pattern): the "cython" backend runs each
operation's compiled kernel where one exists and its NumPy reference where none does
(a family whose module failed to build, or a kernel written in NumPy only), so one
missing kernel never disables the others. `show_config()` lists the operations that
run NumPy code on the "cython" backend.
"""
import contextlib
import importlib
import os
import threading
import types

import numpy as np

from . import threads as _threads
from .machine import cpu_name
# the thread settings live in core.threads; the ops, layers and optimizers take them
# from here with the backend they run on
from .threads import get_num_threads, set_num_threads, threads_for  # noqa: F401
from ..kernels import ref as kernel_ref


def _family_kernels(family):
    """{op name: (NumPy function, compiled function or None)} of one kernel family, and
    why its compiled module is missing (None when it loaded)."""
    ref = importlib.import_module("fastnn.kernels.ref." + family)
    try:
        compiled, error = importlib.import_module("fastnn.kernels._" + family), None
    except ImportError as exc:
        compiled, error = None, "fastnn.kernels._%s: %s" % (family, exc)
    return {name: (getattr(ref, name), getattr(compiled, name, None))
            for name in ref.__all__}, error


def _load_registry():
    kernels, errors = {}, []
    for family in kernel_ref.FAMILIES:
        ops, error = _family_kernels(family)
        kernels.update(ops)
        if error is not None:
            errors.append(error)
    return kernels, errors


#: op name -> (NumPy reference, compiled kernel or None)
KERNELS, _COMPILE_ERRORS = _load_registry()
# the compiled kernels (and with them SciPy's BLAS) are loaded now: their BLAS runs on
# one thread under the kernels' own team; importing fastnn leaves NumPy's BLAS alone
_threads.apply_blas_limits(all_libraries=False)


def register_kernel(name, numpy_fn, compiled_fn=None):
    """Register (or replace) operation `name`: its NumPy reference and, optionally, its
    compiled twin (same signature). The backends see it at once."""
    KERNELS[name] = (numpy_fn, compiled_fn)
    _rebuild()


def _rebuild():
    global _NUMPY, _CYTHON
    _NUMPY = types.SimpleNamespace(name="numpy", **{k: v[0] for k, v in KERNELS.items()})
    _CYTHON = types.SimpleNamespace(name="cython", **{k: v[1] or v[0]
                                                     for k, v in KERNELS.items()})


def numpy_ops():
    """The operations that run NumPy code on the "cython" backend (no compiled twin)."""
    return sorted(k for k, v in KERNELS.items() if v[1] is None)


_NUMPY = _CYTHON = None
_rebuild()
#: the compiled backend exists when any compiled kernel does
_HAVE_CYTHON = any(v[1] is not None for v in KERNELS.values())


def _select_gemm():
    """Route the compiled kernels' products to one BLAS library for the whole process
    (`fastnn.kernels.blas_select`), before any kernel runs; None without them."""
    try:
        from ..kernels import blas_select
    except ImportError:
        return None
    return blas_select.select()


_GEMM = _select_gemm()


class _ThreadState(threading.local):
    """Per-thread settings. The class attribute is every thread's default, so reading it
    never raises (getattr with a default on a missing attribute cost ~1 us per call, and
    every kernel call asks for the backend)."""
    backend = None      # set by use_backend: overrides _default_backend in this thread


_state = _ThreadState()
_default_backend = "cython" if _HAVE_CYTHON else "numpy"


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
    if name == "cython" and not _HAVE_CYTHON:
        raise RuntimeError("%s: the cython backend is not available (%s); reinstall with "
                           "a working C compiler" % (fn, "; ".join(_COMPILE_ERRORS)))


def backend():
    """The active backend's kernel namespace: one function per registered operation."""
    return _CYTHON if get_backend() == "cython" else _NUMPY


def _blas_name():
    """The BLAS libraries loaded, in a stable order (by file name)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown"
    libs = sorted((i for i in threadpool_info() if i.get("user_api") == "blas"),
                  key=lambda i: os.path.basename(i.get("filepath", "")))   # a stable order
    return ", ".join("%s %s (%s, %s)" % (i.get("internal_api"), i.get("version"),
                                         i.get("architecture"),
                                         os.path.basename(i.get("filepath", "")))
                     for i in libs) or "unknown"


def _conv_kernels():
    """How float32 convolutions can run: on fastnn's own direct and lane kernels (the
    instruction set they use) or only as im2col + GEMM."""
    conv = KERNELS["conv2d_forward"][1]
    if conv is None:
        return "none (no compiled kernels)"
    level = importlib.import_module(conv.__module__).direct_level()
    return "direct kernels (%s)" % level if level else "im2col + GEMM (no AVX2 + FMA)"


def show_config(print_=True):
    """Report the build and runtime configuration; prints it and returns a dict."""
    from .. import __version__
    import scipy.linalg  # noqa: F401  (load scipy's BLAS so threadpoolctl sees it)

    runtime = _threads._RUNTIME
    cfg = {
        "version": __version__,
        "backend": get_backend(),
        "cython": _HAVE_CYTHON,
        "numpy_ops": numpy_ops() if _HAVE_CYTHON else "all",
        "openmp": bool(runtime.openmp_enabled()) if runtime is not None else False,
        "num_threads": get_num_threads(),
        "cpu": cpu_name(),
        "blas": _blas_name(),
        "gemm": ("%s (%s)" % (_GEMM["library"], _GEMM["reason"]) if _GEMM else "none"),
        "conv": _conv_kernels(),
        "compile_args": runtime.compile_args() if runtime is not None else [],
        "numpy": np.__version__,
    }
    if _COMPILE_ERRORS:
        cfg["cython_error"] = "; ".join(_COMPILE_ERRORS)
    if print_:
        width = max(len(k) for k in cfg)
        for k, v in cfg.items():
            print("%-*s : %s" % (width, k, (" ".join(v) or "(none)") if isinstance(v, list)
                                 else v))
    return cfg

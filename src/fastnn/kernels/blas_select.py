"""Which BLAS library the compiled kernels' matrix products call, chosen once per process.

Candidates: SciPy's OpenBLAS (always there) and Intel MKL when the optional `mkl` package
is installed (its libmkl_rt, a ~1 GB install, never a dependency). MKL is loaded
sequential (no thread pool of its own: the kernels split their products across their
OpenMP team) and in strict conditional-numerical-reproducibility mode, so its results,
like OpenBLAS's, do not depend on alignment or on the thread count.

The environment variable FASTNN_GEMM picks the library: "openblas", "mkl", or "auto"
(the default: when MKL is present, the faster of the two for each shape class of the
kernels' products (`_blas.CLASSES`: matrix-vector, thin, wide), measured on shapes of
the reference training steps; OpenBLAS otherwise). The measurement (~0.3 s) runs once
per machine: its
verdict is kept in $FASTNN_CACHE_DIR (default ~/.cache/fastnn)/gemm.json under the CPU,
the libraries and OPENBLAS_CORETYPE, so that every later process makes the same choice
and computes the same bits (without a writable cache, each process measures).
`choice()` reports what was chosen and why (`fastnn.show_config()` shows it).
"""
import ctypes
import ctypes.util
import glob
import json
import os
import sys
import time

from . import _blas
from ..core.machine import cpu_name

ENV = "FASTNN_GEMM"
LIBRARIES = ("auto", "openblas", "mkl")
#: row-major (m, k, n) products of the reference training steps per shape class
SHAPES = {"vector": [(1, 784, 256), (1, 1024, 1024)],
          "thin": [(64, 784, 256), (128, 784, 512), (512, 128, 512)],
          "wide": [(512, 784, 1024), (256, 512, 512)]}
ROUNDS = 3             # turns of every library on every shape class (auto measurement)
_MKL_THREADING_SEQUENTIAL = 1
_MKL_CBWR_AUTO_STRICT = 2 | 0x10000

_loaded = {}            # library name -> its function addresses (ctypes keeps it mapped)
_choice = {"library": "openblas", "libraries": dict.fromkeys(_blas.CLASSES, "openblas"),
           "reason": "default"}


def find_mkl():
    """The path of libmkl_rt (the `mkl` package's, else one on the loader's path), or None."""
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return found[0] if found else ctypes.util.find_library("mkl_rt")


def _load_mkl(path):
    lib = ctypes.CDLL(path)
    lib.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
    if lib.MKL_CBWR_Set(_MKL_CBWR_AUTO_STRICT) != 0:
        raise OSError("%s refused strict reproducible mode (MKL_CBWR_Set)" % path)
    _loaded["mkl"] = {name: ctypes.cast(getattr(lib, name + "_"), ctypes.c_void_p).value
                      for name in ("sgemm", "dgemm", "sgemv", "dgemv")}
    _loaded["mkl_lib"] = lib


def available():
    """The libraries this process can use: ["openblas"] plus "mkl" when it loads."""
    if "mkl" not in _loaded:
        path = find_mkl()
        if path is not None:
            try:
                _load_mkl(path)
            except (OSError, AttributeError):
                _loaded["mkl"] = None
    return ["openblas"] + (["mkl"] if _loaded.get("mkl") else [])


def _use(libraries):
    """Route each shape class to its library: {class: name}."""
    for cls, name in libraries.items():
        _blas.use_library(name, None if name == "openblas" else _loaded[name], (cls,))


def seconds(name, shapes, reps=3):
    """Seconds of one float32 product per shape of `shapes` with library `name` (the
    minimum of `reps`; called through the kernels' gemm, single-threaded), restoring the
    chosen library after. Only while no kernel runs."""
    import numpy as np
    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
            for m, k, n in shapes]
    _use(dict.fromkeys(_blas.CLASSES, name))
    try:
        out = []
        for a, b in mats:
            _blas.matmul(a, b)
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                _blas.matmul(a, b)
                best = min(best, time.perf_counter() - t0)
            out.append(best)
        return out
    finally:
        _use(_choice["libraries"])


def select(setting=None):
    """Choose the library (setting: one of LIBRARIES; default: $FASTNN_GEMM or "auto")
    and route the kernels to it; returns `choice()`. ValueError for an unknown setting,
    RuntimeError when "mkl" is asked for and cannot be loaded."""
    setting = (os.environ.get(ENV, "") or "auto") if setting is None else setting
    if setting not in LIBRARIES:
        raise ValueError("fastnn: %s must be one of %s, got %r" % (ENV, ", ".join(LIBRARIES),
                                                                  setting))
    libs = available() if setting != "openblas" else ["openblas"]
    if setting == "mkl" and "mkl" not in libs:
        raise RuntimeError("fastnn: %s=mkl but libmkl_rt was not found or did not load "
                           "(pip install mkl)" % ENV)
    if setting != "auto":
        chosen, reason = dict.fromkeys(_blas.CLASSES, setting), "%s=%s" % (ENV, setting)
    elif len(libs) == 1:
        chosen, reason = dict.fromkeys(_blas.CLASSES, "openblas"), "the only library found"
    else:
        chosen, reason = _measured_choice(libs)
    names = set(chosen.values())
    _choice.update(library=names.pop() if len(names) == 1 else ", ".join(
        "%s: %s" % kv for kv in chosen.items()), libraries=chosen, reason=reason,
        candidates=libs)
    _use(chosen)
    return choice()


def _measured_choice(libs):
    """({shape class: library}, reason): the cached verdict for this machine, else a new
    measurement (saved for the next processes)."""
    path = os.path.join(os.environ.get("FASTNN_CACHE_DIR")
                        or os.path.join(os.path.expanduser("~"), ".cache", "fastnn"),
                        "gemm.json")
    key = "|".join([cpu_name(), find_mkl() or "", os.environ.get("OPENBLAS_CORETYPE", ""),
                    ",".join(libs)])
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = {}
    verdict = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(verdict, dict) and sorted(verdict) == sorted(_blas.CLASSES) and all(
            v in libs for v in verdict.values()):
        return verdict, "measured earlier on this machine (%s)" % path
    # the libraries take turns, round after round, so that a burst of load elsewhere
    # slows both; each keeps its best round
    times = {cls: dict.fromkeys(libs, float("inf")) for cls in _blas.CLASSES}
    for _ in range(ROUNDS):
        for cls, best in times.items():
            for lib in libs:
                best[lib] = min(best[lib], sum(seconds(lib, SHAPES[cls], reps=1)))
    verdict = {cls: min(t, key=t.get) for cls, t in times.items()}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w") as f:
            json.dump(dict(cached if isinstance(cached, dict) else {}, **{key: verdict}), f)
        os.replace(tmp, path)
    except OSError:
        pass                                 # no cache: the next process measures again
    return verdict, "the faster per shape class on training shapes (%s)" % "; ".join(
        "%s: %s" % (cls, ", ".join("%s %.2f ms" % (k, v * 1e3) for k, v in t.items()))
        for cls, t in times.items())


def choice():
    """The process's choice: {"library": the name, or "class: name, ..." when the shape
    classes differ; "libraries": {class: name}; "reason": why; "candidates": [...]}."""
    return dict(_choice, libraries=dict(_choice["libraries"]))

"""The NumPy reference backend: the specification every Cython kernel must match.

Calling convention shared with the Cython backend (`fastnn.kernels._*`):
- arrays are C-contiguous float32 or float64, all of one dtype, already validated;
  integer labels are int64 with values in [0, C);
- outputs are written into preallocated arrays passed by the caller (`out=` style),
  so warm training steps allocate nothing; optional outputs may be None (skipped);
- reductions (losses) return a Python float;
- `nthreads` is the OpenMP thread count for the Cython twin (ignored here).
"""
import importlib

#: the kernel families: ref/<family>.py here, its compiled twin kernels/_<family>.pyx;
#: each lists its kernels in __all__ (fastnn.core.backend registers them by name)
FAMILIES = ("activations", "batchnorm", "conv", "dense", "losses", "pooling", "updates")

__all__ = []
for _family in FAMILIES:
    _module = importlib.import_module("." + _family, __name__)
    globals().update((name, getattr(_module, name)) for name in _module.__all__)
    __all__ += _module.__all__
del _family, _module

"""fastnn: a fast, trustworthy CPU deep-learning engine.

Typed Cython + OpenMP kernels (BLAS for the matrix products) with a NumPy reference
backend computing the same functions; a PyTorch-like layer / loss / optimizer API; and
training tools from the cs231n "Training Neural Networks" lectures.
"""
__version__ = "0.1.0"

from ._config import (get_backend, get_num_threads, set_backend, set_num_threads,
                      show_config, use_backend)
from . import ops

__all__ = ["__version__", "get_backend", "set_backend", "use_backend", "get_num_threads",
           "set_num_threads", "show_config", "ops"]

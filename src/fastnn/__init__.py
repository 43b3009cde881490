"""fastnn: a fast, trustworthy CPU deep-learning engine.

Typed Cython + OpenMP kernels (BLAS for the matrix products) with a NumPy reference
backend computing the same functions; a PyTorch-like layer / loss / optimizer API; and
training tools from the cs231n "Training Neural Networks" lectures.
"""
__version__ = "0.1.0"

import importlib

from .core.backend import (get_backend, get_num_threads, set_backend, set_num_threads,
                           show_config, use_backend)
from .core.rng import seed
from . import data, init, io, layers, losses, ops, optim, train
from .io import load, save
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten,
                     GlobalAvgPool2d, Maxout, MaxPool2d, Module, Parameter, Residual,
                     Sequential)
from .layers.activations import *  # noqa: F401,F403  (every activation layer, PReLU)
from .losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy
from .train import GradcheckResult, History, NonFiniteError, Trainer, gradcheck

#: submodules imported on first attribute access (``fastnn.plots``), never by ``import
#: fastnn``: tools, and the training helpers that are not needed to train
_LAZY = {"bench": "fastnn.tools.bench", "memory": "fastnn.tools.memory",
         "plots": "fastnn.tools.plots", "cli": "fastnn.tools.cli",
         "checkpoint": "fastnn.train.checkpoint", "diagnostics": "fastnn.train.diagnostics",
         "search": "fastnn.train.search", "distributed": "fastnn.distributed"}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError("module 'fastnn' has no attribute %r" % name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "get_backend", "set_backend", "use_backend", "get_num_threads",
    "set_num_threads", "show_config", "seed", "save", "load",
    "data", "init", "io", "layers", "losses", "ops", "optim", "train",
    "Module", "Parameter", "Sequential", "Dense", "Maxout", "BatchNorm1d", "Dropout", "Flatten",
    "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm2d", "Residual",
    "SoftmaxCrossEntropy", "MulticlassHinge", "BCEWithLogits", "MSE",
    "Trainer", "History", "NonFiniteError", "gradcheck",
    "GradcheckResult",
] + layers.activations.__all__

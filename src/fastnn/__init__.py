"""fastnn: a fast, trustworthy CPU deep-learning engine.

Typed Cython + OpenMP kernels (BLAS for the matrix products) with a NumPy reference
backend computing the same functions; a PyTorch-like layer / loss / optimizer API; and
training tools from the cs231n "Training Neural Networks" lectures.
"""
__version__ = "0.1.0"

from ._config import (get_backend, get_num_threads, set_backend, set_num_threads,
                      show_config, use_backend)
from . import data, init, io, layers, losses, ops, optim
from ._random import seed
from .io import load, save
from .layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, Flatten, LeakyReLU, Maxout,
                     Module, Parameter, PReLU, ReLU, Sequential, Sigmoid, SiLU, Swish, Tanh)
from .losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy
from .trainer import History, NonFiniteError, Trainer
from . import checkpoint, diagnostics, memory, plots, search
from .gradcheck import GradcheckResult, gradcheck

__all__ = [
    "__version__", "get_backend", "set_backend", "use_backend", "get_num_threads",
    "set_num_threads", "show_config", "seed", "save", "load",
    "data", "init", "io", "layers", "losses", "ops", "optim",
    "Module", "Parameter", "Sequential", "Dense", "Maxout", "Sigmoid", "Tanh", "ReLU",
    "LeakyReLU", "ELU", "GELU", "SiLU", "Swish", "PReLU", "BatchNorm1d", "Dropout", "Flatten",
    "SoftmaxCrossEntropy", "MulticlassHinge", "BCEWithLogits", "MSE",
    "Trainer", "History", "NonFiniteError", "checkpoint", "diagnostics", "memory", "plots", "search", "gradcheck",
    "GradcheckResult",
]

"""Data utilities for fastnn (pure NumPy).

* batching: :func:`minibatches`, :func:`train_val_split`
* preprocessing: :class:`Standardize`, :class:`PCAWhiten`
* datasets: :func:`make_spirals`, :func:`load_digits` (bundled, CC BY 4.0)
* loaders: :func:`load_idx` (MNIST IDX), :func:`load_csv`, :func:`load_npz`
"""

from .batching import minibatches, train_val_split
from .datasets import load_digits, make_spirals
from .loaders import load_csv, load_idx, load_npz
from .preprocessing import PCAWhiten, Standardize

__all__ = [
    "minibatches",
    "train_val_split",
    "Standardize",
    "PCAWhiten",
    "make_spirals",
    "load_digits",
    "load_idx",
    "load_csv",
    "load_npz",
]

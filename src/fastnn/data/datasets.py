"""Built-in data sets: synthetic spirals and the bundled 8x8 digits."""

from __future__ import annotations

import numbers
from importlib import resources

import numpy as np

from ..core.rng import as_rng

__all__ = ["make_spirals", "load_digits"]


def _float_dtype(dtype, func):
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"{func}: expected a floating dtype, got {dt}")
    return dt


def _positive_int(value, name, func):
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: expected {name} to be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{func}: expected a positive {name}, got {value}")
    return int(value)


def make_spirals(n_per_class=100, n_classes=3, noise=0.2, rng=None, dtype=np.float32):
    """Toy 2-D spiral data set (one arm per class, as in Stanford's cs231n notes).

    Returns ``X`` of shape (n_per_class * n_classes, 2) and ``y`` int64 of
    shape (N,), grouped by class. Along arm k the radius grows linearly from
    0 to 1 while the angle runs linearly over [4k, 4k + 4] radians plus
    Gaussian noise with standard deviation ``noise``.
    ``rng`` is a Generator, an int seed (reproducible) or None.
    """
    func = "make_spirals"
    n = _positive_int(n_per_class, "n_per_class", func)
    k = _positive_int(n_classes, "n_classes", func)
    if not isinstance(noise, numbers.Real) or isinstance(noise, (bool, np.bool_)):
        raise TypeError(f"{func}: expected noise to be a float, got {type(noise).__name__}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"{func}: expected a finite noise >= 0, got {noise}")
    dt = _float_dtype(dtype, func)
    gen = as_rng(rng, func)

    radius = np.tile(np.linspace(0.0, 1.0, n), k)
    start = 4.0 * np.repeat(np.arange(k), n)
    angle = start + np.tile(np.linspace(0.0, 4.0, n), k) + noise * gen.standard_normal(n * k)
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1).astype(dt)
    y = np.repeat(np.arange(k, dtype=np.int64), n)
    return X, y


def load_digits(dtype=np.float32):
    """The UCI 8x8 handwritten digits (1797 samples, CC BY 4.0, see DIGITS_LICENSE.txt).

    Returns ``X`` of shape (1797, 64) with integer pixel values 0..16 (row-major
    8x8 images) in ``dtype``, and ``y`` int64 of shape (1797,) with digits 0..9.
    """
    dt = np.dtype(dtype)
    if not (np.issubdtype(dt, np.number) and dt != np.bool_):
        raise TypeError(f"load_digits: expected a numeric dtype, got {dt}")
    ref = resources.files(__package__).joinpath("digits.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        X = data["X"].astype(dt)
        y = data["y"].astype(np.int64)
    return X, y

"""Built-in data sets: synthetic spirals and the bundled 8x8 digits."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..core.rng import as_rng
from ..core.validation import Bool, Dtype, Integer, Real, check, check_all

__all__ = ["make_spirals", "load_digits"]


_SPIRALS = {"n_per_class": Integer(1), "n_classes": Integer(1), "noise": Real(0),
            "dtype": Dtype()}


def make_spirals(n_per_class=100, n_classes=3, noise=0.2, rng=None, dtype=np.float32):
    """Toy 2-D spiral data set (one arm per class, as in Stanford's cs231n notes).

    Returns ``X`` of shape (n_per_class * n_classes, 2) and ``y`` int64 of
    shape (N,), grouped by class. Along arm k the radius grows linearly from
    0 to 1 while the angle runs linearly over [4k, 4k + 4] radians plus
    Gaussian noise with standard deviation ``noise``.
    ``rng`` is a Generator, an int seed (reproducible) or None.
    """
    func = "make_spirals"
    kw = check_all(func, _SPIRALS, n_per_class=n_per_class, n_classes=n_classes,
                   noise=noise, dtype=dtype)
    n, k, noise, dt = kw["n_per_class"], kw["n_classes"], kw["noise"], kw["dtype"]
    gen = as_rng(rng, func)

    radius = np.tile(np.linspace(0.0, 1.0, n), k)
    start = 4.0 * np.repeat(np.arange(k), n)
    angle = start + np.tile(np.linspace(0.0, 4.0, n), k) + noise * gen.standard_normal(n * k)
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1).astype(dt)
    y = np.repeat(np.arange(k, dtype=np.int64), n)
    return X, y


def load_digits(dtype=np.float32, images=False):
    """The UCI 8x8 handwritten digits (1797 samples, CC BY 4.0, see DIGITS_LICENSE.txt).

    Returns ``X`` of shape (1797, 64) with integer pixel values 0..16 (row-major
    8x8 images) in ``dtype`` -- or, with images=True, of shape (1797, 1, 8, 8): one
    channel, as convolutional layers take them (NCHW) -- and ``y`` int64 of shape
    (1797,) with digits 0..9.

    >>> X, y = load_digits(images=True)
    >>> X.shape, y.shape
    ((1797, 1, 8, 8), (1797,))
    """
    images = check("load_digits", "images", images, Bool())
    dt = np.dtype(dtype)
    if not (np.issubdtype(dt, np.number) and dt != np.bool_):
        raise TypeError(f"load_digits: expected a numeric dtype, got {dt}")
    ref = resources.files(__package__).joinpath("digits.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        X = data["X"].astype(dt)
        y = data["y"].astype(np.int64)
    return (X.reshape(len(X), 1, 8, 8) if images else X), y

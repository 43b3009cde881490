"""Mini-batch iteration and train/validation splitting (pure NumPy)."""

from __future__ import annotations

import numbers

import numpy as np

from ..core.rng import as_rng

__all__ = ["minibatches", "train_val_split"]


def _as_samples(a, name, func):
    """``np.asarray(a)`` with at least one axis (axis 0 indexes samples)."""
    a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"{func}: expected {name} with a leading sample axis, got a scalar")
    return a


def _check_lengths(X, y, func):
    if len(X) != len(y):
        raise ValueError(
            f"{func}: expected X and y with the same number of samples, "
            f"got len(X)={len(X)} and len(y)={len(y)}"
        )


def minibatches(X, y=None, batch_size=32, shuffle=True, rng=None, drop_last=False):
    """Iterate over one epoch of mini-batches.

    X: array of shape (N, ...); y: None or array of shape (N, ...).
    Yields ``(xb, yb)`` with ``xb`` of shape (B, ...) and ``yb`` of shape (B, ...),
    or ``xb`` alone when ``y`` is None; B == batch_size except possibly for the
    last batch, which is dropped when ``drop_last`` is true. Every sample
    appears exactly once per epoch (at most once with ``drop_last``).
    ``shuffle`` draws one permutation from ``rng`` (Generator, int seed or
    None); a Generator is advanced, so successive epochs get new orders.
    Arguments are validated immediately, before the first batch is requested.
    """
    func = "minibatches"
    X = _as_samples(X, "X", func)
    if y is not None:
        y = _as_samples(y, "y", func)
        _check_lengths(X, y, func)
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, (bool, np.bool_)):
        raise TypeError(f"{func}: expected batch_size to be an int, got {type(batch_size).__name__}")
    if batch_size <= 0:
        raise ValueError(f"{func}: expected a positive batch_size, got {batch_size}")
    batch_size = int(batch_size)
    n = len(X)
    order = as_rng(rng, func).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    return _iterate(X, y, order, batch_size, stop)


def _iterate(X, y, order, batch_size, stop):
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, stop)
        idx = slice(start, end) if order is None else order[start:end]
        if y is None:
            yield X[idx]
        else:
            yield X[idx], y[idx]


def _n_val(n, val_fraction, func):
    n_val = int(np.floor(n * val_fraction + 0.5))
    if n_val == 0 or n_val == n:
        part = "validation" if n_val == 0 else "training"
        raise ValueError(
            f"{func}: val_fraction={val_fraction} with {n} samples gives an empty "
            f"{part} set; expected both parts to be non-empty"
        )
    return n_val


def train_val_split(X, y, val_fraction=0.2, stratify=False, rng=None):
    """Randomly split samples into a training and a validation part.

    X: array of shape (N, ...); y: array of shape (N, ...) (shape (N,) when
    ``stratify``). Returns ``(X_train, X_val, y_train, y_val)`` with
    round(N * val_fraction) validation samples, both parts shuffled.
    With ``stratify`` each class of ``y`` contributes val_fraction of its
    samples (largest-remainder rounding), so class proportions are kept.
    ``rng`` is a Generator, an int seed (reproducible) or None.
    """
    func = "train_val_split"
    X = _as_samples(X, "X", func)
    y = _as_samples(y, "y", func)
    _check_lengths(X, y, func)
    if not isinstance(val_fraction, numbers.Real) or isinstance(val_fraction, (bool, np.bool_)):
        raise TypeError(
            f"{func}: expected val_fraction to be a float, got {type(val_fraction).__name__}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{func}: expected 0 < val_fraction < 1, got {val_fraction}")
    gen = as_rng(rng, func)
    n = len(X)
    n_val = _n_val(n, float(val_fraction), func)

    if not stratify:
        perm = gen.permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
    else:
        if y.ndim != 1:
            raise ValueError(f"{func}: stratify expects y of shape (N,), got shape {y.shape}")
        _, labels = np.unique(y, return_inverse=True)
        labels = labels.reshape(-1)
        counts = np.bincount(labels)
        quota = counts * (n_val / n)
        per_class = np.floor(quota).astype(np.int64)
        # hand the remaining validation slots to the largest remainders
        missing = n_val - int(per_class.sum())
        by_remainder = np.argsort(-(quota - per_class), kind="stable")
        per_class[by_remainder[:missing]] += 1
        val_parts, train_parts = [], []
        for c, k in enumerate(per_class):
            members = gen.permutation(np.flatnonzero(labels == c))
            val_parts.append(members[:k])
            train_parts.append(members[k:])
        val_idx = gen.permutation(np.concatenate(val_parts))
        train_idx = gen.permutation(np.concatenate(train_parts))
    return X[train_idx], X[val_idx], y[train_idx], y[val_idx]

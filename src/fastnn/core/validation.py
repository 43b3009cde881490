"""Input checks done once, in Python, before any kernel runs without the GIL.

Every error names the function, what it expected and what it got.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x):
    return "%s array of shape %s" % (x.dtype, x.shape)


def as_float_array(x, fn, name, ndim=None, dtype=None):
    """Return `x` as a C-contiguous, writeable, aligned float32/float64 ndarray (a copy
    only when needed). Raises TypeError for other dtypes or a dtype differing from
    `dtype`, and ValueError for a wrong ndim or an empty array."""
    if not isinstance(x, np.ndarray):
        if x is None or isinstance(x, (str, bytes, dict, set)):
            raise TypeError("%s: %s must be a float array, got %s" % (fn, name, type(x).__name__))
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError("%s: %s must be a float array (%s)" % (fn, name, exc)) from None
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError("%s: %s must be float32 or float64, got %s" % (fn, name, _describe(x)))
    if dtype is not None and x.dtype != dtype:
        raise TypeError("%s: %s must have dtype %s like the other inputs, got %s"
                        % (fn, name, np.dtype(dtype), _describe(x)))
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError("%s: %s must be %s-D, got %s" % (fn, name, ndim, _describe(x)))
    if 0 in x.shape:
        raise ValueError("%s: %s must not be empty, got %s" % (fn, name, _describe(x)))
    flags = x.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        x = np.array(x, order="C", copy=True)
    return x


def check_cache(cache, cls, fn):
    """Raise TypeError unless `cache` is what the matching forward returned."""
    if not isinstance(cache, cls):
        raise TypeError("%s: cache must be the %s returned by the matching forward, got %s"
                        % (fn, cls.__name__, type(cache).__name__))


def check_shape(x, shape, fn, name):
    """Raise ValueError unless x.shape == shape."""
    if x.shape != tuple(shape):
        raise ValueError("%s: %s must have shape %s, got %s" % (fn, name, tuple(shape), _describe(x)))


def as_labels(labels, n, num_classes, fn, name="labels"):
    """Validate integer class labels of shape (n,) in [0, num_classes); return int64."""
    if not isinstance(labels, np.ndarray):
        try:
            labels = np.asarray(labels)
        except (TypeError, ValueError) as exc:
            raise TypeError("%s: %s must be an integer array (%s)" % (fn, name, exc)) from None
    if labels.dtype.kind not in "iu":
        raise TypeError("%s: %s must be integer class indices, got %s"
                        % (fn, name, _describe(labels)))
    if labels.shape != (n,):
        raise ValueError("%s: %s must have shape (%d,) to match the batch, got %s"
                         % (fn, name, n, _describe(labels)))
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError("%s: %s must lie in [0, %d), got values in [%d, %d]"
                         % (fn, name, num_classes, lo, hi))
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    return labels if labels.flags.aligned else labels.copy()


def as_scalar(value, fn, name, low=None, high=None, low_open=False):
    """A finite Python float within [low, high] (or (low, high] when low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError("%s: %s must be a number, got %r" % (fn, name, value))
    value = float(value)
    bad = not np.isfinite(value)
    if low is not None:
        bad = bad or (value <= low if low_open else value < low)
    if high is not None:
        bad = bad or value > high
    if bad:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        rng = "%s%s, %s]" % ("(" if low_open else "[", lo, hi)
        raise ValueError("%s: %s must be a finite number in %s, got %r" % (fn, name, rng, value))
    return value

"""The one validation vocabulary: every public door of fastnn checks its arguments here,
once, in Python, before any kernel runs without the GIL.

Scalars and options are checked against declared *constraints* (as scikit-learn's
``_parameter_constraints``): a function or class states what each argument may be, and
`check` / `check_all` convert the value or raise with one uniform message that names
the function, the argument, what was expected and what was given::

    CONSTRAINTS = {"lr": Real(0, closed="left"), "nesterov": Bool(),
                   "patience": NoneOr(Integer(1))}
    kw = check_all("SGD", CONSTRAINTS, lr=lr, nesterov=nesterov, patience=patience)

A wrong *type* raises TypeError; a value of the right type outside its range raises
ValueError. Arrays have their own helpers below (`as_float_array`, `as_labels`, ...).

>>> check("Dense", "in_features", 3, Integer(1))
3
>>> check("Dropout", "p", 1.5, Real(0, 1, closed="left"))
Traceback (most recent call last):
ValueError: Dropout: p must be a finite number in [0, 1), got 1.5
"""
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------- constraints
class Constraint:
    """A rule a value must satisfy: `convert(value)` returns the value in its canonical
    Python type or raises TypeError (wrong kind) / ValueError (out of range) with
    `describe()` in the message."""

    def describe(self):
        raise NotImplementedError

    def accepts_type(self, value):
        raise NotImplementedError

    def convert(self, value):
        return value

    def in_range(self, value):
        return True


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


class Integer(Constraint):
    """An int (Python or NumPy, never bool) in [low, high] (either bound may be None)."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high

    def describe(self):
        if self.low is not None and self.high is not None:
            return "an int in [%d, %d]" % (self.low, self.high)
        if self.low is not None:
            return "an int >= %d" % self.low
        if self.high is not None:
            return "an int <= %d" % self.high
        return "an int"

    def accepts_type(self, value):
        return isinstance(value, numbers.Integral) and not _is_bool(value)

    def convert(self, value):
        return int(value)

    def in_range(self, value):
        return ((self.low is None or value >= self.low)
                and (self.high is None or value <= self.high))


class Real(Constraint):
    """A finite real number (int or float, never bool) within [low, high]; `closed`
    ("both", "left", "right", "neither") says which bounds are included. finite=False
    also admits +-inf (never NaN)."""

    def __init__(self, low=None, high=None, closed="both", finite=True):
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError("Real: closed must be both, left, right or neither")
        self.low, self.high, self.closed, self.finite = low, high, closed, finite

    def describe(self):
        what = "a finite number" if self.finite else "a number (not NaN)"
        if self.low is None and self.high is None:
            return what
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        return "%s in %s%s, %s%s" % (what, left, "-inf" if self.low is None else _num(self.low),
                                     "inf" if self.high is None else _num(self.high), right)

    def accepts_type(self, value):
        return isinstance(value, numbers.Real) and not _is_bool(value)

    def convert(self, value):
        return float(value)

    def in_range(self, value):
        if math.isnan(value) or (self.finite and not math.isfinite(value)):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True


def _num(x):
    return repr(x) if isinstance(x, float) and not x.is_integer() else "%g" % x


class Bool(Constraint):
    """True or False (Python or NumPy bool)."""

    def describe(self):
        return "True or False"

    def accepts_type(self, value):
        return _is_bool(value)

    def convert(self, value):
        return bool(value)


class Options(Constraint):
    """One of the given values (compared with ==; strings, None, numbers)."""

    def __init__(self, *values):
        self.values = values

    def describe(self):
        return "one of %s" % ", ".join(repr(v) for v in self.values)

    def accepts_type(self, value):
        return True

    def in_range(self, value):
        try:
            return any(value == v and type(value) is type(v) or value is v
                       for v in self.values)
        except (TypeError, ValueError):
            return False


class NoneOr(Constraint):
    """None, or a value satisfying `constraint`."""

    def __init__(self, constraint):
        self.inner = constraint

    def describe(self):
        return "None or %s" % self.inner.describe()

    def accepts_type(self, value):
        return value is None or self.inner.accepts_type(value)

    def convert(self, value):
        return None if value is None else self.inner.convert(value)

    def in_range(self, value):
        return value is None or self.inner.in_range(value)


class InstanceOf(Constraint):
    """An instance of `cls` (a class or a tuple of classes); `what` names it."""

    def __init__(self, cls, what=None):
        self.cls = cls
        self.what = what or ("a %s" % getattr(cls, "__name__", cls))

    def describe(self):
        return self.what

    def accepts_type(self, value):
        return isinstance(value, self.cls)


class Pair(Constraint):
    """A value satisfying `constraint`, or a pair (tuple or list of two) of them, as the
    (height, width) arguments of convolution and pooling; -> a tuple of two."""

    def __init__(self, constraint):
        self.inner = constraint

    def describe(self):
        return "%s or a pair of them" % self.inner.describe()

    def accepts_type(self, value):
        if isinstance(value, (tuple, list)):
            return len(value) == 2 and all(self.inner.accepts_type(v) for v in value)
        return self.inner.accepts_type(value)

    def convert(self, value):
        if isinstance(value, (tuple, list)):
            return tuple(self.inner.convert(v) for v in value)
        return (self.inner.convert(value),) * 2

    def in_range(self, value):
        return all(self.inner.in_range(v) for v in value)


class Dtype(Constraint):
    """float32 or float64, given as a NumPy type, a dtype or its name; -> np.dtype."""

    def describe(self):
        return "float32 or float64"

    def accepts_type(self, value):
        if isinstance(value, (bool, int, float)) or value is None:
            return False
        try:
            return np.dtype(value) in FLOAT_DTYPES
        except TypeError:
            return False

    def convert(self, value):
        return np.dtype(value)


def check(where, name, value, constraint):
    """`value` converted by `constraint`, or TypeError / ValueError naming `where` (the
    function or layer) and `name` (the argument)."""
    if not constraint.accepts_type(value):
        raise TypeError("%s: %s must be %s, got %s"
                        % (where, name, constraint.describe(), _show(value)))
    converted = constraint.convert(value)
    if not constraint.in_range(converted):
        raise ValueError("%s: %s must be %s, got %s"
                         % (where, name, constraint.describe(), _show(value)))
    return converted


def check_all(where, constraints, **values):
    """{name: converted value} for every keyword, each checked against
    constraints[name]; every keyword must have a declared constraint."""
    return {name: check(where, name, value, constraints[name])
            for name, value in values.items()}


def _show(value):
    if isinstance(value, np.ndarray):
        return describe(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- arrays
def describe(x):
    """"float32 array of shape (2, 3)": how messages name an array."""
    return "%s array of shape %s" % (x.dtype, x.shape)


def short_repr(obj):
    """How a message names an object (a layer, a torch module): its repr, or its class
    name when the repr spans several lines."""
    text = repr(obj)
    return type(obj).__name__ if "\n" in text else text


def layout_faults(a):
    """What keeps ndarray `a` from being handed to a kernel that writes it in place:
    ["not C-contiguous", "read-only", "unaligned"] or a subset (empty: none)."""
    flags = a.flags
    return [what for what, ok in (("not C-contiguous", flags.c_contiguous),
                                  ("read-only", flags.writeable),
                                  ("unaligned", flags.aligned)) if not ok]


def _as_ndarray(x, fn, name, kind):
    if isinstance(x, np.ndarray):
        return x
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise TypeError("%s: %s must be %s array, got %s" % (fn, name, kind, type(x).__name__))
    if hasattr(x, "__dlpack__"):       # a torch tensor, ...: a view of its memory on the CPU
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass                       # another device or dtype: np.asarray tells why
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError("%s: %s must be %s array (%s)" % (fn, name, kind, exc)) from None


def as_user_float(x, fn, name="input"):
    """A user's array-like as a real floating-point ndarray (not copied yet); TypeError
    for integer, bool, complex, object or string data."""
    x = _as_ndarray(x, fn, name, "a float")
    if x.dtype.kind != "f":
        raise TypeError("%s: %s must be a float32 or float64 array, got %s"
                        % (fn, name, describe(x)))
    return x


def as_float_array(x, fn, name, ndim=None, dtype=None):
    """`x` as a C-contiguous, writeable, aligned float32/float64 ndarray (a copy only
    when needed). TypeError for other dtypes or a dtype differing from `dtype`;
    ValueError for a wrong ndim (an int or a tuple of allowed ones) or an empty array."""
    x = _as_ndarray(x, fn, name, "a float")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError("%s: %s must be float32 or float64, got %s" % (fn, name, describe(x)))
    if dtype is not None and x.dtype != dtype:
        raise TypeError("%s: %s must have dtype %s like the other inputs, got %s"
                        % (fn, name, np.dtype(dtype), describe(x)))
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError("%s: %s must be %s-D, got %s" % (fn, name, ndim, describe(x)))
    if 0 in x.shape:
        raise ValueError("%s: %s must not be empty, got %s" % (fn, name, describe(x)))
    flags = x.flags
    if not (flags.c_contiguous and flags.writeable and flags.aligned):
        x = np.array(x, order="C", copy=True)
    return x


def check_cache(cache, cls, fn):
    """TypeError unless `cache` is what the matching forward returned."""
    if not isinstance(cache, cls):
        raise TypeError("%s: cache must be the %s returned by the matching forward, got %s"
                        % (fn, cls.__name__, type(cache).__name__))


def check_shape(x, shape, fn, name):
    """ValueError unless x.shape == shape."""
    if x.shape != tuple(shape):
        raise ValueError("%s: %s must have shape %s, got %s"
                         % (fn, name, tuple(shape), describe(x)))


def as_labels(labels, n, num_classes, fn, name="labels"):
    """Integer class labels of shape (n,) in [0, num_classes), as an aligned int64 array."""
    labels = _as_ndarray(labels, fn, name, "an integer")
    if labels.dtype.kind not in "iu":
        raise TypeError("%s: %s must be integer class indices, got %s"
                        % (fn, name, describe(labels)))
    if labels.shape != (n,):
        raise ValueError("%s: %s must have shape (%d,) to match the batch, got %s"
                         % (fn, name, n, describe(labels)))
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError("%s: %s must lie in [0, %d), got values in [%d, %d]"
                         % (fn, name, num_classes, lo, hi))
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    return labels if labels.flags.aligned else labels.copy()


def as_weights(weights, n, fn, name="sample_weight", dtype=np.float64):
    """Non-negative finite weights of shape (n,) as a C-contiguous array of `dtype`, not
    all zero. TypeError for non-numeric data; ValueError for a wrong shape, a negative,
    NaN or infinite weight, or weights that are all zero."""
    weights = _as_ndarray(weights, fn, name, "a numeric")
    if weights.dtype.kind not in "fiu":
        raise TypeError("%s: %s must be numeric, got %s" % (fn, name, describe(weights)))
    if weights.shape != (n,):
        raise ValueError("%s: %s must have shape (%d,) (one weight per sample), got %s"
                         % (fn, name, n, describe(weights)))
    weights = np.ascontiguousarray(weights, dtype=dtype)
    if not weights.flags.aligned:
        weights = weights.copy()
    if not np.isfinite(weights).all():
        raise ValueError("%s: %s must be finite, got NaN or inf at index %d"
                         % (fn, name, int(np.flatnonzero(~np.isfinite(weights))[0])))
    if n and weights.min() < 0:
        raise ValueError("%s: %s must be non-negative, got %r at index %d"
                         % (fn, name, float(weights.min()), int(np.argmin(weights))))
    if n and not weights.any():
        raise ValueError("%s: %s must contain at least one non-zero weight, got all zero "
                         "weights" % (fn, name))
    return weights


# ------------------------------------------------ shorthands used by many call sites
def check_int(value, fn, name, minimum=1):
    """An int >= minimum (TypeError for non-ints and bools, ValueError below it)."""
    return check(fn, name, value, Integer(minimum))


def check_float(value, fn, name, low=None, high=None, low_open=False, high_open=False):
    """A finite float within [low, high]; low_open / high_open exclude the bound."""
    closed = {(False, False): "both", (False, True): "left", (True, False): "right",
              (True, True): "neither"}[(bool(low_open), bool(high_open))]
    return check(fn, name, value, Real(low, high, closed))


def as_scalar(value, fn, name, low=None, high=None, low_open=False):
    """A finite Python float within [low, high] (or (low, high] when low_open)."""
    return check_float(value, fn, name, low, high, low_open)


def check_bool(value, fn, name):
    return check(fn, name, value, Bool())


def check_dtype(dtype, fn):
    """np.float32 / np.float64 (or their names / np.dtype) -> np.dtype."""
    return check(fn, "dtype", dtype, Dtype())

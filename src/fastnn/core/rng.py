"""fastnn's global random generator, `seed(n)` and the `rng=` argument convention.

Every function or layer taking `rng` accepts a `numpy.random.Generator` (used as is, so
its state advances), an int seed (a fresh, reproducible Generator) or None, which draws
from fastnn's global generator. `fastnn.seed(n)` replaces the global generator with a
freshly seeded one, so one call makes a whole script reproducible.

>>> import fastnn
>>> fastnn.seed(0)
>>> a = fastnn.init.normal((2, 2))
>>> fastnn.seed(0)
>>> bool((fastnn.init.normal((2, 2)) == a).all())
True
"""
import numbers

import numpy as np

_global = np.random.default_rng()


def seed(n):
    """Reset fastnn's global generator to `numpy.random.default_rng(n)`; n: int >= 0."""
    global _global
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError("seed: expected an int, got %r" % (n,))
    if n < 0:
        raise ValueError("seed: expected a non-negative int, got %d" % n)
    _global = np.random.default_rng(int(n))


def global_rng():
    """The current global generator (the one `seed` last installed)."""
    return _global


def set_global_rng(gen):
    """Install `gen` (a numpy Generator) as the global generator, e.g. to restore one
    saved by `global_rng()`; returns the previous one."""
    global _global
    if not isinstance(gen, np.random.Generator):
        raise TypeError("set_global_rng: expected a numpy.random.Generator, got %s"
                        % type(gen).__name__)
    previous, _global = _global, gen
    return previous


def as_rng(rng, fn="as_rng"):
    """A Generator from `rng`: a Generator (returned as is), an int seed (new
    Generator) or None (fastnn's global generator, looked up now)."""
    if rng is None:
        return _global
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError("%s: rng seed must be a non-negative int, got %d" % (fn, rng))
        return np.random.default_rng(int(rng))
    raise TypeError("%s: rng must be a numpy.random.Generator, an int seed or None, got %r"
                    % (fn, rng))

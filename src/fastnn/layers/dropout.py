"""Inverted dropout."""
import math

import numpy as np

from ..core.rng import as_rng, global_rng
from ..core.validation import Real, check
from .base import Module, register


@register
class Dropout(Module):
    """Inverted dropout: in training each element is zeroed with probability `p` and the
    survivors are scaled by 1 / (1 - p), so eval mode is the identity.

    `rng` (Generator, int seed, or None for fastnn's global generator at each forward)
    draws the masks, so a seeded run is reproducible. The mask is applied again in
    backward.

    >>> import numpy as np
    >>> from fastnn.layers import Dropout
    >>> d = Dropout(0.5, rng=0)
    >>> y = d(np.ones((2, 4), np.float32))
    >>> set(y.ravel().tolist()) <= {0.0, 2.0}
    True
    >>> d.eval()(np.ones((1, 2), np.float32))
    array([[1., 1.]], dtype=float32)
    """

    stochastic = True

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check("Dropout", "p", p, Real(0, 1))
        self._rng = None if rng is None else as_rng(rng, "Dropout")
        self._cache = None

    @property
    def generator(self):
        """The layer's own numpy Generator, or None when it draws from fastnn's global
        generator at each forward."""
        return self._rng

    @generator.setter
    def generator(self, gen):
        if gen is not None and not isinstance(gen, np.random.Generator):
            raise TypeError("Dropout: generator must be a numpy.random.Generator or None, "
                            "got %s" % type(gen).__name__)
        self._rng = gen

    def _forward(self, x):
        if not self.training or self.p == 0.0:
            self._cache = (None, x.shape)
            return x
        ws = self._ws
        gen = self._rng if self._rng is not None else global_rng()
        mask = ws.get("mask", x.shape, x.dtype)
        # the scalars as 0-d arrays of x's dtype: a Python float would become a new
        # 0-d array on every call (a warm step allocates nothing)
        p, scale = ws.get("p", (), x.dtype), ws.get("scale", (), x.dtype)
        p[()] = self.p
        scale[()] = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        gen.random(dtype=x.dtype, out=mask)            # u ~ U[0, 1)
        np.greater_equal(mask, p, out=mask)            # keep with probability 1 - p
        np.multiply(mask, scale, out=mask)
        y = ws.get("y", x.shape, x.dtype)
        np.multiply(x, mask, out=y)
        self._cache = (mask, x.shape)
        return y

    def _backward(self, dy, need_dx=True):
        mask, shape = self._need_cache()
        if mask is None:
            return dy
        dx = self._ws.get("dx", shape, dy.dtype)
        np.multiply(dy, mask, out=dx)
        return dx

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the mask and the output (nothing when p == 0: the input passes through);
        gradients: the input's."""
        if self.p == 0.0:
            return 0, 0
        kept = 2 * math.prod(input_shape) * itemsize
        return kept, self._input_grad_nbytes(input_shape, itemsize, first)

    def extra_repr(self):
        return "p=%r" % self.p

    def _config(self):
        return {"p": self.p}

"""Activation layers (elementwise, no parameters) and PReLU (a learnable slope).

Each works on inputs of 1 to 4 dimensions and keeps the input's dtype; the math is
`fastnn.ops.activation_forward/backward` (and `ops.prelu_*`).

>>> import numpy as np
>>> from fastnn.layers import LeakyReLU
>>> LeakyReLU(0.1)(np.array([[-1.0, 2.0]], np.float32))
array([[-0.1,  2. ]], dtype=float32)
"""
import math

import numpy as np

from .. import ops
from ..ops.activations import (resolve_activation, run_activation_backward,
                               run_activation_forward)
from ..core.validation import FLOAT_DTYPES, check_dtype, check_float, check_int, describe
from .base import Module, Parameter, register


class _Activation(Module):
    """Base of the elementwise activations: `_op` is the ops name, `_kw()` its keywords."""

    _op = None
    recordable = True

    def __init__(self):
        super().__init__()
        self._cache = None

    def _kw(self):
        return {}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output; gradients: the input's."""
        return (math.prod(input_shape) * itemsize,
                self._input_grad_nbytes(input_shape, itemsize, first))

    def watch_kind(self):
        return self._op if self._op in ("relu", "sigmoid", "tanh") else None

    def _forward(self, x):
        if not 1 <= x.ndim <= 4:
            raise self._error(ValueError, "expected an input of 1 to 4 dimensions, got %s"
                              % describe(x))
        if x.dtype not in FLOAT_DTYPES:
            raise self._error(TypeError, "expected a float32 or float64 input, got %s"
                              % describe(x))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        code, p = resolve_activation(self._op, self._kw(), self._label())
        y, self._cache = run_activation_forward(x, code, p, self._ws)
        return y

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        if dy.shape != cache.x.shape or dy.dtype != cache.x.dtype \
                or not dy.flags.c_contiguous:        # internal callers pass exact arrays
            return ops.activation_backward(dy, cache, workspace=self._ws)
        return run_activation_backward(dy, cache, self._ws)

    def extra_repr(self):
        return ", ".join("%s=%r" % kv for kv in self._kw().items())

    def _config(self):
        return self._kw()


@register
class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x))."""
    _op = "sigmoid"


@register
class Tanh(_Activation):
    """y = tanh(x)."""
    _op = "tanh"


@register
class ReLU(_Activation):
    """y = max(x, 0)."""
    _op = "relu"


@register
class LeakyReLU(_Activation):
    """y = x if x > 0 else negative_slope * x."""
    _op = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_float(negative_slope, "LeakyReLU", "negative_slope")

    def _kw(self):
        return {"negative_slope": self.negative_slope}


@register
class ELU(_Activation):
    """y = x if x > 0 else alpha * (exp(x) - 1)."""
    _op = "elu"

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = check_float(alpha, "ELU", "alpha")

    def _kw(self):
        return {"alpha": self.alpha}


@register
class GELU(_Activation):
    """y = x * Phi(x) (approximate="none", exact erf) or its tanh approximation
    (approximate="tanh"), as torch.nn.GELU."""
    _op = "gelu"

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError('GELU: approximate must be "none" or "tanh", got %r' % (approximate,))
        self.approximate = approximate

    def _kw(self):
        return {"approximate": self.approximate}


@register
class SiLU(_Activation):
    """y = x * sigmoid(x)."""
    _op = "silu"


@register
class Swish(_Activation):
    """y = x * sigmoid(beta * x) (beta=1 is SiLU)."""
    _op = "swish"

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = check_float(beta, "Swish", "beta")

    def _kw(self):
        return {"beta": self.beta}


@register
class PReLU(Module):
    """y = x if x > 0 else alpha * x with a learnable `alpha` of shape (num_parameters,),
    initialised to `init` (torch.nn.PReLU). num_parameters=1 shares one slope (input of
    shape (N,) or (N, C)); otherwise one slope per channel of an (N, num_parameters)
    input.

    >>> import numpy as np
    >>> from fastnn.layers import PReLU
    >>> PReLU()(np.array([[-2.0, 3.0]], np.float32))
    array([[-0.5,  3. ]], dtype=float32)
    """

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        super().__init__()
        self.num_parameters = check_int(num_parameters, "PReLU", "num_parameters")
        self.init = check_float(init, "PReLU", "init")
        dt = check_dtype(dtype, "PReLU")
        self._dtype = dt
        self.alpha = Parameter(np.full(self.num_parameters, self.init, dt), "alpha")
        self._cache = None

    def _forward(self, x):
        c = self.num_parameters
        if c == 1:
            ok = x.ndim in (1, 2)
            want = "(N,) or (N, C)"
        else:
            ok = x.ndim == 2 and x.shape[1] == c
            want = "(N, %d)" % c
        if not ok:
            raise self._error(ValueError, "expected input of shape %s, got %s"
                              % (want, describe(x)))
        if x.dtype != self.alpha.dtype:
            raise self._error(TypeError, "expected a %s input (the layer's dtype), got %s"
                              % (self.alpha.dtype, describe(x)))
        y, self._cache = ops.prelu_forward(x, self.alpha.data, workspace=self._ws)
        return y

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        self._ws.bind("dalpha", self.alpha.grad)
        dx, dalpha = ops.prelu_backward(dy, cache, workspace=self._ws)
        if dalpha is not self.alpha.grad:
            self.alpha.grad[...] = dalpha
        self._mark_grads()
        return dx

    output_shape = _Activation.output_shape
    train_memory = _Activation.train_memory

    def extra_repr(self):
        s = "num_parameters=%d, init=%r" % (self.num_parameters, self.init)
        return s if self._dtype == np.float32 else s + ", dtype=%s" % self._dtype

    def _config(self):
        return {"num_parameters": self.num_parameters, "init": self.init,
                "dtype": str(self._dtype)}

"""Activation layers, one per row of the activation table (elementwise, no parameters:
Sigmoid, Tanh, ReLU, LeakyReLU, ELU, GELU, SiLU, Swish, ...), and PReLU (a learnable
slope).

The elementwise classes are made from `fastnn.kernels.activation_table.ACTIVATIONS`:
each takes its row's parameter (if any) as its one argument, with the row's default and
constraint. Each works on inputs of 1 to 4 dimensions and keeps the input's dtype; the
math is `fastnn.ops.activation_forward/backward` (and `ops.prelu_*`).

>>> import numpy as np
>>> from fastnn.layers import LeakyReLU
>>> LeakyReLU(0.1)(np.array([[-1.0, 2.0]], np.float32))
array([[-0.1,  2. ]], dtype=float32)
"""
import inspect

import numpy as np

from .. import ops
from ..core.validation import (FLOAT_DTYPES, Dtype, Integer, Real, check, check_all,
                               describe)
from ..kernels.activation_table import ACTIVATIONS
from ..ops.activations import run_activation_backward, run_activation_forward
from .base import Module, Parameter, register
from .replay import plannable


class Activation(Module):
    """Base of the elementwise activation layers: `row` is the layer's activation-table
    row; the parameter it declares (if any) is an attribute of the same name, checked
    against the row's constraint at construction and at every forward."""

    row = None
    #: a Sequential of recordable layers may record and replay their kernel calls
    recordable = True

    def __init__(self, *args, **kwargs):
        super().__init__()
        bound = type(self).__signature__.bind(*args, **kwargs)
        param = self.row.param
        if param is not None:
            value = bound.arguments.get(param.name, param.default)
            setattr(self, param.name, check(self.row.layer, param.name, value,
                                            param.constraint))
        self._cache = None

    def _kw(self):
        param = self.row.param
        return {} if param is None else {param.name: getattr(self, param.name)}

    def _forward(self, x):
        if not 1 <= x.ndim <= 4:
            raise self._error(ValueError, "expected an input of 1 to 4 dimensions, got %s"
                              % describe(x))
        if x.dtype not in FLOAT_DTYPES:
            raise self._error(TypeError, "expected a float32 or float64 input, got %s"
                              % describe(x))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        param = self.row.param
        code, p = self.row.resolve(None if param is None else getattr(self, param.name),
                                   self._label())
        y, self._cache = run_activation_forward(x, code, p, self._ws)
        return y

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        if dy.shape != cache.x.shape or dy.dtype != cache.x.dtype \
                or not dy.flags.c_contiguous:        # internal callers pass exact arrays
            return ops.activation_backward(dy, cache, workspace=self._ws)
        return run_activation_backward(dy, cache, self._ws)

    # ----------------------------------------------------------------- layer facts
    def output_shape(self, input_shape):
        """An elementwise layer's output has its input's shape (1 to 4 dimensions)."""
        input_shape = tuple(input_shape)
        if not 1 <= len(input_shape) <= 4:
            raise self._error(ValueError, "expected an input of 1 to 4 dimensions, got "
                              "shape %s" % (input_shape,))
        return input_shape

    def train_memory(self, input_shape, itemsize, first):
        """(kept, grads) bytes of a training step: the output, and the input gradient
        unless `first`."""
        size = int(np.prod(self.output_shape(input_shape))) * itemsize
        return size, 0 if first else size

    def watch_kind(self):
        """What the diagnostics monitor checks at the output (the row's watch kind)."""
        return self.row.watch

    def extra_repr(self):
        return ", ".join("%s=%r" % kv for kv in self._kw().items())

    def _config(self):
        return self._kw()


def _layer_class(row):
    """The layer class of an activation-table row, registered for fastnn.load."""
    params = [] if row.param is None else [inspect.Parameter(
        row.param.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=row.param.default)]
    cls = type(row.layer, (Activation,), {
        "__doc__": row.doc, "__module__": __name__, "__qualname__": row.layer,
        "row": row, "__signature__": inspect.Signature(params)})
    return plannable(register(cls))


_LAYERS = [_layer_class(row) for row in ACTIVATIONS.values() if row.layer is not None]
globals().update((cls.__name__, cls) for cls in _LAYERS)


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

    #: backward copies dalpha into alpha.grad in Python: not a pure kernel program
    recordable = False
    CONSTRAINTS = {"num_parameters": Integer(1), "init": Real(), "dtype": Dtype()}

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        super().__init__()
        kw = check_all("PReLU", self.CONSTRAINTS, num_parameters=num_parameters,
                       init=init, dtype=dtype)
        self.num_parameters, self.init, self._dtype = (kw["num_parameters"], kw["init"],
                                                       kw["dtype"])
        self.alpha = Parameter(np.full(self.num_parameters, self.init, self._dtype),
                               "alpha")
        self._cache = None

    def _expected(self):
        """(ndims the input may have, its channel count or None, how to say it)."""
        if self.num_parameters == 1:
            return (1, 2), None, "(N,) or (N, C)"
        return (2,), self.num_parameters, "(N, %d)" % self.num_parameters

    def _forward(self, x):
        self.output_shape(x.shape)
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

    # ----------------------------------------------------------------- layer facts
    def output_shape(self, input_shape):
        """The input's shape: (N,) or (N, C) with one slope, (N, num_parameters) else."""
        input_shape = tuple(input_shape)
        ndims, channels, want = self._expected()
        if len(input_shape) not in ndims or (channels is not None
                                             and input_shape[1] != channels):
            raise self._error(ValueError, "expected input of shape %s, got shape %s"
                              % (want, input_shape))
        return input_shape

    train_memory = Activation.train_memory      # the output; the input gradient

    def watch_kind(self):
        return None

    def extra_repr(self):
        s = "num_parameters=%d, init=%r" % (self.num_parameters, self.init)
        return s if self._dtype == np.float32 else s + ", dtype=%s" % self._dtype

    def _config(self):
        return {"num_parameters": self.num_parameters, "init": self.init,
                "dtype": str(self._dtype)}


#: the public layers of this module (the base class stays here)
__all__ = [cls.__name__ for cls in _LAYERS] + ["PReLU"]

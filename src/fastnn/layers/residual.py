"""Residual connections: y = x + module(x)."""
import numpy as np

from ..core.validation import InstanceOf, check, describe
from .base import Module, register


@register
class Residual(Module):
    """y = x + module(x), as in a ResNet block; `module` must keep its input's shape.

    Backward adds both paths: dx = dy + (the module's dx for dy). State-dict keys are
    "module.<name>". The skip's sum and gradient go into the layer's workspace, so a warm
    step allocates nothing. A Sequential holding a Residual runs its layers one by one
    (a Residual is not `recordable`); a Sequential inside the Residual still records and
    replays its own kernel calls.

    >>> import numpy as np
    >>> from fastnn.layers import Residual, Sequential, Conv2d, ReLU
    >>> block = Residual(Sequential(Conv2d(4, 4, 3, padding=1, rng=0), ReLU()))
    >>> block(np.ones((2, 4, 8, 8), np.float32)).shape
    (2, 4, 8, 8)
    >>> sorted(block.state_dict())
    ['module.0.bias', 'module.0.weight']
    """

    def __init__(self, module):
        super().__init__()
        self.module = check("Residual", "module", module, InstanceOf(Module, "a fastnn Module"))
        object.__setattr__(module, "_path", "Residual")
        self._cache = None

    def _forward(self, x):
        fx = self.module._forward(x)
        if fx.shape != x.shape or fx.dtype != x.dtype:
            raise self._error(ValueError, "the module must keep its input's shape and "
                              "dtype: input %s, module output %s" % (describe(x), describe(fx)))
        out = self._ws.get("out", x.shape, x.dtype)
        np.add(x, fx, out=out)
        self._cache = x.shape
        return out

    def _backward(self, dy, need_dx=True):
        self._need_cache()
        dfx = self.module._backward(dy, need_dx=need_dx)
        if not need_dx:
            return None
        dx = self._ws.get("dx", dy.shape, dy.dtype)
        np.add(dy, dfx, out=dx)
        return dx

    # ----------------------------------------------------------------- layer facts
    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        inner = tuple(self.module.output_shape(input_shape))
        if inner != input_shape:
            raise self._error(ValueError, "the module must keep its input's shape: input "
                              "%s, module output %s" % (input_shape, inner))
        return input_shape

    def train_memory(self, input_shape, itemsize, first):
        """The module's, plus the sum (kept) and, unless first, the input gradient."""
        kept, grads = self.module.train_memory(input_shape, itemsize, first)
        out = self._input_grad_nbytes(self.output_shape(input_shape), itemsize, False)
        return kept + out, grads + self._input_grad_nbytes(input_shape, itemsize, first)

    def __repr__(self):
        return "Residual(%s)" % repr(self.module).replace("\n", "\n  ")

    def _config(self):
        return {}

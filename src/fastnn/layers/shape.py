"""Shape layers."""
from ..core.validation import describe
from .base import Module, register


@register
class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), as torch.nn.Flatten(); backward reshapes
    the gradient back.

    >>> import numpy as np
    >>> from fastnn.layers import Flatten
    >>> Flatten()(np.zeros((2, 3, 4), np.float32)).shape
    (2, 12)
    """

    def __init__(self):
        super().__init__()
        self._cache = None

    def _forward(self, x):
        if x.ndim < 2:
            raise self._error(ValueError, "expected an input (N, ...) of at least 2 "
                              "dimensions, got %s" % describe(x))
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dy, need_dx=True):
        shape = self._need_cache()
        return dy.reshape(shape)

    def _config(self):
        return {}

"""Shape layers."""
import math

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

    #: only views: a recorded program replays the kernels around it unchanged
    recordable = True

    def __init__(self):
        super().__init__()
        self._cache = None

    def _check_ndim(self, shape, got):
        if len(shape) < 2:
            raise self._error(ValueError, "expected an input (N, ...) of at least 2 "
                              "dimensions, got %s" % got)

    def output_shape(self, input_shape):
        self._check_ndim(input_shape, "shape %s" % (input_shape,))
        return (input_shape[0], math.prod(input_shape[1:]))

    def train_memory(self, input_shape, itemsize, first):
        """Nothing: the output and the gradient are views."""
        self.output_shape(input_shape)
        return 0, 0

    def _forward(self, x):
        self._check_ndim(x.shape, describe(x))
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dy, need_dx=True):
        shape = self._need_cache()
        return dy.reshape(shape)

    def _config(self):
        return {}

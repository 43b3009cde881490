"""2-d pooling layers (NCHW): MaxPool2d, AvgPool2d and GlobalAvgPool2d."""
import math

import numpy as np

from ..core.validation import FLOAT_DTYPES, describe
from ..kernels.activation_table import IDENTITY
from ..ops.conv import check_window_fits
from ..ops.dense import run_dense_backward, run_dense_forward
from ..ops.pooling import (pool_geometry, pool_output_shape, run_avgpool2d_backward,
                           run_avgpool2d_forward, run_maxpool2d_backward,
                           run_maxpool2d_forward)
from .base import Module, register
from .conv import check_image_input, check_images, planes

#: stands for an input large enough for any window: the constructors check their
#: arguments alone (`pool_geometry` reads the shape only; the array holds nothing)
_ANY_INPUT = planes((0, 0, 1 << 22, 1 << 22))


class _Pool2d(Module):
    """What MaxPool2d and AvgPool2d share: the window (kernel_size, stride defaulting to
    the kernel size, padding at most half the kernel; ints or (h, w) pairs), the checks
    and the layer facts. Subclasses name their ops in `run_forward` / `run_backward`."""

    recordable = True

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        geom = pool_geometry(type(self).__name__, _ANY_INPUT, kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = geom[:2], geom[2:4], geom[4:]
        self._cache = None

    @property
    def _geom(self):
        return self.kernel_size + self.stride + self.padding

    def _check(self, x):
        check_window_fits(self._label(), x, self.kernel_size, self.padding)

    def _forward(self, x):
        _check_float_images(self, x)
        self._check(x)
        out, self._cache = self.run_forward(_contiguous(x), self._geom, self._ws)
        return out

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        _check_dy(self, dy, cache)
        return self.run_backward(_contiguous(dy), cache, self._ws)

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        check_images(self, input_shape, None, "shape %s" % (input_shape,))
        self._check(planes(input_shape))
        return pool_output_shape(input_shape, self._geom)

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output (and per output `index_bytes` for its window's winner);
        gradients: the input's."""
        out = math.prod(self.output_shape(input_shape))
        return out * (itemsize + self.index_bytes), self._input_grad_nbytes(
            input_shape, itemsize, first)

    def extra_repr(self):
        s = "kernel_size=%s" % (self.kernel_size,)
        if self.stride != self.kernel_size:
            s += ", stride=%s" % (self.stride,)
        if self.padding != (0, 0):
            s += ", padding=%s" % (self.padding,)
        return s

    def _config(self):
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


@register
class MaxPool2d(_Pool2d):
    """Each window's maximum, as torch.nn.MaxPool2d: x (N, C, H, W) -> (N, C, OH, OW),
    OH = (H + 2 padding - KH) // stride + 1. Padded cells never win, ties go to the
    first maximum of the window and a NaN wins (so it propagates); backward sends each
    output's gradient to its window's winner.

    >>> import numpy as np
    >>> from fastnn.layers import MaxPool2d
    >>> MaxPool2d(2)(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """

    run_forward = staticmethod(run_maxpool2d_forward)
    run_backward = staticmethod(run_maxpool2d_backward)
    index_bytes = np.dtype(np.intp).itemsize


@register
class AvgPool2d(_Pool2d):
    """Each window's mean, as torch.nn.AvgPool2d (padded zeros count:
    count_include_pad=True); shapes and arguments as MaxPool2d.

    >>> import numpy as np
    >>> from fastnn.layers import AvgPool2d
    >>> AvgPool2d(2)(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """

    run_forward = staticmethod(run_avgpool2d_forward)
    run_backward = staticmethod(run_avgpool2d_backward)
    index_bytes = 0


@register
class GlobalAvgPool2d(Module):
    """The mean of each channel's plane: x (N, C, H, W) -> (N, C) (torch's
    AdaptiveAvgPool2d(1) followed by a flatten).

    Computed as one matrix-vector product: the planes as the rows of an (N C, H W)
    matrix times a vector of 1 / (H W) (the dense kernels: BLAS-fast, recordable), and
    backward the outer product spreading dy / (H W) over each plane.

    >>> import numpy as np
    >>> from fastnn.layers import GlobalAvgPool2d
    >>> GlobalAvgPool2d()(np.ones((2, 3, 4, 5), np.float32)).shape
    (2, 3)
    """

    recordable = True

    def __init__(self):
        super().__init__()
        self._cache = None

    def _averager(self, size, dtype):
        """The (size, 1) vector of 1 / size, kept in the workspace."""
        avg = self._ws.get("averager", (size, 1), dtype)
        avg.fill(1.0 / size)
        return avg

    def _forward(self, x):
        _check_float_images(self, x)
        n, c, h, w = x.shape
        rows = _contiguous(x).reshape(n * c, h * w)
        out, cache = run_dense_forward(rows, self._averager(h * w, x.dtype), None,
                                       IDENTITY, 0.0, self._ws)
        self._cache = (cache, x.shape)
        return out.reshape(n, c)

    def _backward(self, dy, need_dx=True):
        cache, shape = self._need_cache()
        if dy.shape != shape[:2] or dy.dtype != cache.x.dtype:
            raise self._error(ValueError, "dy must be a %s array of shape %s, got %s"
                              % (cache.x.dtype, shape[:2], describe(dy)))
        dx, _, _ = run_dense_backward(_contiguous(dy).reshape(-1, 1), cache, self._ws,
                                      need_dx)
        return None if dx is None else dx.reshape(shape)

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        check_images(self, input_shape, None, "shape %s" % (input_shape,))
        return input_shape[:2]

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output; gradients: the input's."""
        return math.prod(self.output_shape(input_shape)) * itemsize, \
            self._input_grad_nbytes(input_shape, itemsize, first)

    def _config(self):
        return {}


def _check_float_images(layer, x):
    check_image_input(layer, x, None, None)
    if x.dtype not in FLOAT_DTYPES:
        raise layer._error(TypeError, "expected a float32 or float64 input, got %s"
                           % describe(x))


def _check_dy(layer, dy, cache):
    """ValueError unless dy has the last forward's output shape and dtype."""
    if dy.shape != cache.out_shape or dy.dtype != cache.dtype:
        raise layer._error(ValueError, "dy must be a %s array of shape %s, got %s"
                           % (cache.dtype, cache.out_shape, describe(dy)))


def _contiguous(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)

"""2-d convolution layer (NCHW, torch's Conv2d) and the input checks the image layers
share."""
import math

import numpy as np

from ..core.backend import backend
from ..core.validation import Bool, Dtype, Integer, check_all, describe
from ..ops.conv import (check_window_fits, conv_output_shape, run_conv2d_backward,
                        run_conv2d_forward, window_pairs)
from .base import Module, Parameter, register
from .dense import Dense, FusedActivation, _init_name, _make_weight


def planes(shape):
    """An empty array whose last two axes are those of `shape`: what the window checks of
    `fastnn.ops` read (they look at the shape only) when only a shape is known."""
    return np.empty((0, 0) + tuple(shape[2:]), np.float32)


def check_images(layer, shape, channels, got):
    """ValueError naming the layer unless `shape` is (N, channels, H, W) (any channel
    count when `channels` is None); `got` says what was given."""
    if len(shape) != 4 or (channels is not None and shape[1] != channels):
        raise layer._error(ValueError, "expected input of shape (N, %s, H, W), got %s"
                           % ("C" if channels is None else channels, got))


def check_image_input(layer, x, channels, dtype):
    """check_images on an array, and TypeError unless it has the layer's dtype."""
    check_images(layer, x.shape, channels, describe(x))
    if dtype is not None and x.dtype != dtype:
        raise layer._error(TypeError, "expected a %s input (the layer's dtype), got %s"
                           % (dtype, describe(x)))


@register
class Conv2d(FusedActivation, Module):
    """2-d convolution y = act(conv2d(x, weight) + bias), the activation fused into the
    kernel (torch.nn.Conv2d's arithmetic, zero padding).

    x: (N, in_channels, H, W) -> y: (N, out_channels, OH, OW) with
    OH = (H + 2 padding - dilation (KH - 1) - 1) // stride + 1 (likewise OW).
    kernel_size, stride, padding and dilation are ints or (h, w) pairs. `weight` is
    (out_channels, in_channels, KH, KW) (torch's layout; `init` as Dense's, fan_in =
    in_channels KH KW), `bias` (out_channels,), zeros, or None when bias=False;
    `activation` / `activation_kw` as Dense's.

    >>> import numpy as np
    >>> from fastnn.layers import Conv2d
    >>> conv = Conv2d(3, 8, 3, padding=1, activation="relu", rng=0)
    >>> y = conv(np.ones((2, 3, 16, 16), np.float32)); y.shape
    (2, 8, 16, 16)
    >>> dx = conv.backward(np.ones_like(y)); conv.weight.grad.shape
    (8, 3, 3, 3)
    """

    recordable = True
    CONSTRAINTS = {"in_channels": Integer(1), "out_channels": Integer(1), "bias": Bool(),
                   "dtype": Dtype()}
    run_backward = staticmethod(run_conv2d_backward)
    #: the weight's axis of the outputs: (out_channels, in_channels, KH, KW)
    out_axis = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, activation=None, activation_kw=None,
                 init="he_normal", dtype=np.float32, rng=None):
        super().__init__()
        fn = "Conv2d"
        kw = check_all(fn, self.CONSTRAINTS, in_channels=in_channels,
                       out_channels=out_channels, bias=bias, dtype=dtype)
        win = window_pairs(fn, kernel_size=kernel_size, stride=stride, padding=padding,
                           dilation=dilation)
        self.in_channels, self.out_channels = kw["in_channels"], kw["out_channels"]
        self.kernel_size, self.stride = win["kernel_size"], win["stride"]
        self.padding, self.dilation = win["padding"], win["dilation"]
        self._set_activation(activation, activation_kw, fn)
        dt = self._dtype = kw["dtype"]
        self.init = _init_name(init)
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self.weight = Parameter(_make_weight(init, shape, rng, dt, fn), "weight")
        self.bias = Parameter(np.zeros(self.out_channels, dt), "bias") if kw["bias"] else None
        self._cache = None

    @property
    def _geom(self):
        return self.stride + self.padding + self.dilation

    def _check_fits(self, x):
        check_window_fits(self._label(), x, self.kernel_size, self.padding, self.dilation)

    def _forward(self, x):
        check_image_input(self, x, self.in_channels, self.weight.dtype)
        self._check_fits(x)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        if w.shape != self.weight.shape or w.dtype != x.dtype or (
                b is not None and (b.shape != (self.out_channels,) or b.dtype != x.dtype)):
            raise self._error(ValueError, "weight / bias must have shapes %s / (%d,) and "
                              "the layer's dtype, got %s / %s (replaced?)"
                              % (self.weight.shape, self.out_channels, describe(w),
                                 None if b is None else describe(b)))
        code, p = self._act
        out, self._cache = run_conv2d_forward(x, w, b, self._geom, code, p, self._ws)
        return out

    # ----------------------------------------------------------------- layer facts
    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        check_images(self, input_shape, self.in_channels, "shape %s" % (input_shape,))
        self._check_fits(planes(input_shape))
        return conv_output_shape(input_shape, self.weight.shape, self._geom)

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output, and with a fused activation its input z too; gradients: the
        input's and the scratch of the active backend's kernels (bounded: chunks of the
        unfolded input and of dz, and weight-gradient partials)."""
        out = math.prod(self.output_shape(input_shape)) * itemsize
        kept = out if self.activation is None else 2 * out
        scratch = backend().conv2d_scratch_size(tuple(input_shape), self.weight.shape,
                                                self._geom) * itemsize
        return kept, self._input_grad_nbytes(input_shape, itemsize, first) + scratch

    def extra_repr(self):
        s = "%d, %d, kernel_size=%s" % (self.in_channels, self.out_channels,
                                         self.kernel_size)
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                s += ", %s=%s" % (name, getattr(self, name))
        if self.bias is None:
            s += ", bias=False"
        return s + self._repr_tail()

    def _config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation),
                **self._product_config()}

    _from_config = Dense.__dict__["_from_config"]

"""Fully connected layers: Dense (with a fused activation) and Maxout."""
import numpy as np

from .. import init as _init
from .. import ops
from ..core.rng import as_rng
from ..core.validation import (Bool, Dtype, Integer, NoneOr, InstanceOf, as_float_array,
                               check, check_all, check_shape, describe)
from ..ops.activations import resolve_activation, run_maxout_backward, run_maxout_forward
from ..ops.dense import run_dense_backward, run_dense_forward
from .base import Module, Parameter, register

#: what the diagnostics monitor watches at a Dense output with these fused activations
_WATCHED = ("relu", "sigmoid", "tanh")
_ACTIVATION_KW = NoneOr(InstanceOf(dict, "a dict"))


def _make_weight(init, shape, rng, dtype, fn):
    f = _init.get(init, fn)
    rng = as_rng(rng, fn)            # errors name the layer, not the initialiser
    w = f(shape, rng=rng, dtype=dtype)
    if not isinstance(w, np.ndarray) or w.shape != shape:
        raise ValueError("%s: init must return an array of shape %s, got %r"
                         % (fn, shape, getattr(w, "shape", w)))
    return np.asarray(w, dtype=dtype)


def _check_input(layer, x, features):
    layer._check_features(x.shape, features, describe(x))
    if x.dtype != layer.weight.dtype:
        raise layer._error(TypeError, "expected a %s input (the layer's dtype), got %s"
                           % (layer.weight.dtype, describe(x)))


def _check_params_unchanged(layer, w):
    """The forward's weight is the one backward writes the gradient of: a weight replaced
    by one of another shape in between would not fit (the bias has one entry per output:
    the weight's axis `layer.out_axis`)."""
    if layer.weight.shape != w.shape or (layer.bias is not None and
                                         layer.bias.shape != (w.shape[layer.out_axis],)):
        raise layer._error(RuntimeError, "weight or bias was replaced by one of another "
                           "shape since the last forward; call forward again")


def weight_grads(layer, run_backward, dout, cache, need_dx):
    """Backward of a layer with `weight` and optional `bias` Parameters: their grads are
    bound as the workspace's "dw" / "db", so `run_backward(dout, cache, ws, need_dx) ->
    (dx, dw, db)` writes straight into them; returns dx (None without need_dx)."""
    ws = layer._ws
    ws.bind("dw", layer.weight.grad)
    if layer.bias is not None:
        ws.bind("db", layer.bias.grad)
    dx, dw, db = run_backward(dout, cache, ws, need_dx)
    if dw is not layer.weight.grad:        # never expected; keeps the contract anyway
        layer.weight.grad[...] = dw
    if db is not None and db is not layer.bias.grad:
        layer.bias.grad[...] = db
    layer._mark_grads()
    return dx


def _init_name(init):
    return init if isinstance(init, str) else None


class FusedActivation:
    """What Dense and Conv2d share: an activation fused into the kernel after the
    product, validated on assignment (`layer.activation = "tanh"` changes what the layer
    computes; reading `activation_kw` gives a copy), and the backward of that product
    (`run_backward`, the layer's op) writing straight into the parameters' gradients."""

    @property
    def activation(self):
        """The fused activation's name, or None (identity)."""
        return self._activation

    @activation.setter
    def activation(self, name):
        self._set_activation(name, self._activation_kw, self._label())

    @property
    def activation_kw(self):
        """A copy of the activation's keywords (a dict), or None."""
        kw = self._activation_kw
        return None if kw is None else dict(kw)

    @activation_kw.setter
    def activation_kw(self, kw):
        self._set_activation(self._activation, kw, self._label())

    def _set_activation(self, name, kw, where):
        """Validate and install an activation and its keywords together (the fused
        kernel's code and parameter follow; recorded programs become stale)."""
        kw = check(where, "activation_kw", kw, _ACTIVATION_KW)
        self._act = resolve_activation(name, kw, where)       # (code, p), checked
        self._activation = None if name == "identity" else name
        self._activation_kw = dict(kw) if kw else None

    def watch_kind(self):
        return self.activation if self.activation in _WATCHED else None

    def _repr_tail(self):
        """The end of extra_repr: the activation, its keywords, a dtype but float32."""
        s = ""
        if self.activation is not None:
            s += ", activation=%r" % self.activation
        if self.activation_kw:
            s += ", activation_kw=%r" % self.activation_kw
        if self._dtype != np.float32:
            s += ", dtype=%s" % self._dtype
        return s

    def _product_config(self):
        """The constructor arguments Dense and Conv2d share, for _config."""
        return {"bias": self.bias is not None, "activation": self.activation,
                "activation_kw": self.activation_kw, "init": self.init,
                "dtype": str(self._dtype)}

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        _check_params_unchanged(self, cache.w)
        if dy.shape != cache.out.shape or dy.dtype != cache.out.dtype \
                or not dy.flags.c_contiguous:        # internal callers pass exact arrays
            fn = "%s.backward" % type(self).__name__
            dy = as_float_array(dy, fn, "dy", dtype=cache.out.dtype)
            check_shape(dy, cache.out.shape, fn, "dy")
        return weight_grads(self, self.run_backward, dy, cache, need_dx)


class _Linear(Module):
    """What Dense and Maxout share: the output shape of an (N, in_features) input."""

    #: the weight's axis of the outputs: (in_features, out_features)
    out_axis = 1

    def output_shape(self, input_shape):
        self._check_features(input_shape, self.in_features, "shape %s" % (input_shape,))
        return (input_shape[0], self.out_features)


@register
class Dense(FusedActivation, _Linear):
    """Fully connected layer y = act(x @ weight + bias), the activation fused into the
    kernel.

    x: (N, in_features) -> y: (N, out_features). `weight` is (in_features, out_features)
    (initialised by `init`, a `fastnn.init` name or a callable f(shape, rng, dtype));
    `bias` is (out_features,), zeros, or None when bias=False. `activation` is None or an
    `ops.activation_forward` name ("relu", "tanh", "leaky_relu", "gelu", ...), with its
    keywords in `activation_kw`. Both may be assigned later (`layer.activation = "tanh"`):
    the assignment is validated and changes what the layer computes (reading
    `activation_kw` gives a copy; assign a new dict to change it).

    >>> import numpy as np
    >>> from fastnn.layers import Dense
    >>> layer = Dense(3, 2, activation="relu", rng=0)
    >>> y = layer(np.ones((4, 3), np.float32))
    >>> dx = layer.backward(np.ones_like(y)); layer.weight.grad.shape
    (3, 2)
    """

    recordable = True
    CONSTRAINTS = {"in_features": Integer(1), "out_features": Integer(1), "bias": Bool(),
                   "dtype": Dtype()}
    run_backward = staticmethod(run_dense_backward)

    def __init__(self, in_features, out_features, bias=True, activation=None,
                 init="he_normal", dtype=np.float32, rng=None, activation_kw=None):
        super().__init__()
        fn = "Dense"
        kw = check_all(fn, self.CONSTRAINTS, in_features=in_features,
                       out_features=out_features, bias=bias, dtype=dtype)
        self.in_features, self.out_features = kw["in_features"], kw["out_features"]
        self._set_activation(activation, activation_kw, fn)
        dt = self._dtype = kw["dtype"]
        self.init = _init_name(init)
        w = _make_weight(init, (self.in_features, self.out_features), rng, dt, fn)
        self.weight = Parameter(w, "weight")
        self.bias = Parameter(np.zeros(self.out_features, dt), "bias") if kw["bias"] else None
        self._cache = None

    def _forward(self, x):
        _check_input(self, x, self.in_features)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        if w.shape != (self.in_features, self.out_features) or w.dtype != x.dtype or (
                b is not None and (b.shape != (self.out_features,) or b.dtype != x.dtype)):
            raise self._error(ValueError, "weight / bias must have shapes (%d, %d) / (%d,) "
                              "and the layer's dtype, got %s / %s (replaced?)"
                              % (self.in_features, self.out_features, self.out_features,
                                 describe(w), None if b is None else describe(b)))
        code, p = self._act
        out, self._cache = run_dense_forward(x, w, b, code, p, self._ws)
        return out

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output, and with a fused activation its input z too; gradients: the
        input's, and with a fused activation dz."""
        out = self.output_shape(input_shape)[0] * self.out_features * itemsize
        dx = self._input_grad_nbytes(input_shape, itemsize, first)
        if self.activation is None:
            return out, dx
        return 2 * out, dx + out

    def extra_repr(self):
        return "in_features=%d, out_features=%d, bias=%s%s" % (
            self.in_features, self.out_features, self.bias is not None, self._repr_tail())

    def _config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                **self._product_config()}

    @classmethod
    def _from_config(cls, config):
        config = dict(config)
        init = config.pop("init", None)
        if init is not None:
            _init.get(init, cls.__name__)
        layer = cls(init="zeros", **config)
        layer.init = init
        return layer


@register
class Maxout(_Linear):
    """Maxout (Goodfellow et al.): y[:, j] = max_k (x @ W_k + b_k)[:, j] over `pieces`
    affine maps.

    One GEMM computes all pieces at once: `weight` is (in_features, out_features *
    pieces) and `bias` (out_features * pieces,), column j * pieces + k holding piece k of
    output j. A max over the pieces follows (`ops.maxout_forward`: ties go to the first
    maximal piece, a NaN propagates), and the backward sends each output's gradient to
    the winning piece only.

    >>> import numpy as np
    >>> from fastnn.layers import Maxout
    >>> Maxout(4, 3, pieces=2, rng=0)(np.ones((5, 4), np.float32)).shape
    (5, 3)
    """

    CONSTRAINTS = dict(Dense.CONSTRAINTS, pieces=Integer(1))

    def __init__(self, in_features, out_features, pieces=2, bias=True, init="he_normal",
                 dtype=np.float32, rng=None):
        super().__init__()
        fn = "Maxout"
        kw = check_all(fn, self.CONSTRAINTS, in_features=in_features,
                       out_features=out_features, pieces=pieces, bias=bias, dtype=dtype)
        self.in_features, self.out_features = kw["in_features"], kw["out_features"]
        self.pieces = kw["pieces"]
        dt = self._dtype = kw["dtype"]
        self.init = _init_name(init)
        width = self.out_features * self.pieces
        self.weight = Parameter(_make_weight(init, (self.in_features, width), rng, dt, fn),
                                "weight")
        self.bias = Parameter(np.zeros(width, dt), "bias") if kw["bias"] else None
        self._cache = None

    def _forward(self, x):
        _check_input(self, x, self.in_features)
        b = None if self.bias is None else self.bias.data
        ws = self._ws
        z, dense_cache = ops.dense_forward(x, self.weight.data, b, workspace=ws)
        y, max_cache = run_maxout_forward(z, self.pieces, ws)
        self._cache = (dense_cache, max_cache)
        return y

    def _backward(self, dy, need_dx=True):
        dense_cache, max_cache = self._need_cache()
        _check_params_unchanged(self, dense_cache.w)
        dz = run_maxout_backward(dy, max_cache, self._ws)
        return weight_grads(self, run_dense_backward, dz, dense_cache, need_dx)

    def train_memory(self, input_shape, itemsize, first):
        """Kept: every piece's z, the output and the winning pieces' indices; gradients:
        the input's and dz."""
        out = self.output_shape(input_shape)[0] * self.out_features
        z = out * self.pieces * itemsize
        winners = out * np.dtype(np.intp).itemsize
        return z + out * itemsize + winners, self._input_grad_nbytes(
            input_shape, itemsize, first) + z

    def extra_repr(self):
        s = "in_features=%d, out_features=%d, pieces=%d" % (
            self.in_features, self.out_features, self.pieces)
        if self.bias is None:
            s += ", bias=False"
        if self._dtype != np.float32:
            s += ", dtype=%s" % self._dtype
        return s

    def _config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "pieces": self.pieces, "bias": self.bias is not None, "init": self.init,
                "dtype": str(self._dtype)}

    _from_config = Dense.__dict__["_from_config"]

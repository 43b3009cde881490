"""The activations, declared once; every other part of fastnn reads this table.

`KERNELS` lists the kernel codes in order, each with its NumPy reference body (the
forward f(x) and the gradient f'(x)); the compiled twin is the `ActCode` enum and the
two switch arms of `_activations.pxd`, and `_activations.pyx` refuses to import when
that enum differs from this list. `ACTIVATIONS` has one row per public activation name:
what `fastnn.ops`, `Dense(activation=...)`, the layer classes of `fastnn.layers`, the
CLI's ``--arch`` and the diagnostics monitor know, and how PyTorch and ONNX spell it.

Adding an activation: its kernel entry and row here, its `ActCode` entry and two switch
arms in `_activations.pxd`; the layer class, the ops name, the CLI name and the dispatch
follow.

The NumPy bodies keep the input's dtype (every literal is cast first) and are finite for
any finite input; NaN propagates.
"""
from collections import namedtuple

import numpy as np
from scipy.special import erf

from ..core.validation import Options, Real, check

SQRT_2_OVER_PI = 0.7978845608028654   # sqrt(2 / pi)
INV_SQRT_2 = 0.7071067811865476       # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327     # 1 / sqrt(2 pi)
GELU_C = 0.044715                     # the cubic coefficient of gelu's tanh form


# ------------------------------------------------------------------ NumPy bodies
# forward(x, p, out) writes f(x) into out; grad(x, y, p) returns f'(x) (an array, or a
# scalar of x's dtype), y = f(x); p is the parameter as a scalar of x's dtype.
def sigmoid(x):
    """Stable logistic function: never evaluates exp of a positive number."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _gelu_tanh_inner(x):
    dt = x.dtype.type
    return np.tanh(dt(SQRT_2_OVER_PI) * (x + dt(GELU_C) * x * x * x))


def _identity(x, p, out):
    out[...] = x


def _identity_grad(x, y, p):
    return x.dtype.type(1)


def _sigmoid(x, p, out):
    out[...] = sigmoid(x)


def _sigmoid_grad(x, y, p):
    return y * (y.dtype.type(1) - y)


def _tanh(x, p, out):
    np.tanh(x, out=out)


def _tanh_grad(x, y, p):
    return y.dtype.type(1) - y * y


def _relu(x, p, out):
    np.maximum(x, x.dtype.type(0), out=out)   # maximum propagates NaN


def _relu_grad(x, y, p):
    return (x > 0).astype(x.dtype)


def _leaky_relu(x, p, out):
    out[...] = np.where(x > 0, x, p * x)


def _leaky_relu_grad(x, y, p):
    return np.where(x > 0, x.dtype.type(1), p)


def _elu(x, p, out):
    out[...] = np.where(x > 0, x, p * np.expm1(np.minimum(x, x.dtype.type(0))))


def _elu_grad(x, y, p):
    return np.where(x > 0, x.dtype.type(1), p * np.exp(np.minimum(x, x.dtype.type(0))))


def _gelu(x, p, out):
    dt = x.dtype.type
    out[...] = dt(0.5) * x * (dt(1) + erf(x * dt(INV_SQRT_2)))


def _gelu_grad(x, y, p):
    dt = x.dtype.type
    cdf = dt(0.5) * (dt(1) + erf(x * dt(INV_SQRT_2)))
    return cdf + x * dt(INV_SQRT_2PI) * np.exp(dt(-0.5) * x * x)


def _gelu_tanh(x, p, out):
    dt = x.dtype.type
    out[...] = dt(0.5) * x * (dt(1) + _gelu_tanh_inner(x))


def _gelu_tanh_grad(x, y, p):
    dt = x.dtype.type
    t = _gelu_tanh_inner(x)
    return dt(0.5) * (dt(1) + t) + dt(0.5) * x * (dt(1) - t * t) * dt(SQRT_2_OVER_PI) * (
        dt(1) + dt(3 * GELU_C) * x * x)


def _silu(x, p, out):
    out[...] = x * sigmoid(x)


def _silu_grad(x, y, p):
    one = x.dtype.type(1)
    s = sigmoid(x)
    return s * (one + x * (one - s))


def _swish(x, p, out):
    out[...] = x * sigmoid(p * x)


def _swish_grad(x, y, p):
    one = x.dtype.type(1)
    s = sigmoid(p * x)
    return s + p * x * s * (one - s)


# ----------------------------------------------------------------- kernel codes
#: a kernel code: its name and NumPy reference bodies (the code is the position)
Kernel = namedtuple("Kernel", "name forward grad")

KERNELS = (
    Kernel("identity", _identity, _identity_grad),
    Kernel("sigmoid", _sigmoid, _sigmoid_grad),
    Kernel("tanh", _tanh, _tanh_grad),
    Kernel("relu", _relu, _relu_grad),
    Kernel("leaky_relu", _leaky_relu, _leaky_relu_grad),
    Kernel("elu", _elu, _elu_grad),
    Kernel("gelu", _gelu, _gelu_grad),
    Kernel("gelu_tanh", _gelu_tanh, _gelu_tanh_grad),
    Kernel("silu", _silu, _silu_grad),
    Kernel("swish", _swish, _swish_grad),
)

#: kernel name -> code
CODES = {k.name: code for code, k in enumerate(KERNELS)}
IDENTITY = CODES["identity"]


# ------------------------------------------------------------ public activations
#: an activation's parameter: its keyword, default and `core.validation` constraint
Param = namedtuple("Param", "name default constraint")


class OnnxGraph(namedtuple("OnnxGraph", "since when nodes")):
    """One way to write an activation in ONNX: `nodes`, a tuple of (operator, inputs,
    attributes), valid from opset `since` and for the parameter value `when` (None: any
    value). An input is "x" (the activation's input), "p" (its parameter, as a constant
    of the model's dtype), a float (a constant of the model's dtype) or an int (the
    output of that earlier node); an attribute value "p" is the parameter itself. The
    last node's output is the activation's."""

    __slots__ = ()


def _one_op(op, **attributes):
    """The activation as one ONNX operator on x (opset 13 on)."""
    return (OnnxGraph(13, None, ((op, ("x",), attributes),)),)


# y = 0.5 x (1 + erf(x / sqrt 2))
_GELU_ERF = (("Mul", ("x", INV_SQRT_2), {}), ("Erf", (0,), {}), ("Add", (1, 1.0), {}),
             ("Mul", ("x", 2), {}), ("Mul", (3, 0.5), {}))
# y = 0.5 x (1 + tanh(sqrt(2 / pi) (x + c x^3)))
_GELU_TANH = (("Mul", ("x", "x"), {}), ("Mul", (0, "x"), {}), ("Mul", (1, GELU_C), {}),
              ("Add", ("x", 2), {}), ("Mul", (3, SQRT_2_OVER_PI), {}), ("Tanh", (4,), {}),
              ("Add", (5, 1.0), {}), ("Mul", ("x", 6), {}), ("Mul", (7, 0.5), {}))


class Activation(namedtuple("Activation", "name layer doc kernel param torch torch_param "
                                          "onnx watch")):
    """One public activation.

    name: the public name (ops, Dense's `activation`, the CLI); layer: its layer class's
    name (None: no layer); doc: the formula, for the layer's docstring; kernel: a
    `KERNELS` name, or {parameter value: kernel name} when the parameter selects the
    kernel (gelu's `approximate`); param: its `Param` or None; torch: the torch.nn
    module; torch_param: the keyword under which that module takes the parameter (None:
    it takes none, so only the default value has a torch equivalent); onnx: its
    `OnnxGraph`s, the newest opset first (an exporter takes the first that applies);
    watch: what the diagnostics monitor checks at the output ("relu": dead units,
    "sigmoid" / "tanh": saturation, None: nothing)."""

    __slots__ = ()

    def value(self, kw):
        """The parameter's value in the keywords `kw` (a dict or None; the default when
        absent there), None when the activation has no parameter."""
        return None if self.param is None else (kw or {}).get(self.param.name,
                                                               self.param.default)

    def resolve(self, value, where):
        """(kernel code, scalar parameter) for this activation with parameter `value`
        (its default when omitted), checked against the declared constraint."""
        if self.param is None:
            return CODES[self.kernel], 0.0
        value = check(where, self.param.name, value, self.param.constraint)
        if isinstance(self.kernel, dict):
            return CODES[self.kernel[value]], 0.0
        return CODES[self.kernel], float(value)


ACTIVATIONS = {row.name: row for row in (
    Activation("identity", None, "y = x", "identity", None,
               "Identity", None, _one_op("Identity"), None),
    Activation("sigmoid", "Sigmoid", "y = 1 / (1 + exp(-x)).", "sigmoid", None,
               "Sigmoid", None, _one_op("Sigmoid"), "sigmoid"),
    Activation("tanh", "Tanh", "y = tanh(x).", "tanh", None,
               "Tanh", None, _one_op("Tanh"), "tanh"),
    Activation("relu", "ReLU", "y = max(x, 0).", "relu", None,
               "ReLU", None, _one_op("Relu"), "relu"),
    Activation("leaky_relu", "LeakyReLU", "y = x if x > 0 else negative_slope * x.",
               "leaky_relu", Param("negative_slope", 0.01, Real()),
               "LeakyReLU", "negative_slope", _one_op("LeakyRelu", alpha="p"), None),
    Activation("elu", "ELU", "y = x if x > 0 else alpha * (exp(x) - 1).",
               "elu", Param("alpha", 1.0, Real()),
               "ELU", "alpha", _one_op("Elu", alpha="p"), None),
    Activation("gelu", "GELU", 'y = x * Phi(x) (approximate="none", exact erf) or its tanh '
               'approximation (approximate="tanh"), as torch.nn.GELU.',
               {"none": "gelu", "tanh": "gelu_tanh"},
               Param("approximate", "none", Options("none", "tanh")),
               "GELU", "approximate",
               (OnnxGraph(20, None, (("Gelu", ("x",), {"approximate": "p"}),)),
                OnnxGraph(13, "none", _GELU_ERF), OnnxGraph(13, "tanh", _GELU_TANH)), None),
    Activation("silu", "SiLU", "y = x * sigmoid(x).", "silu", None,
               "SiLU", None,
               (OnnxGraph(13, None, (("Sigmoid", ("x",), {}), ("Mul", ("x", 0), {}))),),
               None),
    Activation("swish", "Swish", "y = x * sigmoid(beta * x) (beta=1 is SiLU).",
               "swish", Param("beta", 1.0, Real()),
               "SiLU", None,
               (OnnxGraph(13, None, (("Mul", ("x", "p"), {}), ("Sigmoid", (0,), {}),
                                     ("Mul", ("x", 1), {}))),), None),
)}

#: the activation names that have a layer (the CLI's --arch modifiers)
LAYER_NAMES = tuple(name for name, row in ACTIVATIONS.items() if row.layer is not None)


def resolve(name, kw, where):
    """(kernel code, scalar parameter) for an activation name (None: identity) and its
    keyword arguments (a dict or None), every value checked against the table:
    ValueError for an unknown name or a bad value, TypeError for a wrong type or an
    unexpected keyword."""
    row = ACTIVATIONS.get("identity" if name is None else name) \
        if isinstance(name, (str, type(None))) else None
    if row is None:
        raise ValueError("%s: unknown activation %r; expected one of %s"
                         % (where, name, ", ".join(sorted(ACTIVATIONS))))
    if kw is not None and not isinstance(kw, dict):
        raise TypeError("%s: activation keywords must be a dict, got %s"
                        % (where, type(kw).__name__))
    kw = dict(kw or {})
    value = kw.pop(row.param.name, row.param.default) if row.param else None
    if kw:
        raise TypeError("%s: activation %r got unexpected keyword(s) %s"
                        % (where, row.name, ", ".join(sorted(kw))))
    return row.resolve(value, where)

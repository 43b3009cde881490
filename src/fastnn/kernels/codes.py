"""Integer codes shared by both kernel backends (Cython switches on them)."""

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SILU, SWISH = range(10)

#: public activation name -> (code, name of its scalar parameter or None, default)
ACTIVATIONS = {
    "identity": (IDENTITY, None, 0.0),
    "sigmoid": (SIGMOID, None, 0.0),
    "tanh": (TANH, None, 0.0),
    "relu": (RELU, None, 0.0),
    "leaky_relu": (LEAKY_RELU, "negative_slope", 0.01),
    "elu": (ELU, "alpha", 1.0),
    "gelu": (GELU, None, 0.0),        # approximate="tanh" selects GELU_TANH
    "silu": (SILU, None, 0.0),
    "swish": (SWISH, "beta", 1.0),
}

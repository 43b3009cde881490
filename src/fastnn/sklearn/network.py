"""The fastnn network behind the estimators: built from their hyperparameters,
initialised as scikit-learn initialises its MLPs, and described by a small spec from
which a pickled estimator rebuilds it.

A network is ``Dense -> [BatchNorm1d -> activation] -> [Dropout]`` per hidden layer
(the activation fused into the Dense when there is no batch norm) and a last Dense
that outputs logits (no softmax / sigmoid layer).
"""
import numpy as np

from .. import layers
from ..kernels.activation_table import ACTIVATIONS
from ..layers import BatchNorm1d, Dense, Dropout, Sequential

#: scikit-learn's activation names that fastnn spells differently
SKLEARN_NAMES = {"logistic": "sigmoid"}
#: every hidden activation an estimator accepts
ACTIVATION_NAMES = tuple(sorted(set(ACTIVATIONS) | set(SKLEARN_NAMES)))


def fastnn_activation(name):
    """The fastnn name of an estimator's activation (None for the identity)."""
    name = SKLEARN_NAMES.get(name, name)
    return None if name == "identity" else name


class NetworkSpec:
    """What a network is made of: layer widths ``units`` (inputs, hidden..., outputs),
    the fastnn activation name (None: identity), batch_norm, dropout and dtype."""

    __slots__ = ("units", "activation", "batch_norm", "dropout", "dtype")

    def __init__(self, units, activation, batch_norm, dropout, dtype):
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.dtype = np.dtype(dtype)

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k in self.__slots__:
            object.__setattr__(self, k, state[k])

    def build(self, random_state=None):
        """A Sequential of this spec. With a numpy RandomState the weights are drawn
        as scikit-learn's MLPs draw them (Glorot uniform, bound sqrt(6 / (fan_in +
        fan_out)), sqrt(2 / ...) for the logistic activation; intercepts alike; layer
        by layer, weights before intercepts), then one seed per Dropout layer; without
        one the parameters are zeros (to be loaded)."""
        units, dt = self.units, self.dtype
        layers = []
        for i in range(len(units) - 1):
            last = i == len(units) - 2
            fused = None if (last or self.batch_norm) else self.activation
            layers.append(Dense(units[i], units[i + 1], activation=fused, init="zeros",
                                dtype=dt))
            if not last:
                layers.extend(self._after_dense(units[i + 1]))
        model = Sequential(*layers)
        if random_state is not None:
            self._initialise(model, random_state)
        return model

    def _after_dense(self, width):
        """The layers between a hidden Dense and the next one."""
        extra = []
        if self.batch_norm:
            extra.append(BatchNorm1d(width, dtype=self.dtype))
            if self.activation is not None:
                extra.append(getattr(layers, ACTIVATIONS[self.activation].layer)())
        if self.dropout > 0:
            extra.append(Dropout(self.dropout))
        return extra

    def _initialise(self, model, random_state):
        factor = 2.0 if self.activation == "sigmoid" else 6.0
        for layer in dense_layers(model):
            fan_in, fan_out = layer.weight.shape
            bound = np.sqrt(factor / (fan_in + fan_out))
            layer.weight.data = random_state.uniform(-bound, bound, (fan_in, fan_out))
            layer.bias.data = random_state.uniform(-bound, bound, fan_out)
        for layer in model:
            if isinstance(layer, Dropout):
                layer.generator = np.random.default_rng(random_state.randint(2 ** 31))


def dense_layers(model):
    """The Dense layers of a network, input to output."""
    return [layer for layer in model if isinstance(layer, Dense)]


def dropout_generators(model):
    """The generators of the network's Dropout layers, in order."""
    return [layer.generator for layer in model if isinstance(layer, Dropout)]


def set_dropout_generators(model, generators):
    for layer, gen in zip([m for m in model if isinstance(m, Dropout)], generators):
        layer.generator = gen

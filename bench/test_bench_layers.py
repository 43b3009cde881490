"""Layer benchmarks, float32: one public `layer.forward(x)` + `layer.backward(dy)` per
call, on each backend, same data and parameters.

The public path is what a user calls: it validates and copies the input (and dy) into
the layer's workspace and returns fresh arrays, so these times include that overhead
on top of the kernels timed in test_bench_ops.py. Covered: Dense with and without a
fused activation, every activation layer, PReLU, Maxout, BatchNorm1d (training mode),
Dropout (training mode), Flatten, and two Sequentials: one of Dense/BatchNorm1d/ReLU
only (on the compiled backend it replays a recorded kernel program) and one mixing
other layers (run layer by layer on both backends).

Dropout and Flatten call no backend kernel (NumPy on either backend): their two rows
should agree, and show the cost of the public path itself.
"""
import pytest

import fastnn
from conftest import ACTIVATIONS, DENSE, SIZES, measure, rand, size_id

N, IN, OUT = DENSE
ELEMENTWISE = SIZES[0]                 # (256, 1024)


def _activation_layers():
    """id -> entry of LAYERS for every activation layer, e.g. "GELU_tanh" ->
    ("GELU(approximate=tanh)", factory, shape)."""
    out = {}
    for _, kw, cls in ACTIVATIONS.values():
        args = ", ".join("%s=%s" % kv for kv in kw.items())
        key = "_".join([cls.__name__, *map(str, kw.values())])
        out[key] = ("%s(%s)" % (cls.__name__, args) if args else cls.__name__,
                    lambda cls=cls, kw=kw: cls(**kw), ELEMENTWISE)
    return out


#: id -> (description in the group name, layer factory, input shape)
LAYERS = {
    "Dense": ("Dense(%d->%d)" % (IN, OUT), lambda: fastnn.Dense(IN, OUT, rng=0), (N, IN)),
    "Dense_relu": ("Dense(%d->%d, activation=relu)" % (IN, OUT),
                   lambda: fastnn.Dense(IN, OUT, activation="relu", rng=0), (N, IN)),
    **_activation_layers(),
    "PReLU": ("PReLU(num_parameters=%d)" % ELEMENTWISE[1],
              lambda: fastnn.PReLU(ELEMENTWISE[1]), ELEMENTWISE),
    "Maxout": ("Maxout(%d->%d, pieces=2)" % (IN, OUT),
               lambda: fastnn.Maxout(IN, OUT, pieces=2, rng=0), (N, IN)),
    "BatchNorm1d": ("BatchNorm1d", lambda: fastnn.BatchNorm1d(ELEMENTWISE[1]), ELEMENTWISE),
    "Dropout": ("Dropout(p=0.5)", lambda: fastnn.Dropout(0.5, rng=0), ELEMENTWISE),
    "Flatten": ("Flatten", fastnn.Flatten, (ELEMENTWISE[0], 16, ELEMENTWISE[1] // 16)),
    "Sequential_recorded": (
        "Sequential(Dense %d->%d, BatchNorm1d, ReLU, Dense %d->10)" % (IN, OUT, OUT),
        lambda: fastnn.Sequential(fastnn.Dense(IN, OUT, rng=0), fastnn.BatchNorm1d(OUT),
                                  fastnn.ReLU(), fastnn.Dense(OUT, 10, rng=1)),
        (N, IN)),
    "Sequential_mixed": (
        "Sequential(Flatten, Dense %d->%d, BatchNorm1d, PReLU, Dropout, Dense %d->10)"
        % (IN, OUT, OUT),
        lambda: fastnn.Sequential(fastnn.Flatten(), fastnn.Dense(IN, OUT, rng=0),
                                  fastnn.BatchNorm1d(OUT), fastnn.PReLU(),
                                  fastnn.Dropout(0.2, rng=0), fastnn.Dense(OUT, 10, rng=1)),
        (N, 28, 28)),
}


@pytest.mark.parametrize("layer_id", list(LAYERS))
def test_layer_fwd_bwd(benchmark, backend, layer_id):
    what, make, shape = LAYERS[layer_id]
    layer, x = make(), rand(shape)
    dy = rand(layer.forward(x).shape, 1)

    def step():
        layer.forward(x)
        layer.backward(dy)
    measure(benchmark, "layer %s fwd+bwd %s" % (what, size_id(shape)), step)

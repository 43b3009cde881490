"""Optimizer benchmarks, float32: one `opt.step()` of every optimizer (and the SGD and
RMSprop variants) over the ~1.07M parameters of a 784-1024-256-10 Dense/BatchNorm1d
model (`fastnn.tools.bench.fastnn_model`) with its gradients filled in, on each backend.

The optimizer lays the parameters in one flat buffer, so a step is one fused kernel
pass over them (optimizer state allocated by an untimed first step). The "adam update
1M params" group times the bare `adam_step` kernel on 2^20 elements, without the
optimizer around it.
"""
import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.tools.bench import fastnn_model
from conftest import measure, rand

WIDTHS = (784, 1024, 256, 10)

#: id -> (optimizer class, keyword arguments)
OPTIMIZERS = {
    "sgd": (optim.SGD, dict(lr=1e-3)),
    "sgd_momentum": (optim.SGD, dict(lr=1e-3, momentum=0.9)),
    "sgd_nesterov": (optim.SGD, dict(lr=1e-3, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": (optim.SGD, dict(lr=1e-3, weight_decay=1e-4)),
    "adagrad": (optim.Adagrad, dict(lr=1e-2)),
    "rmsprop": (optim.RMSprop, dict(lr=1e-3)),
    "rmsprop_momentum": (optim.RMSprop, dict(lr=1e-3, momentum=0.9)),
    "adam": (optim.Adam, dict(lr=1e-3)),
    "adamw": (optim.AdamW, dict(lr=1e-3)),
}


@pytest.mark.parametrize("opt_id", list(OPTIMIZERS))
def test_optimizer_step(benchmark, backend, opt_id):
    cls, kw = OPTIMIZERS[opt_id]
    params = fastnn_model(WIDTHS).parameters()
    opt = cls(params, **kw)
    for seed, p in enumerate(params, 1):
        p.grad = rand(p.shape, seed)
    n = sum(p.size for p in params)
    what = "%s(%s)" % (cls.__name__, ", ".join("%s=%r" % item for item in kw.items()))
    measure(benchmark, "optimizer %s step %.2fM params" % (what, n / 1e6), opt.step)


def test_adam_kernel_1m(benchmark, backend):
    """The backend's fused Adam kernel alone on 2^20 parameters."""
    k = fastnn.core.backend.backend()
    p, g = rand(1 << 20), rand(1 << 20, 1)
    m, v = np.zeros_like(p), np.zeros_like(p)
    nt = fastnn.get_num_threads()
    measure(benchmark, "adam update 1M params", k.adam_step, p, g, m, v, 1e-3, 0.9, 0.999,
            1e-8, 0.0, 10, False, nt)

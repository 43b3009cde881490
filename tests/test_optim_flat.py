"""Optimizers keep all parameters in one flat buffer and update them in one fused call;
these tests pin that the fused path equals the per-parameter path in every situation."""
import numpy as np
import pytest

from fastnn import optim
from fastnn.layers import Parameter

OPTS = [(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        (optim.Adagrad, dict(lr=0.1, weight_decay=0.01)),
        (optim.RMSprop, dict(lr=0.01, momentum=0.5)),
        (optim.Adam, dict(lr=0.01, weight_decay=0.01)),
        (optim.AdamW, dict(lr=0.01))]
IDS = [c.__name__ for c, _ in OPTS]


def make_params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in [(4, 3), (3,), (2, 5)]]


def run(opt, params, steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()
    return [p.data.copy() for p in params]


@pytest.mark.parametrize("cls,kw", OPTS, ids=IDS)
def test_fused_equals_per_parameter(cls, kw, backend):
    fused = make_params()
    opt = cls(fused, **kw)
    assert opt._flat is not None and all(p.data.base is opt._flat.data for p in fused)
    single = [make_params()[k] for k in range(3)]
    opts = [cls([p], **kw) for p in single]      # one parameter each: never fused
    a = run(opt, fused, 4)
    rng = np.random.default_rng(1)
    for _ in range(4):
        for p in single:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        for o in opts:
            o.step()
    for x, p in zip(a, single):
        np.testing.assert_array_equal(x, p.data)


@pytest.mark.parametrize("cls,kw", OPTS, ids=IDS)
def test_state_dict_round_trip_with_flat_state(cls, kw, backend):
    p1, p2 = make_params(), make_params()
    o1 = cls(p1, **kw)
    run(o1, p1, 3)
    o2 = cls(p2, **kw)
    for a, b in zip(p2, p1):
        a.data = b.data
    o2.load_state_dict(o1.state_dict())
    np.testing.assert_array_equal(np.concatenate([x.ravel() for x in run(o1, p1, 2, seed=5)]),
                                  np.concatenate([x.ravel() for x in run(o2, p2, 2, seed=5)]))


def test_second_optimizer_on_same_parameters_takes_over_safely(backend):
    params = make_params()
    first = optim.SGD(params, lr=0.1)
    second = optim.SGD(params, lr=0.1)            # re-homes the parameters
    assert not first._flat.usable(first._state, first._state_names)
    before = [p.data.copy() for p in params]
    for p in params:
        p.grad = np.ones(p.shape, np.float32)
    first.step()                                  # falls back to per-parameter updates
    second.step()
    for b, p in zip(before, params):
        np.testing.assert_allclose(p.data, b - 0.2, rtol=1e-6)


def test_changing_model_dtype_falls_back(backend):
    from fastnn.layers import Dense, Sequential
    model = Sequential(Dense(3, 4, rng=0), Dense(4, 2, rng=1))
    opt = optim.Adam(model.parameters(), lr=0.1)
    model.to(np.float64)
    x = np.ones((5, 3))
    model.backward(np.ones_like(model(x)))
    w = model[0].weight.data.copy()
    opt.step()
    assert model[0].weight.dtype == np.float64
    assert not np.array_equal(model[0].weight.data, w)

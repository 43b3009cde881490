"""Recorded kernel programs (fastnn.layers.replay): a replayed Sequential forward/backward
must be bit-identical to running the layers, must never replay a stale recording, and
belongs to its model (changing one model leaves another's recordings current)."""
import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.layers import sequential
from fastnn.layers import (BatchNorm1d, Dense, Dropout, LeakyReLU, ReLU, Sequential, Tanh)
from fastnn.losses import SoftmaxCrossEntropy

needs_cython = pytest.mark.skipif(not fastnn.show_config(print_=False)["cython"],
                                  reason="recorded programs need the compiled kernels")
pytestmark = needs_cython


def _net(dtype=np.float32, act=ReLU):
    return Sequential(Dense(12, 16, rng=0, dtype=dtype), BatchNorm1d(16, dtype=dtype), act(),
                      Dense(16, 16, activation="tanh", rng=1, dtype=dtype),
                      Dense(16, 5, rng=2, dtype=dtype))


def _data(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12)).astype(dtype), rng.integers(0, 5, n)


def _both(scenario, monkeypatch):
    """Run scenario() with recorded programs and with the layers run one by one."""
    with fastnn.use_backend("cython"):
        planned = scenario()
        monkeypatch.setattr(sequential, "eligible", lambda layers: False)
        plain = scenario()
    return planned, plain


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=True)
        else:
            assert u == v


def _steps(model, batches, lr=1e-2):
    trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(),
                             optim.Adam(model.parameters(), lr=lr), verbose=0)
    out = [trainer._train_step(x, y)[0] for x, y in batches]
    return out + [p.data.copy() for p in model.parameters()] + [
        model[1].running_mean.copy(), model[1].running_var.copy()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_steps_are_bit_identical_to_the_layer_path(dtype, monkeypatch):
    batches = [_data(8, dtype, seed) for seed in range(6)]      # a new input array each step
    planned, plain = _both(lambda: _steps(_net(dtype), batches), monkeypatch)
    _assert_same(planned, plain)


def _recordings(model):
    """{forward key: (forward program, {backward key: backward program})}"""
    return {k: (f.program, {b: r.program for b, r in f.backward.items()})
            for k, f in model._replays.recordings.items()}


def test_programs_are_recorded_and_replayed():
    x, y = _data(8)
    with fastnn.use_backend("cython"):
        model = _net()
        trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(),
                                 optim.Adam(model.parameters()), verbose=0)
        for _ in range(2):
            trainer._train_step(x, y)
        first = _recordings(model)
        for _ in range(2):
            trainer._train_step(x, y)
        assert _recordings(model) == first          # the same programs, replayed
    [(key, (_, backward))] = first.items()
    assert key == ((8, 12), np.dtype(np.float32).num, True)
    assert list(backward) == [((8, 5), np.dtype(np.float32).num, False)]


def test_alternating_batch_sizes_and_modes(monkeypatch):
    """Ragged last batches, eval passes and train passes interleaved."""
    def scenario():
        model = _net()
        trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(),
                                 optim.SGD(model.parameters(), lr=0.1, momentum=0.9), verbose=0)
        res = []
        for seed, n in enumerate([8, 8, 3, 8, 3, 8]):
            x, y = _data(n, seed=seed)
            res.append(trainer._train_step(x, y)[0])
            model.eval()
            res.append(model(_data(5, seed=seed + 10)[0]))
            model.train()
        return res + [p.data.copy() for p in model.parameters()]
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_changed_hyperparameters_and_threads_are_seen(monkeypatch):
    def scenario():
        model = Sequential(Dense(12, 16, rng=0), BatchNorm1d(16), LeakyReLU(0.01),
                           Dense(16, 5, rng=2))
        x, y = _data(8)
        res = []
        for change in (lambda: None, lambda: setattr(model[2], "negative_slope", 0.5),
                       lambda: setattr(model[1], "eps", 1e-1),
                       lambda: setattr(model[1], "momentum", 0.5),
                       lambda: fastnn.set_num_threads(1), lambda: fastnn.set_num_threads(2)):
            change()
            res.append(model(x))
            res.append(model.backward(np.ones((8, 5), np.float32)))
            res += [p.grad.copy() for p in model.parameters()]
        return res
    threads = fastnn.get_num_threads()
    try:
        planned, plain = _both(scenario, monkeypatch)
    finally:
        fastnn.set_num_threads(threads)
    _assert_same(planned, plain)


def test_loaded_and_assigned_parameters_are_used(monkeypatch):
    def scenario():
        model = _net()
        x, _ = _data(4)
        first = model(x)
        model[0].weight.data = np.full((12, 16), 0.5, np.float32)    # copied in place
        model.load_state_dict({k: v * 2 for k, v in model.state_dict().items()})
        model[3].weight = fastnn.Parameter(np.ones((16, 16), np.float32))  # a new object
        return [first, model(x), model.backward(np.ones((4, 5), np.float32))]
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_layerwise_forward_between_forward_and_backward(monkeypatch):
    """A layer-by-layer pass (as the diagnostics monitor makes) after a replayed forward:
    the backward must use that pass's input, not the replayed one."""
    def scenario():
        model = _net()
        x1, _ = _data(8, seed=1)
        x2, _ = _data(8, seed=2)
        for _ in range(3):
            model._forward(x1)
            model._backward(np.ones((8, 5), np.float32), False)
        h = x2
        for m in model:
            h = m._forward(h)
        model._backward(np.ones((8, 5), np.float32), False)
        return [p.grad.copy() for p in model.parameters()]
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_models_with_other_layers_run_the_layers():
    with fastnn.use_backend("cython"):
        model = Sequential(Dense(12, 16, rng=0), Dropout(0.5, rng=0), Tanh(),
                           Dense(16, 5, rng=1))
        model(_data(4)[0])
    assert "_replays" not in model.__dict__


def test_numpy_backend_never_records():
    with fastnn.use_backend("numpy"):
        model = _net()
        model(_data(4)[0])
    assert "_replays" not in model.__dict__


def test_copies_do_not_share_programs():
    import copy
    with fastnn.use_backend("cython"):
        model = _net()
        x, _ = _data(4)
        model(x)
        twin = copy.deepcopy(model)
        assert "_replays" not in twin.__dict__
        np.testing.assert_array_equal(twin(x), model(x))


def test_program_checks_its_inputs():
    from fastnn.kernels._plan import Recorder, Program
    with fastnn.use_backend("cython"):
        model = _net()
        model(_data(4)[0])
        [program] = [f.program for f in model._replays.recordings.values()]
    good = np.zeros((4, 12), np.float32)
    program.run(good)
    for bad in (np.zeros((5, 12), np.float32), np.zeros((4, 12), np.float64),
                np.zeros((12, 4), np.float32).T, np.zeros(48, np.float32), [[0.0] * 12] * 4):
        with pytest.raises(ValueError):
            program.run(bad)
    with pytest.raises(TypeError):
        program.run(good, good)
    with pytest.raises(ValueError):                  # a patch outside the recording
        Program(Recorder(), [(0, 0, 0)], [(np.float32, (1,))], [])


def test_public_forward_fast_path_matches_the_layers(monkeypatch):
    """Repeated public calls (the replay kept for the last public shape) give the layer
    path's bits, return fresh arrays, and follow changes of input shape, dtype, byte
    order, layout, mode and parameters."""
    def scenario():
        model = _net().eval()
        x, _ = _data(1)
        res = []
        for _ in range(3):
            res.append(model(x))
        assert res[-1] is not res[-2] and not np.shares_memory(res[-1], res[-2])
        res[-1][:] = 99                         # the caller owns what it got
        res.append(model(x))
        res.append(model(x.astype(">f4")))      # byte-swapped: converted, same values
        res.append(model(x.astype(np.float64)))  # another dtype: converted to the model's
        res.append(model(np.asfortranarray(_data(6)[0])))
        res.append(model(_data(6)[0][::2]))      # non-contiguous, 3 rows
        res.append(model(x.tolist()))
        model.train()
        res.append(model(_data(6)[0]))
        model.eval()
        model[0].weight.data = np.full((12, 16), 0.25, np.float32)
        res.append(model(x))
        res.append(model(x))
        return res
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_public_forward_fast_path_keeps_backward_correct(monkeypatch):
    """The cached input is a copy: changing the caller's array after the forward does not
    change the backward; a backward follows every fast forward."""
    def scenario():
        model = _net()
        res = []
        for seed in range(3):
            x, _ = _data(4, seed=seed)
            res.append(model(x))
            x[:] = 1e6
            res.append(model.backward(np.ones((4, 5), np.float32)))
            res += [p.grad.copy() for p in model.parameters()]
        return res
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_public_forward_fast_path_respects_the_backend():
    model = _net().eval()
    x, _ = _data(1)
    with fastnn.use_backend("cython"):
        model(x)
        model(x)
        assert model._replays.public is not None
    with fastnn.use_backend("numpy"):
        calls = []
        real = fastnn.core.backend._NUMPY.dense_forward
        try:
            fastnn.core.backend._NUMPY.dense_forward = lambda *a: calls.append(1) or real(*a)
            y = model(x)
        finally:
            fastnn.core.backend._NUMPY.dense_forward = real
    assert calls, "the numpy backend was not used"
    with fastnn.use_backend("cython"):
        np.testing.assert_allclose(model(x), y, rtol=1e-5, atol=1e-6)


def test_public_forward_fast_path_rejects_bad_input():
    """What the general path rejects is still rejected once a replay is kept."""
    with fastnn.use_backend("cython"):
        model = _net().eval()
        x, _ = _data(2)
        model(x)
        model(x)
        for bad in (np.zeros((2, 12), np.int64), np.zeros((2, 12), np.complex64), None,
                    "abc"):
            with pytest.raises(TypeError):
                model(bad)
        for bad in (np.zeros((2, 11), np.float32), np.zeros((0, 12), np.float32),
                    np.float32(1.0)):
            with pytest.raises(ValueError):
                model(bad)
        np.testing.assert_array_equal(model(x), model(x.copy()))

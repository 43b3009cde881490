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


# ----------------------------------------------------- recordings belong to their model
def _train_twice(model, x, dy):
    for _ in range(2):
        model._forward(x)
        model._backward(dy, False)


def _programs(model):
    return [(f.program, [b.program for b in f.backward.values()])
            for f in model._replays.recordings.values()]


def test_changing_one_model_leaves_another_models_recordings_current():
    """Before, any attribute assignment on any module bumped one process-wide counter
    and every model re-recorded."""
    x, _ = _data(8)
    dy = np.ones((8, 5), np.float32)
    with fastnn.use_backend("cython"):
        a, b = _net(), _net()
        _train_twice(a, x, dy)
        _train_twice(b, x, dy)
        kept_a, kept_b = _programs(a), _programs(b)
        a[1].eps = 1e-3                      # a hyperparameter of one layer of model a
        a[3].weight = fastnn.Parameter(np.ones((16, 16), np.float32))
        _train_twice(a, x, dy)
        _train_twice(b, x, dy)
        assert _programs(b) == kept_b        # b replayed its recordings
        assert _programs(a)[0][0] is not kept_a[0][0]     # a recorded again


def test_a_shared_parameter_rebound_stales_every_model_using_it(monkeypatch):
    def scenario():
        a, b = _net(), _net()
        b[4].weight = a[4].weight            # one Parameter in two models
        x, _ = _data(4)
        res = [a(x), b(x), b(x)]
        optim.SGD(a.parameters(), lr=0.1)    # moves a's parameters into a flat buffer
        a[4].weight.data = np.full((16, 5), 0.5, np.float32)   # written in place
        return res + [b(x), b(x), b.backward(np.ones((4, 5), np.float32)),
                      b[4].weight.grad.copy()]
    planned, plain = _both(scenario, monkeypatch)
    _assert_same(planned, plain)


def test_switching_modes_back_and_forth_replays_the_recordings_of_each_mode():
    """Train steps, an eval pass, train steps again: the recordings of each mode stay
    current (a mode is part of a recording's key, and of the layers' stamps)."""
    x, _ = _data(8)
    xe, _ = _data(5)
    dy = np.ones((8, 5), np.float32)
    with fastnn.use_backend("cython"):
        model = _net()
        for _ in range(2):
            _train_twice(model, x, dy)
            model.eval()
            model._forward(xe)
            model.train()
        kept = _programs(model)
        _train_twice(model, x, dy)
        model.eval()
        model._forward(xe)
        assert _programs(model) == kept and len(kept) == 2
        model[1].train()                     # one layer's mode: not the recorded one
        model._forward(xe)
        assert _programs(model)[1][0] is not kept[1][0]


def test_a_replay_writes_no_layer_attribute():
    """The compiled replay runs op lists only: the layers keep the caches of the last
    layer-by-layer forward, and the following backward runs the layers on them."""
    x, _ = _data(8)
    dy = np.ones((8, 5), np.float32)
    with fastnn.use_backend("cython"):
        model = _net()
        _train_twice(model, x, dy)
        h = x
        for m in model:
            h = m._forward(h)
        caches = [m.__dict__["_cache"] for m in model]
        states = [dict(m.__dict__) for m in model]
        model._forward(x)                    # a replay
        assert [m.__dict__["_cache"] for m in model] == caches
        assert all(c is m.__dict__["_cache"] for c, m in zip(caches, model))
        assert [dict(m.__dict__) for m in model] == states


def test_the_op_limit_is_one_constant_of_the_compiled_module():
    from fastnn.kernels import _plan
    assert _plan.MAX_OPS == 64
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 12)
    with fastnn.use_backend("cython"):
        fits = Sequential(*[ReLU() for _ in range(_plan.MAX_OPS)])
        too_long = Sequential(*[ReLU() for _ in range(_plan.MAX_OPS + 1)])
        for model in (fits, too_long):
            np.testing.assert_array_equal(model(x), np.maximum(x, 0))
        assert len(fits._replays.recordings) == 1
        assert len(too_long._replays.recordings) == 0
        np.testing.assert_array_equal(too_long(x), np.maximum(x, 0))


def test_thread_count_changes_stale_every_recording():
    x, _ = _data(4)
    threads = fastnn.get_num_threads()
    with fastnn.use_backend("cython"):
        models = [_net(), _net()]
        for m in models:
            m(x)
        programs = [f.program for m in models for f in m._replays.recordings.values()]
        assert all(p.current() for p in programs)
        try:
            fastnn.set_num_threads(threads)
            assert not any(p.current() for p in programs)
        finally:
            fastnn.set_num_threads(threads)


def test_recordings_per_model_are_bounded_least_recently_used_first():
    from fastnn.core.workspace import SHAPES_KEPT
    with fastnn.use_backend("cython"):
        model = _net().eval()
        model(_data(32)[0])
        hot = model._replays.recordings[((32, 12), np.dtype(np.float32).num, False)]
        for n in range(1, 3 * SHAPES_KEPT):
            model(_data(n)[0])
            model(_data(32)[0])              # used between every other shape: kept
            assert len(model._replays.recordings) <= SHAPES_KEPT
        assert model._replays.recordings[((32, 12), np.dtype(np.float32).num, False)] is hot
        for m in model:
            assert all(len(arrays) <= SHAPES_KEPT for arrays in m._ws._arrays.values())


def test_a_subclass_that_changes_the_computation_is_not_replayed():
    class Doubled(Dense):
        def _forward(self, x):
            return 2 * super()._forward(x)

    class Renamed(Dense):                    # same computation: stays recordable
        pass

    assert Dense.recordable and Renamed.recordable and not Doubled.recordable
    x, _ = _data(3)
    with fastnn.use_backend("cython"):
        model = Sequential(Doubled(12, 4, rng=0), ReLU())
        plain = np.maximum(2 * (x @ model[0].weight.data), 0)
        for _ in range(3):
            np.testing.assert_allclose(model(x), plain, rtol=1e-6)
        assert "_replays" not in model.__dict__

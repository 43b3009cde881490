"""fastnn.tools.memory: the allocation counter, zero allocations per steady-state training step
on the Cython backend, and peak memory of a step against what it needs (issue 5, part 3).

Everything here counts allocations, deterministically; nothing is timed."""
import gc
import threading

import numpy as np
import pytest

import fastnn
from fastnn.tools import memory
from fastnn import optim
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, LeakyReLU, ReLU,
                           Sequential, Sigmoid, SiLU, Tanh)
from fastnn.losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy
from fastnn.train.trainer import Trainer

HAS_CYTHON = fastnn.show_config(print_=False)["cython"]
needs_counter = pytest.mark.skipif(
    not memory.available(), reason="the allocation counter (fastnn.kernels._memtrack) "
    "needs the compiled build; this is a NumPy-only install")
needs_cython = pytest.mark.skipif(
    not (HAS_CYTHON and memory.available()),
    reason="zero-allocation steps are a property of the compiled (Cython) backend, "
           "which this install lacks")


@pytest.fixture
def quiet_gc():
    """No garbage collection inside a measured block: freeing arrays counted by earlier
    tests would lower live / peak."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def _handler_name(*a):
    """Name of the current context's data-memory handler, or of array a[0]'s."""
    from numpy._core.multiarray import get_handler_name      # NumPy's own tests use it
    return get_handler_name(*a)


# ------------------------------------------------------------------ (a) the counter
@needs_counter
def test_one_array_is_one_allocation(quiet_gc):
    with memory.track_allocations() as s:
        a = np.empty(1000)
    assert (s.count, s.nbytes, s.frees, s.live, s.peak) == (1, 8000, 0, 8000, 8000)
    assert a.shape == (1000,)


@needs_counter
def test_views_reshapes_and_python_floats_allocate_nothing(quiet_gc):
    a = np.arange(1000, dtype=np.float64)
    with memory.track_allocations() as s:
        v = a[10:]
        r = a.reshape(10, 100)
        t = r.T
        f = float(a[3]) + 1.0
    assert (s.count, s.nbytes, s.peak) == (0, 0, 0)
    assert v.base is a and t.base is not None and f == 4.0


@needs_counter
def test_freed_temporary_shows_in_peak_not_in_live(quiet_gc):
    with memory.track_allocations() as s:
        t = np.empty(5000)           # 40000 bytes
        del t
        b = np.zeros(1000)           # calloc, 8000 bytes
    assert s.count == 2 and s.nbytes == 48000 and s.frees == 1
    assert s.live == 8000 and s.peak == 40000
    assert b.sum() == 0


@needs_counter
def test_scalar_operand_allocates_and_out_does_not(quiet_gc):
    """What the zero-allocation tests below rely on: ufuncs into an out= array allocate
    nothing, a Python scalar operand allocates a 0-d array for itself."""
    x = np.ones(64, np.float32)
    c = np.full((), 2.0, np.float32)
    with memory.track_allocations() as s:
        np.multiply(x, c, out=x)
    assert s.count == 0
    with memory.track_allocations() as s:
        np.multiply(x, 2.0, out=x)
    assert s.count >= 1


@needs_counter
def test_realloc_growth_counts(quiet_gc):
    with memory.track_allocations() as s:
        a = np.zeros(10)
        a.resize(1000, refcheck=False)
    assert s.count == 2 and s.nbytes == 8000 and s.live == 8000 and s.frees == 0


@needs_counter
def test_readable_inside_the_block_and_nested_blocks(quiet_gc):
    with memory.track_allocations() as outer:
        a = np.empty(100)
        assert outer.count == 1 and outer.live == 800
        with memory.track_allocations() as inner:
            big = np.empty(10000)
            del big
            assert outer.peak == 80800           # the inner block's peak is seen outside
        b = np.empty(10)
    assert (inner.count, inner.peak, inner.live) == (1, 80000, 0)
    assert (outer.count, outer.nbytes, outer.peak, outer.live) == (3, 80880, 80800, 880)
    assert a.size + b.size == 110


@needs_counter
def test_handler_is_restored_and_outlives_the_block(quiet_gc):
    before = _handler_name()
    with memory.track_allocations():
        assert _handler_name() == "fastnn_memtrack"
        a = np.ones(1000)
    assert _handler_name() == before
    assert _handler_name(a) == "fastnn_memtrack"     # NumPy frees it through our handler
    a += 1                                           # still valid memory
    with memory.track_allocations() as s:
        del a                                        # freed by the counter, after its block
    assert s.frees == 1 and s.live == -8000 and s.count == 0
    with pytest.raises(ZeroDivisionError):
        with memory.track_allocations():
            1 / 0
    assert _handler_name() == before


@needs_counter
def test_other_threads_are_not_counted_but_their_frees_are(quiet_gc):
    kept = []
    with memory.track_allocations() as s:
        kept.append(np.empty(100))
        t = threading.Thread(target=lambda: kept.append(np.empty(5000)))
        t.start()
        t.join()
        t = threading.Thread(target=lambda: kept.pop(0))    # frees the counted array
        t.start()
        t.join()
    assert s.count == 1 and s.frees == 1 and s.live == 0 and s.peak == 800
    assert _handler_name(kept[0]) != "fastnn_memtrack"


@needs_counter
def test_a_counter_is_used_once():
    stats = memory.track_allocations()
    with pytest.raises(RuntimeError, match="as `with track_allocations"):
        stats.count
    with stats:
        pass
    with pytest.raises(RuntimeError, match="already used"):
        with stats:
            pass


def test_numpy_only_install_raises_a_clear_error(monkeypatch):
    monkeypatch.setattr(memory, "_memtrack", None)
    monkeypatch.setattr(memory, "_MEMTRACK_ERROR", "No module named 'fastnn.kernels._memtrack'")
    assert not memory.available()
    for call in (memory.track_allocations,
                 lambda: memory.step_memory(lambda: None, np.zeros((2, 2)), [0, 1]),
                 memory.memory_rows):
        with pytest.raises(RuntimeError, match="needs fastnn's compiled build.*_memtrack"):
            call()


# ------------------------------------------------ (b) zero allocations per warm step
def _bn_net(widths, act=ReLU, dropout=0.0, dtype=np.float32):
    """Dense -> BatchNorm1d -> act hidden layers (optionally Dropout), as the benchmark."""
    layers = []
    for k, (i, o) in enumerate(zip(widths[:-2], widths[1:-1])):
        layers += [Dense(i, o, rng=k, dtype=dtype), BatchNorm1d(o, dtype=dtype), act()]
        if dropout:
            layers.append(Dropout(dropout, rng=k))
    return Sequential(*layers, Dense(widths[-2], widths[-1], rng=9, dtype=dtype))


def _fused_net(widths, activation="relu"):
    """The scikit-learn comparison: Dense(activation=...) hidden layers, no BN."""
    layers = [Dense(i, o, activation=activation, rng=k)
              for k, (i, o) in enumerate(zip(widths[:-2], widths[1:-1]))]
    return Sequential(*layers, Dense(widths[-2], widths[-1], rng=9))


def _batch(widths, batch, task="multiclass", dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    if task == "multiclass":
        return x, rng.integers(0, widths[-1], batch)
    if task == "binary":
        return x, (rng.random((batch, widths[-1])) < 0.5).astype(dtype)
    return x, rng.standard_normal((batch, widths[-1])).astype(dtype)


# (id, model factory, loss factory, optimizer factory, widths, batch, task, dtype)
STEP_CASES = [
    ("S-bn-relu-adam", lambda: _bn_net((64, 128, 10)), SoftmaxCrossEntropy,
     lambda p: optim.Adam(p, lr=1e-3), (64, 128, 10), 32, "multiclass", np.float32),
    ("M-bn-relu-adam", lambda: _bn_net((784, 256, 10)), SoftmaxCrossEntropy,
     lambda p: optim.Adam(p, lr=1e-3), (784, 256, 10), 64, "multiclass", np.float32),
    ("L-bn-relu-adam", lambda: _bn_net((784, 512, 512, 10)), SoftmaxCrossEntropy,
     lambda p: optim.Adam(p, lr=1e-3), (784, 512, 512, 10), 128, "multiclass", np.float32),
    ("M-sklearn-fused-relu-adam", lambda: _fused_net((784, 256, 10)), SoftmaxCrossEntropy,
     lambda p: optim.Adam(p, lr=1e-3), (784, 256, 10), 64, "multiclass", np.float32),
    ("bn-tanh-sgd-nesterov", lambda: _bn_net((64, 96, 48, 10), Tanh), SoftmaxCrossEntropy,
     lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
     (64, 96, 48, 10), 32, "multiclass", np.float32),
    ("bn-gelu-adamw", lambda: _bn_net((64, 96, 10), GELU), SoftmaxCrossEntropy,
     lambda p: optim.AdamW(p), (64, 96, 10), 32, "multiclass", np.float32),
    ("bn-sigmoid-rmsprop", lambda: _bn_net((64, 96, 10), Sigmoid), SoftmaxCrossEntropy,
     lambda p: optim.RMSprop(p, momentum=0.5), (64, 96, 10), 32, "multiclass", np.float32),
    ("bn-leaky-adagrad", lambda: _bn_net((64, 96, 10), LeakyReLU), SoftmaxCrossEntropy,
     lambda p: optim.Adagrad(p), (64, 96, 10), 32, "multiclass", np.float32),
    ("fused-elu-silu-sgd", lambda: Sequential(Dense(64, 96, activation="elu", rng=0),
                                             Dense(96, 48, rng=1), SiLU(), ELU(),
                                             Dense(48, 10, rng=2)), SoftmaxCrossEntropy,
     lambda p: optim.SGD(p, lr=0.01, momentum=0.9), (64, 96, 48, 10), 32, "multiclass",
     np.float32),
    ("hinge", lambda: _fused_net((64, 96, 10), "tanh"), MulticlassHinge,
     lambda p: optim.Adam(p), (64, 96, 10), 32, "multiclass", np.float32),
    ("bce", lambda: _fused_net((64, 96, 3)), BCEWithLogits, lambda p: optim.Adam(p),
     (64, 96, 3), 32, "binary", np.float32),
    ("mse", lambda: _fused_net((64, 96, 3)), MSE, lambda p: optim.Adam(p), (64, 96, 3), 32,
     "regression", np.float32),
    ("S-float64", lambda: _bn_net((64, 128, 10), dtype=np.float64), SoftmaxCrossEntropy,
     lambda p: optim.Adam(p), (64, 128, 10), 32, "multiclass", np.float64),
    ("bn-relu-dropout-sgd", lambda: _bn_net((64, 128, 64, 10), dropout=0.2),
     SoftmaxCrossEntropy, lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
     (64, 128, 64, 10), 32, "multiclass", np.float32),
]


def _trainer(make_model, make_loss, make_opt):
    fastnn.seed(0)
    model = make_model()
    return Trainer(model, make_loss(), make_opt(model.parameters()), verbose=0)


@needs_cython
@pytest.mark.parametrize("name, make_model, make_loss, make_opt, widths, batch, task, dtype",
                         [pytest.param(*c, id=c[0]) for c in STEP_CASES])
def test_warm_training_step_allocates_nothing(name, make_model, make_loss, make_opt, widths,
                                               batch, task, dtype):
    x, y = _batch(widths, batch, task, dtype)
    with fastnn.use_backend("cython"):
        trainer = _trainer(make_model, make_loss, make_opt)
        with memory.track_allocations() as first:
            trainer._train_step(x, y)
        trainer._train_step(x, y)
        with memory.track_allocations() as step:
            loss, _ = trainer._train_step(x, y)
    assert first.count > 0           # the counter sees this step's allocations at all
    assert np.isfinite(loss)
    assert (step.count, step.nbytes) == (0, 0), (
        "%s: a warm training step allocated %d arrays (%d bytes)"
        % (name, step.count, step.nbytes))


def _fit_allocations(trainer, X, y, n, epochs=2):
    with memory.track_allocations() as s:
        trainer.fit(X[:n], y[:n], epochs=epochs, batch_size=32, seed=0)
    return s.count


@needs_cython
def test_fit_epoch_loop_allocates_nothing_per_step():
    """A whole `Trainer.fit` (shuffling, batching, loss/accuracy bookkeeping, scheduler,
    every step): twice as many batches per epoch cost no extra allocation. The fixed
    per-fit and per-epoch work is excluded by taking the difference: preparing X / y
    and the shuffle buffers (per fit), the permutation, the rollback snapshot of the
    parameters and the end-of-epoch finite check (per epoch)."""
    widths = (64, 128, 10)
    X, y = _batch(widths, 32 * 8)
    with fastnn.use_backend("cython"):
        fastnn.seed(0)
        model = _bn_net(widths)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        trainer = Trainer(model, SoftmaxCrossEntropy(), opt, verbose=0,
                          scheduler=optim.StepLR(opt, step_size=1, gamma=0.9))
        trainer.fit(X, y, epochs=1, batch_size=32, seed=0)          # warm
        four = _fit_allocations(trainer, X, y, 32 * 4)
        eight = _fit_allocations(trainer, X, y, 32 * 8)
    assert four > 0
    assert eight == four, "%d extra allocations for 8 more steps" % (eight - four)


@needs_cython
def test_fit_with_a_ragged_last_batch_allocates_nothing_per_epoch_more():
    widths = (64, 128, 10)
    X, y = _batch(widths, 32 * 4 + 5)
    with fastnn.use_backend("cython"):
        fastnn.seed(0)
        model = _bn_net(widths)
        trainer = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()),
                          verbose=0)
        trainer.fit(X, y, epochs=1, batch_size=32, seed=0)          # warm
        even = [_fit_allocations(trainer, X, y, 32 * 4, e) for e in (1, 2)]
        ragged = [_fit_allocations(trainer, X, y, 32 * 4 + 5, e) for e in (1, 2)]
    assert ragged[1] - ragged[0] == even[1] - even[0]


# ------------------------------------------------------------ (c) peak vs need
def test_step_need_by_hand():
    """Dense(4, 3) -> ReLU -> Dense(3, 2), batch 5, float32, Adam, counted by hand."""
    model = Sequential(Dense(4, 3, rng=0), ReLU(), Dense(3, 2, rng=1))
    need = memory.step_need(model, optim.Adam(model.parameters()), (5, 4))
    params = (4 * 3 + 3 + 3 * 2 + 2) * 4
    acts = (5 * 3 + 5 * 3 + 5 * 2) * 4               # z0, relu out, z1
    grads = (5 * 3 + 5 * 3 + 5 * 2) * 4              # relu dx, dense1 dx, dlogits (no dx0)
    assert need["params"] == need["grads"] == params == 92
    assert need["optimizer_state"] == 2 * params and need["buffers"] == 0
    assert need["activations"] == acts and need["activation_grads"] == grads
    assert need["activation_grads_min"] == 2 * 5 * 3 * 4
    assert need["need"] == 4 * params + acts + grads
    assert need["output_shape"] == (5, 2)
    sgd = memory.step_need(model, optim.SGD(model.parameters(), lr=0.1), (5, 4))
    assert sgd["optimizer_state"] == 0
    mom = memory.step_need(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), (5, 4))
    assert mom["optimizer_state"] == params


def test_step_need_counts_fused_activation_bn_and_dropout():
    model = Sequential(Dense(4, 6, activation="tanh", rng=0), BatchNorm1d(6),
                       Dropout(0.5, rng=0), Dense(6, 2, rng=1))
    need = memory.step_need(model, optim.Adam(model.parameters()), (8, 4))
    f = 4
    assert need["activations"] == f * (2 * 8 * 6 + (8 * 6 + 2 * 6) + 2 * 8 * 6 + 8 * 2)
    assert need["activation_grads"] == f * (8 * 6 + 8 * 6 + 8 * 6 + 8 * 6 + 8 * 2)
    assert need["buffers"] == 2 * 6 * f


def test_step_need_rejects_bad_input():
    model = Sequential(Dense(4, 3, rng=0), Dense(3, 2, rng=1))
    opt = optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"step_need: Sequential\[0\] Dense\(in_features=4.*"
                                         r"expected input of shape \(N, 4\), got shape"):
        memory.step_need(model, opt, (5, 7))
    with pytest.raises(ValueError, match="input_shape"):
        memory.step_need(model, opt, (5,))
    with pytest.raises(TypeError, match="model must be a fastnn Module"):
        memory.step_need("net", opt, (5, 4))
    with pytest.raises(TypeError, match="optimizer"):
        memory.step_need(model, object(), (5, 4))


@needs_counter
def test_step_memory_rejects_bad_input():
    x, y = _batch((4, 3, 2), 5)

    def build():
        model = _fused_net((4, 3, 2))
        return model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="build must be a callable"):
        memory.step_memory("model", x, y)
    with pytest.raises(ValueError, match="warmup"):
        memory.step_memory(build, x, y, warmup=0)
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        memory.step_memory(build, x.astype(np.int64), y)
    with pytest.raises(ValueError, match="same number of samples"):
        memory.step_memory(build, x, y[:3])
    with pytest.raises(TypeError, match=r"build\(\) must return"):
        memory.step_memory(lambda: None, x, y)
    with pytest.raises(TypeError, match="pass x in the model's dtype"):
        memory.step_memory(build, x.astype(np.float64), y)


REFERENCE = [("S", (64, 128, 10), 32), ("M", (784, 256, 10), 64),
             ("L", (784, 512, 512, 10), 128)]


@needs_cython
@pytest.mark.parametrize("name, widths, batch", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_peak_memory_of_a_step_within_1_25x_of_need(name, widths, batch):
    (row,) = memory.memory_rows([(name, widths, batch)])
    assert row["step_allocations"] == 0
    assert row["need"] <= row["peak"] <= 1.25 * row["need"], row
    # also against the tightest accounting (only two activation gradients alive)
    assert row["ratio_min"] <= 1.25, row
    assert row["case"] == name and row["batch"] == batch


@needs_cython
def test_peak_includes_a_transient_step_buffer():
    """The measured peak is a peak, not the live bytes after the step: an optimizer
    whose step makes a temporary copy of every gradient shows it in the figure."""
    class CopyingSGD(optim.SGD):
        def step(self):
            tmp = [p.grad.copy() for p in self.params]
            super().step()
            del tmp

    widths, batch = (64, 128, 10), 32
    x, y = _batch(widths, batch)

    def build(cls):
        def make():
            model = _bn_net(widths)
            return model, SoftmaxCrossEntropy(), cls(model.parameters(), lr=0.1)
        return make

    with fastnn.use_backend("cython"):
        plain = memory.step_memory(build(optim.SGD), x, y)
        copying = memory.step_memory(build(CopyingSGD), x, y)
    assert plain["step_allocations"] == 0
    assert copying["step_allocations"] == 6
    assert copying["peak"] - plain["peak"] == plain["params"]
    assert copying["need"] == plain["need"]


@needs_cython
def test_memory_table_lists_every_row():
    rows = memory.memory_rows([("S", (64, 128, 10), 32)])
    text = memory.memory_table(rows)
    assert text.splitlines()[0].startswith("| case |") and "| S |" in text
    assert len(text.splitlines()) == 3

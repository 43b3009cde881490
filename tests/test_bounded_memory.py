"""Bounded memory whatever the input shapes (issue 12 item 2): a model keeps the
workspaces and recorded programs of its last few input shapes only, so calling it on
ever new batch sizes holds a bounded number of arrays and bytes, while the shapes of one
training run (full batches, the ragged last one, evaluation batches) are all kept and
a warm pass over them allocates nothing."""
import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.core.workspace import SHAPES_KEPT
from fastnn.layers import BatchNorm1d, Dense, ReLU, Sequential
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.tools import memory

needs_counter = pytest.mark.skipif(not memory.available(),
                                   reason="the allocation counter is compiled code")
WIDTHS = (32, 64, 10)
#: bytes one example occupies in the model's buffers: input copy, three hidden arrays,
#: the output and its fresh copy (float32)
ROW_BYTES = 4 * (32 + 3 * 64 + 2 * 10)


def _net():
    return Sequential(Dense(32, 64, rng=0), BatchNorm1d(64), ReLU(), Dense(64, 10, rng=1))


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 32)).astype(np.float32), rng.integers(0, 10, n)


def _held_arrays(model):
    """Arrays the model's workspaces hold, per module."""
    return [sum(len(a) for a in m._ws._arrays.values()) for m in model.modules()]


@needs_counter
def test_public_forward_over_many_batch_sizes_holds_bounded_memory(backend):
    """Before, every batch size kept a recorded program holding its arrays: memory grew
    with the sum of all batch sizes seen (2.2 GB for sizes 1..1000 of an MNIST MLP)."""
    model = _net().eval()
    x, _ = _data(300)
    model(x[:1])
    gc.collect()
    with memory.track_allocations() as stats:
        for n in range(1, 301):
            model(x[:n])
        gc.collect()
    bound = 3 * SHAPES_KEPT * 300 * ROW_BYTES          # a few shapes of the largest size
    assert stats.live < bound, (stats.live, bound)
    assert sum(range(1, 301)) * ROW_BYTES > 10 * bound  # what keeping every shape costs
    replays = model.__dict__.get("_replays")
    assert replays is None or len(replays.recordings) <= SHAPES_KEPT
    names = [len(m._ws._arrays) for m in model.modules()]
    assert all(h <= SHAPES_KEPT * k for h, k in zip(_held_arrays(model), names))


@needs_counter
def test_fit_and_predict_over_many_batch_sizes_hold_bounded_memory(backend):
    X, y = _data(240)
    fastnn.seed(0)
    model = _net()
    trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()),
                             verbose=0, eval_batch_size=100)
    trainer.fit(X, y, epochs=1, batch_size=7, validation_data=(X[:50], y[:50]))
    gc.collect()
    with memory.track_allocations() as stats:
        for bs in range(8, 120, 3):
            trainer.fit(X, y, epochs=1, batch_size=bs, validation_data=(X[:50], y[:50]))
            trainer.predict(X[:bs + 1])
        gc.collect()
    per_shape = 240 * (ROW_BYTES + 4 * (3 * 64 + 10))    # forward and backward arrays
    assert stats.live < 3 * SHAPES_KEPT * per_shape, stats.live
    replays = model.__dict__.get("_replays")
    assert replays is None or len(replays.recordings) <= SHAPES_KEPT


@needs_counter
@pytest.mark.skipif(not fastnn.show_config(print_=False)["cython"],
                    reason="the NumPy twins allocate their temporaries")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ragged_last_batch_and_eval_batches_allocate_nothing_after_the_first_pass(dtype):
    """One epoch's shapes: full training batches, the ragged last one, evaluation in
    eval mode at the evaluation batch size and its ragged last batch (the internal path
    the Trainer uses; the public forward returns a fresh array by contract). Before,
    modes switched every program stale and workspaces kept two shapes per name."""
    fastnn.seed(0)
    model = _net().to(dtype)
    trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(),
                                                                     lr=0.01, momentum=0.9),
                             verbose=0)
    X, y = _data(100)
    X = X.astype(dtype)
    train_batches = [(X[:32], y[:32]), (X[32:64], y[32:64]), (X[64:69], y[64:69])]
    eval_batches = [X[:40], X[40:43]]

    def one_pass():
        model.train()
        for xb, yb in train_batches:
            trainer._train_step(xb, yb)
        model.eval()
        for xb in eval_batches:
            trainer._forward(xb)
        model.train()

    with fastnn.use_backend("cython"):
        one_pass()
        with memory.track_allocations() as warm:
            one_pass()
    assert (warm.count, warm.nbytes) == (0, 0)


def test_rss_stays_bounded_over_many_batch_sizes():
    """In a fresh process, so that the figure is this workload's alone: an MNIST-sized
    eval model called on batch sizes 1..400 (before: RSS grew by about 0.45 GB)."""
    code = textwrap.dedent("""
        import resource, numpy as np, fastnn
        from fastnn.layers import Sequential, Dense, BatchNorm1d, ReLU
        model = Sequential(Dense(784, 256, rng=0), BatchNorm1d(256), ReLU(),
                           Dense(256, 10, rng=1)).eval()
        x = np.random.default_rng(0).standard_normal((400, 784)).astype(np.float32)
        for n in range(1, 21):
            model(x[:n])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for n in range(21, 401):
            model(x[:n])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    grown_mb = int(out.stdout.split()[-1])
    assert grown_mb < 60, "RSS grew by %d MB" % grown_mb

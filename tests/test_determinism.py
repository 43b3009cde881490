"""Determinism: same seed, same machine -> bit-identical results; and the OpenMP thread
count never changes a result.

* `fastnn.seed(n)` makes a whole training run reproducible: parameters (and optimizer
  state) after training a small MLP (Dense, BatchNorm1d, ReLU, Dropout) are bit-identical
  across runs, in this process and in a fresh interpreter (other addresses, other hash
  seed), for every optimizer and backend.
* The thread count never changes a Cython-backend result: forward, backward, losses and
  optimizer steps are bit-identical with `set_num_threads(1)` and `(2)` at sizes where
  two threads really split the work, both with BLAS pinned to one thread (only the
  OpenMP team changes) and end to end.
* Why end to end holds: OpenBLAS itself is repeatable for a fixed thread count but not
  across counts (here OpenBLAS 0.3.30/0.3.31 Haswell, pthreads: a (640, 300) @ (300, 256)
  float32 sgemm differs in ~9000 of 163840 elements between 1 and 2 BLAS threads, float64
  too). So the kernels' BLAS (SciPy's, behind scipy.linalg.cython_blas) must run on one
  thread while the kernels split each GEMM into fixed blocks across their OpenMP team;
  `test_kernel_blas_stays_single_threaded` guards that policy, and
  `test_set_num_threads_end_to_end` reports the BLAS evidence when it fails.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastnn
from fastnn import ops
from fastnn.layers import BatchNorm1d, Dense, Dropout, PReLU, ReLU, Sequential
from conftest import BACKENDS

from conftest import FASTNN_PATH as SRC  # noqa: E402  (the imported fastnn's path)
HERE = os.path.dirname(os.path.abspath(__file__))
HAVE_CYTHON = "cython" in BACKENDS

OPTIMIZERS = {
    "SGD": lambda p: fastnn.optim.SGD(p, lr=0.05),
    "SGD-momentum": lambda p: fastnn.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "SGD-nesterov": lambda p: fastnn.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad": lambda p: fastnn.optim.Adagrad(p, lr=0.05, weight_decay=1e-3),
    "RMSprop": lambda p: fastnn.optim.RMSprop(p, lr=0.01, momentum=0.5, weight_decay=1e-3),
    "Adam": lambda p: fastnn.optim.Adam(p, lr=0.01, weight_decay=1e-3),
    "AdamW": lambda p: fastnn.optim.AdamW(p, lr=0.01),
}


@pytest.fixture
def restore_threads():
    before = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(before)


def bits(arrays):
    """A digest of the exact bytes (distinguishes -0.0 from 0.0 and NaN payloads)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def assert_bit_identical(got, want, what):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (what, i)
        if a.tobytes() != b.tobytes():
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            pytest.fail("%s: output %d differs in %d of %d elements (max |diff| %.3g)"
                        % (what, i, int((a != b).sum()), a.size, float(np.nanmax(diff))))


# --------------------------------------------------------------- same seed, same bits
def train_mlp(opt_name, seed=0, steps=6, n=64, d=20, hidden=48, classes=5, dtype=np.float32):
    """A seeded training run; every random draw comes from fastnn's global generator."""
    fastnn.seed(seed)
    model = Sequential(Dense(d, hidden, dtype=dtype), BatchNorm1d(hidden, dtype=dtype), ReLU(),
                       Dropout(0.3), Dense(hidden, classes, dtype=dtype))
    opt = OPTIMIZERS[opt_name](model.parameters())
    crit = fastnn.SoftmaxCrossEntropy()
    data = np.random.default_rng(seed + 100)
    x = data.standard_normal((n, d)).astype(dtype)
    y = data.integers(0, classes, n)
    for _ in range(steps):
        crit(model(x), y)
        model.backward(crit.backward())
        opt.step()
        opt.zero_grad()
    state = opt.state_dict()["state"]
    opt_arrays = [v for i in sorted(state) for k, v in sorted(state[i].items())
                  if isinstance(v, np.ndarray)]
    return [p.data.copy() for p in model.parameters()] + \
        [b.copy() for _, b in model.named_buffers()] + opt_arrays


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_same_seed_gives_bit_identical_training(opt_name, backend, dtype):
    first = train_mlp(opt_name, dtype=dtype)
    second = train_mlp(opt_name, dtype=dtype)
    assert_bit_identical(second, first, "%s on %s" % (opt_name, backend))
    third = train_mlp(opt_name, seed=1, dtype=dtype)
    assert bits(third) != bits(first), "the seed has no effect"


CHILD = """
import json, sys
sys.path.insert(0, %r)
import fastnn
import test_determinism as t
fastnn.set_backend(sys.argv[1])
print(json.dumps({name: t.bits(t.train_mlp(name)) for name in sorted(t.OPTIMIZERS)}))
"""


@pytest.mark.parametrize("name", BACKENDS)
def test_same_seed_bit_identical_in_a_fresh_process(name):
    """Other heap addresses (array alignment), another hash seed: same bits."""
    here = {}
    with fastnn.use_backend(name):
        for opt_name in sorted(OPTIMIZERS):
            here[opt_name] = bits(train_mlp(opt_name))
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONHASHSEED="12345",
               FASTNN_NUM_THREADS=str(fastnn.get_num_threads()))
    r = subprocess.run([sys.executable, "-W", "error", "-c", CHILD % HERE, name],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == here


# ------------------------------------------------- thread count: fastnn's own kernels
ACTS = [("sigmoid", {}), ("tanh", {}), ("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
        ("elu", {"alpha": 0.7}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
        ("swish", {"beta": 1.5})]
N, D = 640, 300          # 192000 elements: far above PARALLEL_MIN_WORK and the kernels'
                         # block sizes, so two threads get several blocks each


def _data(dtype, seed=0, shape=(N, D), scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _kernel_results(dtype):
    """Every kernel family at a size that splits across threads."""
    x, dout = _data(dtype, 1), _data(dtype, 2, scale=1.0)
    out = []
    for name, kw in ACTS:
        y, c = ops.activation_forward(x, name, **kw)
        out += [y, ops.activation_backward(dout, c)]
    for alpha in (np.array([0.2], dtype), np.linspace(0.1, 0.3, D).astype(dtype)):
        y, c = ops.prelu_forward(x, alpha)
        out += [y] + list(ops.prelu_backward(dout, c))
    gamma, beta = _data(dtype, 3, (D,), 0.5) + 1, _data(dtype, 4, (D,), 0.5)
    rm, rv = np.zeros(D, dtype), np.ones(D, dtype)
    for training in (True, False):
        y, c = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=training)
        out += [y, rm.copy(), rv.copy()] + list(ops.batchnorm_backward(dout, c))
    labels = np.arange(N) % D
    for fn in (ops.softmax_cross_entropy, ops.multiclass_hinge):
        loss, g = fn(x, labels)
        out += [np.array(loss), g]
    t = np.random.default_rng(5).uniform(size=(N, D)).astype(dtype)
    for fn in (ops.bce_with_logits, ops.mse):
        loss, g = fn(x, t)
        out += [np.array(loss), g]
    w, b = _data(dtype, 6, (D, 256), 0.1), _data(dtype, 7, (256,))
    for act in (None, "relu", "gelu", "tanh"):
        y, c = ops.dense_forward(x, w, b, activation=act)
        out += [y] + [a for a in ops.dense_backward(_data(dtype, 8, y.shape), c) if a is not None]
    return out


def _optimizer_results(dtype):
    out = []
    for name, make in sorted(OPTIMIZERS.items()):
        p = fastnn.Parameter(_data(dtype, 9, (N, D)))
        opt = make([p])
        for k in range(3):
            p.grad = _data(dtype, 10 + k, (N, D))
            opt.step()
        out.append(p.data.copy())
    return out


def _training_results(dtype):
    fastnn.seed(3)
    model = Sequential(Dense(D, 512, activation="gelu", dtype=dtype), BatchNorm1d(512, dtype=dtype),
                       PReLU(512, dtype=dtype), Dropout(0.2), Dense(512, 64, dtype=dtype))
    opt = fastnn.optim.Adam(model.parameters(), lr=1e-3)
    crit = fastnn.SoftmaxCrossEntropy()
    x, y = _data(dtype, 11), np.arange(N) % 64
    losses = []
    for _ in range(3):
        losses.append(crit(model(x), y))
        model.backward(crit.backward())
        opt.step()
    return [np.array(losses)] + [p.data.copy() for p in model.parameters()]


def _with_threads(n, fn, dtype, pin_blas, backend="cython"):
    fastnn.set_num_threads(n)
    assert fastnn.core.backend.threads_for(N * D) == n
    with fastnn.use_backend(backend):
        if pin_blas:
            with threadpool_limits(1, user_api="blas"):
                return fn(dtype)
        return fn(dtype)


@pytest.mark.skipif(not HAVE_CYTHON, reason="needs the compiled kernels")
@pytest.mark.parametrize("fn", [_kernel_results, _optimizer_results, _training_results],
                         ids=["kernels", "optimizers", "training"])
def test_openmp_thread_count_gives_bit_identical_results(fn, dtype, restore_threads):
    """Only the OpenMP team size changes (BLAS pinned to one thread)."""
    one = _with_threads(1, fn, dtype, pin_blas=True)
    two = _with_threads(2, fn, dtype, pin_blas=True)
    assert_bit_identical(two, one, "%s, OpenMP 1 vs 2 threads" % fn.__name__)


@pytest.mark.skipif(not HAVE_CYTHON, reason="needs the compiled kernels")
@pytest.mark.parametrize("n", [1, 2])
def test_fixed_thread_count_is_repeatable(n, restore_threads):
    """BLAS included: the same thread count twice gives the same bits."""
    a = _with_threads(n, _training_results, np.float32, pin_blas=False)
    b = _with_threads(n, _training_results, np.float32, pin_blas=False)
    assert_bit_identical(b, a, "training twice with %d threads" % n)


# (m, k, n) of the products the tests above run: dense forward, dw = x^T dz, dx = dz w^T
GEMM_SHAPES = [(N, D, 256), (D, N, 256), (N, 256, D), (N, D, 512), (D, N, 512), (N, 512, D),
               (N, 512, 64), (512, N, 64), (N, 64, 512)]


def _blas_thread_sensitive(dtype):
    """The first GEMM shape the tests use that BLAS (scipy's, which the kernels call)
    rounds differently with 1 and 2 threads: (shape, differing elements, size) or None.
    Each thread count alone is checked to be repeatable."""
    from scipy.linalg import blas
    gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
    for m, k, n in GEMM_SHAPES:
        a, b = _data(dtype, 12, (m, k)), _data(dtype, 13, (k, n))
        res = []
        for t in (1, 2, 2):
            with threadpool_limits(t, user_api="blas"):
                res.append(gemm(1.0, a, b))
        assert np.array_equal(res[1], res[2]), "BLAS not repeatable at a fixed thread count"
        differing = int((res[0] != res[1]).sum())
        if differing:
            return (m, k, n), differing, res[0].size
    return None


@pytest.mark.skipif(not HAVE_CYTHON, reason="needs the compiled kernels")
@pytest.mark.parametrize("fn", [_kernel_results, _optimizer_results, _training_results],
                         ids=["kernels", "optimizers", "training"])
def test_set_num_threads_end_to_end(fn, dtype, restore_threads):
    """set_num_threads(1) vs (2) with nothing pinned: bit-identical."""
    one = _with_threads(1, fn, dtype, pin_blas=False)
    two = _with_threads(2, fn, dtype, pin_blas=False)
    if bits(one) == bits(two):
        return
    n_dense = 4 * 4 if fn is _kernel_results else 0     # the dense blocks come last
    if n_dense:   # pinpoint: are the BLAS-free kernels alone identical?
        assert_bit_identical(two[:-n_dense], one[:-n_dense], "BLAS-free kernels, 1 vs 2")
    evidence = _blas_thread_sensitive(dtype)
    if evidence is not None:
        shape, differing, size = evidence
        pytest.fail("set_num_threads changes GEMM results: the kernels' BLAS is not "
                    "single-threaded, and BLAS is not thread-count invariant (a %s %s "
                    "GEMM (m, k, n) differs in %d of %d elements between 1 and 2 BLAS "
                    "threads)" % (np.dtype(dtype).name, shape, differing, size))
    assert_bit_identical(two, one, "%s, set_num_threads 1 vs 2" % fn.__name__)


@pytest.mark.skipif(not HAVE_CYTHON, reason="needs the compiled kernels")
def test_kernel_blas_stays_single_threaded(restore_threads):
    """The policy behind the end-to-end guarantee: whatever set_num_threads says, the BLAS
    the Cython GEMMs call runs on one thread (they split the work themselves)."""
    from threadpoolctl import threadpool_info
    for n in (2, 1, 2):
        fastnn.set_num_threads(n)
        kernel_blas = [i for i in threadpool_info() if i.get("user_api") == "blas"
                       and fastnn.core.threads.is_kernel_blas(i["filepath"])]
        assert kernel_blas, "the kernels' BLAS (SciPy's) is not loaded"
        assert all(i["num_threads"] == 1 for i in kernel_blas), kernel_blas


@pytest.mark.parametrize("fn", [_kernel_results, _training_results],
                         ids=["kernels", "training"])
def test_numpy_backend_thread_counts_agree_to_tolerance(fn, restore_threads):
    """The NumPy backend's guarantee (documented, not pinned: pinning NumPy's BLAS to one
    thread would slow the reference down): bit-identical for a fixed thread count, and
    only to float tolerance between counts, since NumPy's BLAS cuts a product by its
    thread count."""
    one = _with_threads(1, fn, np.float32, pin_blas=False, backend="numpy")
    again = _with_threads(1, fn, np.float32, pin_blas=False, backend="numpy")
    two = _with_threads(2, fn, np.float32, pin_blas=False, backend="numpy")
    assert_bit_identical(again, one, "NumPy backend, 1 thread twice")
    for a, b in zip(two, one):      # absolute error relative to the array's scale
        np.testing.assert_allclose(a, b, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(np.abs(b).max())))


def test_thread_count_restored(restore_threads):
    before = fastnn.get_num_threads()
    _with_threads(2, lambda dt: None, np.float32, pin_blas=False) if HAVE_CYTHON else None
    fastnn.set_num_threads(before)
    assert fastnn.get_num_threads() == before

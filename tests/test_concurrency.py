"""Threads, fork() and errors around the native kernels.

(a) One model used from several Python threads at once (eval-mode inference) gives the
    single-threaded predictions: the public forward/backward hold a per-module lock,
    because layers reuse workspace buffers.
(b) A child made by fork() works and never hangs, whoever ran OpenMP regions in the
    parent (fastnn, or PyTorch): GNU libgomp is not fork-safe, so a forked child runs
    its kernels on one thread unless FASTNN_FORK_THREADS=1 opts in (and fastnn did not
    start its own pool). The scenarios run in fresh interpreters with timeouts.
(c) An exception raised by validation or by a kernel's Python-visible checks leaves the
    OpenMP runtime and the GIL usable: the next calls work and give the right results.
"""
import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastnn
from fastnn.core import backend as _config
from fastnn.core import threads as _threads
from fastnn import ops
from fastnn.layers import (BatchNorm1d, Dense, Dropout, Maxout, Module, ReLU, Sequential,
                           Tanh)
from conftest import BACKENDS

from conftest import FASTNN_PATH as SRC  # noqa: E402  (the imported fastnn's path)
BIG = 1 << 16      # elements: above PARALLEL_MIN_WORK, so kernels really use the threads


@pytest.fixture
def two_threads():
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    yield
    fastnn.set_num_threads(before)


def _model():
    model = Sequential(Dense(32, 256, activation="relu", rng=0), BatchNorm1d(256),
                       Dropout(0.3, rng=1), Maxout(256, 64, pieces=2, rng=2), Tanh(),
                       Dense(64, 10, rng=3))
    rng = np.random.default_rng(0)
    for _ in range(3):                  # non-trivial running statistics
        model(rng.standard_normal((16, 32)).astype(np.float32))
    return model.eval()


def _run_threads(target, n):
    errors = []

    def wrapped(k):
        try:
            target(k)
        except BaseException as exc:    # noqa: B902 - reported to the test thread
            errors.append(exc)
    threads = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ (a) threads
@pytest.mark.parametrize("name", BACKENDS)
def test_shared_model_inference_from_threads(name, two_threads):
    """Batches of different sizes (workspace reallocation) from 4 threads at once."""
    model = _model()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((n, 32)).astype(np.float32) for n in (1, 3, 8, 17, 64, 5, 33, 300)]
    with fastnn.use_backend(name):
        ref = [model(x) for x in xs]
    bad = []

    def work(k):
        with fastnn.use_backend(name):          # the backend choice is per thread
            for r in range(60):
                i = (r * (k + 1) + k) % len(xs)
                y = model(xs[i])
                if y.shape != ref[i].shape or not np.allclose(y, ref[i], rtol=1e-5, atol=1e-6):
                    bad.append((k, r, i))
    _run_threads(work, 4)
    assert not bad, "threads got wrong predictions (thread, round, batch): %s" % bad[:5]


def test_shared_model_forward_backward_from_threads(backend):
    """Training-mode forward+backward pairs from several threads on one model are
    serialised call by call: each backward returns a correctly shaped gradient and nothing
    crashes (which forward a backward pairs with is up to the caller)."""
    model = Sequential(Dense(16, 64, activation="tanh", rng=0), BatchNorm1d(64), ReLU(),
                       Dense(64, 4, rng=1))
    shapes = [(n, 16) for n in (2, 7, 31)]

    def work(k):
        with fastnn.use_backend(backend):
            rng = np.random.default_rng(k)
            for r in range(40):
                x = rng.standard_normal(shapes[(k + r) % 3]).astype(np.float32)
                y = model(x)
                assert y.shape == (x.shape[0], 4)
                try:
                    dx = model.backward(np.ones_like(y))
                except ValueError as exc:     # another thread's forward came in between
                    assert "dout must have the shape" in str(exc)
                    continue
                assert dx.shape[1] == 16 and np.isfinite(dx).all()
    _run_threads(work, 3)


def test_separate_models_and_functional_ops_in_threads(backend, two_threads):
    """Different models (and the functional API, which allocates fresh outputs) share no
    state: concurrent training steps equal the sequential ones exactly."""
    def step(seed):
        model = Sequential(Dense(64, 256, activation="gelu", rng=seed), BatchNorm1d(256),
                           Dense(256, 8, rng=seed + 1))
        opt = fastnn.optim.Adam(model.parameters(), lr=1e-2)
        x = np.random.default_rng(seed).standard_normal((128, 64)).astype(np.float32)
        crit = fastnn.SoftmaxCrossEntropy()
        for _ in range(3):
            crit(model(x), np.arange(128) % 8)
            model.backward(crit.backward())
            opt.step()
        out, cache = ops.dense_forward(x, model[0].weight.data, None, activation="tanh")
        return [p.data.copy() for p in model.parameters()] + [out]

    with fastnn.use_backend(backend):
        expected = [step(s) for s in range(4)]
    got = [None] * 4

    def work(k):
        with fastnn.use_backend(backend):
            got[k] = step(k)
    _run_threads(work, 4)
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_lock_is_not_copied_or_pickled():
    model = _model()
    x = np.ones((2, 32), np.float32)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone._lock is not model._lock
        np.testing.assert_array_equal(clone(x), model(x))


def test_nested_public_calls_do_not_deadlock():
    """A user module whose forward calls its children's public forward (and itself
    through a container) takes each lock once per object; re-entry is allowed."""
    class Wrapper(Module):
        def __init__(self):
            super().__init__()
            self.inner = Sequential(Dense(3, 2, rng=0), ReLU())

        def forward(self, x):
            return self.inner(x)

        def backward(self, dy):
            return self.inner.backward(dy)

    outer = Sequential(Wrapper(), Dense(2, 2, rng=1))
    y = outer(np.ones((4, 3), np.float32))
    dx = outer.backward(np.ones_like(y))
    assert dx.shape == (4, 3)

    # re-entrant: the same module's public forward inside its own locked call
    class Reenter(Module):
        def _forward(self, x):
            return x

        def _backward(self, dy, need_dx=True):
            return dy
    r = Reenter()
    with r._lock:
        assert r(np.ones((1, 2), np.float32)).shape == (1, 2)

    def other_thread():
        assert r(np.ones((1, 2), np.float32)).shape == (1, 2)
    _run_threads(lambda k: other_thread(), 2)


# ----------------------------------------------------------------------- (b) fork
FORK_SCRIPT = textwrap.dedent(r"""
    import json, multiprocessing as mp, sys, time
    import numpy as np
    import fastnn
    from fastnn import ops
    from fastnn.core import backend as _config
    from fastnn.layers import BatchNorm1d, Dense, Sequential

    fastnn.set_backend(sys.argv[1])
    fastnn.set_num_threads(2)
    BIG = 1 << 16

    def workload():
        model = Sequential(Dense(256, 300, activation="gelu", rng=0), BatchNorm1d(300),
                           Dense(300, 10, rng=1))
        opt = fastnn.optim.Adam(model.parameters(), lr=1e-3)
        x = np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32)
        crit = fastnn.SoftmaxCrossEntropy()
        loss = crit(model(x), np.arange(400) % 10)
        model.backward(crit.backward())
        opt.step()
        y, _ = ops.activation_forward(x, "tanh")
        return loss, [p.data.copy() for p in model.parameters()] + [y]

    def child(conn):
        try:
            loss, arrays = workload()
            conn.send(("ok", _config.threads_for(BIG), loss, arrays))
        except BaseException as exc:
            conn.send(("error", repr(exc), None, None))

    def run_child():
        ctx = mp.get_context("fork")
        a, b = ctx.Pipe()
        p = ctx.Process(target=child, args=(b,))
        t0 = time.time()
        p.start()
        b.close()
        # read before joining: the child blocks in send() until its data is read
        if not a.poll(60):
            p.kill()
            p.join()
            return {"status": "hung" if p.exitcode == -9 else "died",
                    "seconds": time.time() - t0, "exitcode": p.exitcode}
        try:
            status, threads, loss, arrays = a.recv()
        except EOFError:
            p.join()
            return {"status": "died", "exitcode": p.exitcode}
        p.join(60)
        return {"status": status, "threads": threads, "loss": loss, "arrays": arrays,
                "exitcode": p.exitcode}

    result = {}
    # 1. forked before any multi-threaded fastnn kernel ran
    before = run_child()
    # 2. the parent runs the OpenMP kernels on 2 threads, then forks again
    loss, arrays = workload()
    after = run_child()
    result["parent_threads"] = _config.threads_for(BIG)
    for key, r in (("before", before), ("after", after)):
        arrs = r.pop("arrays", None)
        if r["status"] == "ok":
            r["max_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(arrs, arrays))
            r["loss_diff"] = abs(r["loss"] - loss)
        result[key] = r
    print("RESULT " + json.dumps(result))
""")


def _run_fork_script(name, opt_in):
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("FASTNN_FORK_THREADS", None)
    if opt_in:
        env["FASTNN_FORK_THREADS"] = "1"
    try:
        proc = subprocess.run([sys.executable, "-W", "error", "-c", FORK_SCRIPT, name],
                              capture_output=True, text=True, env=env, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the fork scenario hung")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[7:])
    for key in ("before", "after"):
        r = res[key]
        assert r["status"] == "ok", (key, r)
        assert r["exitcode"] == 0
        # same computation; the child may use another thread count for BLAS / OpenMP
        assert r["max_diff"] <= 1e-4 and r["loss_diff"] <= 1e-5, (key, r)
    assert res["parent_threads"] == 2
    return res


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("name", BACKENDS)
def test_fork_children_run_on_one_thread(name):
    res = _run_fork_script(name, opt_in=False)
    assert res["before"]["threads"] == 1      # another library may have used OpenMP
    assert res["after"]["threads"] == 1       # fastnn's own pool inherited broken


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_opt_in_keeps_threads_until_fastnn_started_its_pool():
    res = _run_fork_script("cython", opt_in=True)
    assert res["before"]["threads"] == 2      # opted in, no pool of fastnn's yet
    assert res["after"]["threads"] == 1       # fastnn's own pool: one thread regardless


TORCH_FORK_SCRIPT = textwrap.dedent(r"""
    import multiprocessing as mp, numpy as np, torch, fastnn
    def child(): fastnn.Dense(512, 1024, rng=0)(np.ones((512, 512), np.float32))
    if __name__ == "__main__":
        a = torch.randn(1000, 1000); (a @ a).sum()
        p = mp.get_context("fork").Process(target=child); p.start(); p.join(60)
        print("child hung" if p.is_alive() else "exit %s" % p.exitcode); p.kill()
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_another_openmp_user_does_not_hang(tmp_path):
    """The issue's reproducer: PyTorch runs an OpenMP region (fastnn none), then a forked
    child runs a large fastnn kernel; before the fix it waited forever in GOMP_parallel."""
    pytest.importorskip("torch")
    script = tmp_path / "repro.py"          # a file: the "fork" child needs __main__
    script.write_text(TORCH_FORK_SCRIPT)
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("FASTNN_FORK_THREADS", None)
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the fork scenario hung")
    assert proc.stdout.strip() == "exit 0", (proc.stdout, proc.stderr[-2000:])


@pytest.fixture
def thread_state():
    """Save and restore the module state the fork rule works on."""
    names = ("_requested", "_team", "_pool_started", "_forked_child", "_parent_threads")
    saved = {k: getattr(_threads, k) for k in names}
    verified = _threads._verified.team
    yield
    for k, v in saved.items():
        setattr(_threads, k, v)
    _threads._verified.team = verified


@pytest.mark.parametrize("parent_threads,opt_in,pool,want", [
    (1, False, False, 2),      # a one-thread parent has no OpenMP pool
    (3, False, False, 1),      # any other parent may have one: one thread
    (3, True, False, 2),       # unless the user opts in ...
    (3, True, True, 1),        # ... and fastnn itself did not start its pool
])
def test_fork_rule(parent_threads, opt_in, pool, want, thread_state, monkeypatch):
    """The rule itself, in-process; set_num_threads cannot lift it in the child."""
    monkeypatch.setenv("FASTNN_FORK_THREADS", "1" if opt_in else "0")
    _threads._forked_child = False
    fastnn.set_num_threads(2)
    _threads._parent_threads, _threads._pool_started = parent_threads, pool
    _threads._after_fork_in_child()
    assert _threads.threads_for(BIG) == want and fastnn.get_num_threads() == want
    assert _threads.threads_for(10) == 1
    fastnn.set_num_threads(2)
    assert _threads.threads_for(BIG) == want


# ------------------------------------------------------------ (c) errors and state
def _big_ops_result():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((256, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    out, cache = ops.dense_forward(x, w, None, activation="gelu")
    dx, dw, db = ops.dense_backward(np.ones_like(out), cache)
    loss, g = ops.softmax_cross_entropy(out, np.arange(256) % 256)
    bn, bcache = ops.batchnorm_forward(x, np.ones(256, np.float32),
                                       np.zeros(256, np.float32), None, None)
    return [out, dx, dw, g, bn, np.array(loss)]


def _bad_calls():
    """Calls that fail in validation, in a Cython wrapper, or midway through a model."""
    from fastnn.kernels import ref
    x = np.ones((256, 256), np.float32)
    calls = [
        lambda: ops.dense_forward(x, np.ones((3, 3), np.float32), None),
        lambda: ops.activation_forward(x.astype(np.int32), "relu"),
        lambda: ops.softmax_cross_entropy(x, np.full(256, 999)),
        lambda: ops.batchnorm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32),
                                      None, None),
        lambda: fastnn.optim.SGD([fastnn.Parameter(np.zeros(3))], lr=0.1).step(),
        lambda: _config.backend().act_forward(x, x, 999, 0.0, 2),     # bad code in a kernel
        lambda: ref.act_forward(x, x, 999, 0.0, 2),
    ]
    if "cython" in BACKENDS:
        from fastnn.kernels import _activations, _losses
        calls += [
            # wrong buffer dtype / layout straight into the compiled wrappers
            lambda: _activations.act_forward(x, x.astype(np.float64), 2, 0.0, 2),
            lambda: _losses.mse(x, x[:, ::2], np.empty_like(x), 2),
            lambda: _losses.softmax_cross_entropy(x, np.zeros(256, np.int32),
                                                  np.empty_like(x), 2),
        ]
    return calls


def test_errors_leave_openmp_and_gil_usable(backend, two_threads):
    ref = _big_ops_result()
    ticks = []
    stop = threading.Event()

    def ticker():        # proves the GIL is released and re-acquired normally
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)
    t = threading.Thread(target=ticker)
    t.start()
    try:
        for rnd in range(3):
            for bad in _bad_calls():
                with pytest.raises((ValueError, TypeError, RuntimeError)):
                    bad()
                res = _big_ops_result()
                for a, b in zip(res, ref):
                    np.testing.assert_array_equal(a, b)
    finally:
        stop.set()
        t.join(10)
    assert len(ticks) > 5, "a background Python thread could not run"


def test_error_midway_through_a_model_leaves_it_usable(backend, two_threads):
    class Fails(Module):
        armed = False

        def _forward(self, x):
            if self.armed:
                raise RuntimeError("Fails: armed")
            return x

        def _backward(self, dy, need_dx=True):
            if self.armed:
                raise RuntimeError("Fails: armed")
            return dy

    f = Fails()
    model = Sequential(Dense(256, 256, activation="relu", rng=0), BatchNorm1d(256), f,
                       Dense(256, 8, rng=1))
    x = np.random.default_rng(0).standard_normal((300, 256)).astype(np.float32)
    state = model.state_dict()
    y = model(x)
    dx = model.backward(np.ones_like(y))
    model.load_state_dict(state)
    f.armed = True
    with pytest.raises(RuntimeError, match="armed"):
        model(x)
    f.armed = False
    model.load_state_dict(state)                 # BN stats moved during the failed forward
    np.testing.assert_array_equal(model(x), y)
    f.armed = True
    with pytest.raises(RuntimeError, match="armed"):
        model.backward(np.ones_like(y))
    f.armed = False
    np.testing.assert_array_equal(model.backward(np.ones_like(y)), dx)
    # and the lock was released by the failing calls: another thread can use the model
    out = []
    _run_threads(lambda k: out.append(model(x[:5])), 2)
    assert len(out) == 2


def test_errors_raised_in_threads_do_not_poison_other_threads(backend, two_threads):
    ref = _big_ops_result()

    def work(k):
        with fastnn.use_backend(backend):
            for i in range(10):
                if (i + k) % 2:
                    with pytest.raises((ValueError, TypeError)):
                        ops.activation_forward(np.ones((4, 4), np.int64), "relu")
                else:
                    for a, b in zip(_big_ops_result(), ref):
                        np.testing.assert_array_equal(a, b)
    _run_threads(work, 3)

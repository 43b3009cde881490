"""`python -m fastnn bench`: fastnn-cython, fastnn-numpy, PyTorch and scikit-learn side
by side on the same work, against the machine's floor.

Measured side by side, literally: `compare` runs the contenders of a case in rounds,
each round timing a batch of calls of every contender in turn (rotating the order, a
pause after each), and every ratio is the median of the per-round ratios (`paired`). A
shared, noisy machine then slows the contenders of a round alike, so the ratios hold
even where absolute times do not.

Checked against a plain loop: after its rounds, every contender is also timed alone
(`standalone`: the minimum of a few back-to-back repetitions, in the process it runs
in), and a contender whose interleaved time differs from that by more than
`AGREEMENT` is reported, with the load average, as a warning row.

PyTorch is built and timed in a child process that never imports fastnn
(`torch_peer`, through `Remote`). The floor of a training step (`step_floor`) is its
GEMM FLOPs at the best single-thread sgemm rate of the BLAS libraries present times
the threads, plus its Adam update's bytes at copy bandwidth.

Extra case families (e.g. convolutional networks) plug into `run(families=...)`: a
family is a callable taking the `Session` and yielding (row, contenders) pairs.
"""
import contextlib
import json
import os
import sys
import time

import numpy as np

from ..core.machine import cpu_name
from .reference_nets import CASES, data, fastnn_model, gemm_flops, param_count  # noqa: F401

#: the targets of the performance issue: (case, measure, bound, "min" | "max"); with the
#: compiled build, each case's memory adds "step allocations" <= 0 and "peak / need" <= 1.25
TARGETS = [("S", "vs torch", 5.0, "min"), ("M", "vs torch", 2.0, "min"),
           ("L", "vs torch", 1.5, "min"), ("XL", "vs torch", 1.15, "min"),
           ("S", "vs numpy", 2.0, "min"), ("M", "vs numpy", 2.0, "min"),
           ("L", "vs numpy", 1.4, "min"),
           ("L", "step / floor", 1.15, "max"), ("XL", "step / floor", 1.15, "max"),
           ("M infer b=1", "vs torch", 5.0, "min"),
           ("M epoch (no BN)", "vs sklearn", 2.0, "min"),
           ("lenet", "vs torch", 3.0, "min"), ("lenet", "vs numpy", 3.0, "min"),
           ("resblock", "vs torch", 1.3, "min"), ("resblock", "step / GEMMs", 1.3, "max")]
#: the estimator fits against scikit-learn's (dataset, epochs per fit), each in float32
#: and float64: fastnn.sklearn's MLPClassifier.fit at least 3x scikit-learn's
SKLEARN_FITS = [("digits", 10), ("synthetic", 1)]
TARGETS += [("fit %s %s" % (d, t), "vs sklearn", 3.0, "min")
            for d, _ in SKLEARN_FITS for t in ("float32", "float64")]

ROUNDS, QUICK_ROUNDS = 21, 4
SAMPLE = 0.05    # seconds of back-to-back calls per contender per round
#: seconds between samples: thread pools spin-wait after work (OpenBLAS ~0.1 s, libgomp
#: less) and steal a core from whatever runs next; measured here, a 2-thread fastnn step
#: ran 1.3-1.6x slower within 50 ms of a BLAS-threaded GEMM, and at full speed after 0.2 s
PAUSE = 0.2
#: a contender's interleaved median and its standalone time agree when within this
#: fraction of each other
AGREEMENT = 0.10
STANDALONE_REPS = 5
#: the contenders checked against a standalone loop (the references are floors, not peers)
PEERS = ("fastnn-cython", "fastnn-numpy", "torch", "sklearn")
#: bytes an Adam step streams per parameter: reads p, g, m, v and writes p, m, v (float32)
ADAM_BYTES = 7 * 4


def median_time(fn, budget, min_repeats=5, max_repeats=10000):
    """Median seconds per call of fn() over ~budget seconds, after two warm-up calls."""
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats
                                        or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _unpack(contender):
    """(timed, context) of a contender given as fn or (fn, context)."""
    fn, ctx = contender if isinstance(contender, tuple) else (contender, None)
    return _timer(fn), ctx or contextlib.nullcontext


def compare(contenders, budget, rounds=ROUNDS):
    """Seconds per call of each contender, measured round-robin: {name: [one per round]}.

    contenders: {name: fn} or {name: (fn, context)}, where context() returns a context
    manager held while fn runs (a backend, a BLAS thread limit; entered outside the
    timings); fn may be a `RemoteFn` (timed in a child process). Each contender gets
    ~budget seconds in `rounds` samples; a sample times as many back-to-back calls as
    fill budget / rounds (at least one), after two warm-up calls, and each sample first
    makes as many calls untimed (after the PAUSE, the first ~50 ms of calls ran up to 1.5x
    slower than a plain loop, every contender alike: caches and clocks come back to
    speed only under work). Within a round the
    contenders run one after the other (the order rotates from round to round), so a
    ratio of two contenders is best taken round by round (`paired`)."""
    items = [(name,) + _unpack(c) for name, c in contenders.items()]
    calls = {}
    for name, timed, ctx in items:
        with ctx():
            timed(2)
            one = timed(1)
        calls[name] = max(1, int(budget / rounds / max(one, 1e-7)))
    samples = {name: [] for name, _, _ in items}
    for r in range(rounds):
        for name, timed, ctx in items[r % len(items):] + items[:r % len(items)]:
            k = calls[name]
            with ctx():
                timed(k)           # untimed: back to speed after the pause
                samples[name].append(timed(k) / k)
            time.sleep(PAUSE)
    return samples


def standalone(contender, sample=SAMPLE, reps=STANDALONE_REPS):
    """Seconds per call of a contender (as in `compare`) timed alone, the way a plain
    script would: after a warm-up, the minimum over `reps` back-to-back repetitions of m
    calls (m fills ~sample seconds), in the process the contender lives in."""
    timed, ctx = _unpack(contender)
    with ctx():
        timed(2)
        m = max(1, int(sample / max(timed(1), 1e-7)))
        return min(timed(m) / m for _ in range(reps))


def agreement(row, tolerance=AGREEMENT):
    """The standalone check of a measured case row: [{contender, interleaved,
    standalone, ratio, ok}] for every contender with a standalone time; ratio is the
    interleaved median over the standalone time, ok when within 1 +- tolerance."""
    out = []
    for name, alone in row.get("standalone", {}).items():
        ratio = row[name] / alone
        out.append({"contender": name, "interleaved": row[name], "standalone": alone,
                    "ratio": ratio, "ok": abs(ratio - 1) <= tolerance})
    return out


class Remote:
    """A child process (`torch_peer`) that builds contenders and times their calls
    there. PyTorch runs this way, in a process that never imports fastnn, so that the
    two engines share no runtime (in one process torch would run on fastnn's OpenMP
    library, see `torch_peer`). One child serves a whole run (importing torch takes
    seconds)."""

    def __init__(self):
        import subprocess
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")
        self.proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.count = 0

    def contender(self, factory, *args):
        """A `RemoteFn` for factory(*args), built in the child: factory names a function
        of `torch_peer` (or "module:name", see there) ending in "_fn"."""
        if not factory.endswith("_fn"):
            raise ValueError("fastnn.tools.bench.Remote: not a contender factory: %r" % factory)
        reply = self._ask(json.dumps([factory, list(args)]))
        if reply != "ready":
            raise RuntimeError("fastnn.tools.bench.Remote(%s): the child process failed: %s"
                               % (factory, reply))
        self.count += 1
        return RemoteFn(self, self.count - 1)

    def info(self):
        """The child's runtime: `torch_peer.runtime_info` (torch's threads, its OpenMP
        library, whether fastnn was loaded there)."""
        return json.loads(self._ask("info"))

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip() or "(no reply)"

    def close(self):
        if not self.proc.stdin.closed:
            self.proc.stdin.close()          # the child's loop ends; it exits
        self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class RemoteFn:
    """A contender living in a `Remote` child: timed(calls) -> seconds, timed there."""

    def __init__(self, remote, index):
        self.remote, self.index = remote, index

    def timed(self, calls):
        return float(self.remote._ask("%d %d" % (self.index, calls)))


def _timer(fn):
    """calls -> seconds for a local callable or a `RemoteFn`."""
    if isinstance(fn, RemoteFn):
        return fn.timed

    def timed(calls):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0
    return timed


def paired(samples, num, den, q=50):
    """Percentile q (default: the median) over rounds of samples[num] / sum of samples[d]
    for d in den (a name or a tuple of names): the ratio of times measured side by side,
    round by round."""
    den = (den,) if isinstance(den, str) else den
    return float(np.percentile([n / sum(d) for n, *d in zip(samples[num],
                                                             *(samples[k] for k in den))],
                               q))


# ---------------------------------------------------------------- machine limits

def _all_threads(threads):
    """BLAS limited to `threads` (fastnn keeps the kernels' BLAS single-threaded and splits
    GEMMs itself; the references below use BLAS's own threading instead)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=threads, user_api="blas")


def sgemm_fn(n=1024):
    """A callable multiplying two n x n float32 matrices with the BLAS the kernels use
    (scipy's), into a preallocated output; the caller chooses its threading."""
    from scipy.linalg.blas import sgemm
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    return lambda: sgemm(1.0, a, a, c=c, overwrite_c=1)


def sgemm_rates(remote=None, n=1024):
    """Single-thread float32 GEMM rate (GFLOP/s, n x n x n, best of `STANDALONE_REPS`) of
    every BLAS library at hand: the kernels' candidates (`fastnn.kernels.blas_select`:
    OpenBLAS, and MKL when installed) and torch's (MKL inside its PyPI wheels, measured
    in the `Remote` child when there is one)."""
    flops = 2 * n ** 3 / 1e9
    try:
        from ..kernels import blas_select
    except ImportError:                              # a NumPy-only install: SciPy's BLAS
        rates = {"openblas": flops / standalone((sgemm_fn(n), lambda: _all_threads(1)))}
    else:
        rates = {lib: flops / blas_select.seconds(lib, [(n, n, n)], STANDALONE_REPS)[0]
                 for lib in blas_select.available()}
    if remote is not None:
        rates["torch"] = flops / standalone(remote.contender("torch_sgemm_fn", n))
    return rates


def copy_bandwidth(budget):
    """Memory bandwidth of a large NumPy copy, GB/s counting read + write."""
    x = np.ones(16 << 20, np.float32)
    y = np.empty_like(x)
    t = median_time(lambda: np.copyto(y, x), budget)
    return 2 * x.nbytes / t / 1e9


def step_floor(widths, batch, sgemm_gflops, threads, copy_gbps):
    """Seconds a training step of the reference network cannot beat on this machine:
    its GEMM FLOPs at `sgemm_gflops` (the best single-thread rate) times `threads`, plus
    its Adam update's bytes (`ADAM_BYTES` per parameter) at `copy_gbps`."""
    return (gemm_flops(widths, batch) / (sgemm_gflops * 1e9 * threads)
            + ADAM_BYTES * param_count(widths) / (copy_gbps * 1e9))


def gemm_only_fn(widths, batch, first_dx=False):
    """A callable running a training step's GEMMs alone (forward x@W; backward dW and dx,
    no dx for the first layer unless first_dx) into preallocated outputs, with the BLAS
    the kernels use (scipy's); the caller chooses its threading (`_all_threads`)."""
    from scipy.linalg.blas import sgemm
    rng = np.random.default_rng(0)
    calls = []
    for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        x = rng.standard_normal((batch, i), np.float32)
        w = rng.standard_normal((i, o), np.float32)
        dz = rng.standard_normal((batch, o), np.float32)
        z, dw, dx = (np.empty((batch, o), np.float32), np.empty((i, o), np.float32),
                     np.empty((batch, i), np.float32))
        # row-major C = A @ B is column-major C.T = B.T @ A.T: transposed views, no copies
        calls.append((w.T, x.T, z.T, 0, 0))
        calls.append((dz.T, x.T, dw.T, 0, 1))
        if k or first_dx:
            calls.append((w.T, dz.T, dx.T, 1, 0))

    def run():
        for a, b, c, ta, tb in calls:
            sgemm(1.0, a, b, c=c, overwrite_c=1, trans_a=ta, trans_b=tb)
    return run


def gemv_only_fn(widths):
    """A callable running a batch-1 forward's matrix-vector products alone (z = W^T x
    per layer, BLAS sgemv; the caller chooses its threading): streaming the weights once
    is the floor of batch-1 inference."""
    from scipy.linalg.blas import sgemv
    rng = np.random.default_rng(0)
    calls = []
    for i, o in zip(widths[:-1], widths[1:]):
        w = rng.standard_normal((i, o), np.float32)
        calls.append((w.T, rng.standard_normal(i, np.float32), np.empty(o, np.float32)))

    def run():
        for a, x, y in calls:
            sgemv(1.0, a, x, y=y, overwrite_y=1)
    return run


def adam_only_fn(widths):
    """A callable running the step's Adam update alone (all parameters, one fused kernel
    call): with the GEMMs, the floor a step cannot beat (it streams 7 arrays of the
    parameter count)."""
    import fastnn
    from ..core.backend import backend, threads_for
    n = param_count(widths)
    # filled arrays: never-written np.zeros pages all map to one zero page, whose reads
    # would cost nothing
    rng = np.random.default_rng(0)
    p, g, m = (rng.standard_normal(n, np.float32) * 1e-3 for _ in range(3))
    v = np.full(n, 1e-6, np.float32)
    with fastnn.use_backend("cython"):
        k = backend()
    nt = threads_for(n)
    return lambda: k.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False, nt)


# ---------------------------------------------------------------- contenders

def fastnn_step_fn(widths, batch, backend):
    """A callable making one training step (forward, loss, backward, Adam) of the
    reference network; run it with `backend` active (fastnn.use_backend)."""
    import fastnn
    x, y = data(widths, batch)
    with fastnn.use_backend(backend):
        model = fastnn_model(widths)
        trainer = fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
                                 fastnn.optim.Adam(model.parameters(), lr=1e-3), verbose=0)
    return trainer.stepper(x, y)


def fastnn_infer_fn(widths):
    """A callable running the eval-mode public forward at batch 1."""
    x, _ = data(widths, 1)
    model = fastnn_model(widths).eval()
    return lambda: model(x)


def sklearn_epoch_fn(widths, batch, n_batches):
    from sklearn.neural_network import MLPClassifier
    x, y = data(widths, batch, n_batches)
    clf = MLPClassifier(hidden_layer_sizes=widths[1:-1], solver="adam", batch_size=batch,
                        learning_rate_init=1e-3, shuffle=False, alpha=0.0, random_state=0)
    classes = np.arange(widths[-1])
    clf.partial_fit(x, y, classes=classes)
    return lambda: clf.partial_fit(x, y)


def sklearn_fit(library, dataset, epochs, dtype=np.float64):
    """A call fitting a fresh MLPClassifier of `library` ("fastnn": fastnn.sklearn's,
    "sklearn": scikit-learn's) with scikit-learn's default hyperparameters for exactly
    `epochs` epochs (tol=0: no early stop) on `dataset`: "digits" (1797 x 64, scaled to
    [0, 1]) or "synthetic" (make_classification, 100,000 x 64, 10 classes), as `dtype`.
    The call returns the fitted estimator (its `score` on the training data is the
    accuracy the comparison reports)."""
    import warnings
    from sklearn.datasets import load_digits, make_classification
    if library == "fastnn":
        from fastnn.sklearn import MLPClassifier
    else:
        from sklearn.neural_network import MLPClassifier
    if dataset == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        X, y = make_classification(100_000, 64, n_informative=32, n_classes=10,
                                   random_state=0)
    X = X.astype(dtype)

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # ConvergenceWarning: epochs are fixed
            return MLPClassifier(max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
                                 random_state=0).fit(X, y)
    fit.data = (X, y)
    return fit


def fastnn_epoch_fn(widths, batch, n_batches):
    """fastnn on the scikit-learn comparison: same architecture without BN, Adam."""
    import fastnn
    x, y = data(widths, batch, n_batches)
    layers = [fastnn.Dense(i, o, activation="relu", rng=0)
              for i, o in zip(widths[:-2], widths[1:-1])]
    model = fastnn.Sequential(*layers, fastnn.Dense(widths[-2], widths[-1], rng=0))
    trainer = fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
                             fastnn.optim.Adam(model.parameters(), lr=1e-3), verbose=0)
    steps = [trainer.stepper(x[k * batch:(k + 1) * batch], y[k * batch:(k + 1) * batch])
             for k in range(n_batches)]

    def epoch():
        for step in steps:
            step()
    return epoch


# ---------------------------------------------------------------- driver

def _available(module):
    """Whether a module is installed (without importing it here: torch runs in its own
    process, see `Remote`)."""
    import importlib.util
    return importlib.util.find_spec(module) is not None


class Session:
    """What a case family needs to build its contenders: the run's settings (`quick`,
    `threads`, `backends` of fastnn to run, `remote`: the torch `Remote` or None), the
    machine's limits (`sgemm_gflops`: the best single-thread rate, `copy_gbps`), a
    `log` and helpers for contexts."""

    def __init__(self, quick, threads, backends, remote, log, sgemm_gflops, copy_gbps):
        self.quick, self.threads, self.backends, self.remote = quick, threads, backends, remote
        self.log, self.sgemm_gflops, self.copy_gbps = log, sgemm_gflops, copy_gbps

    def on(self, backend):
        """A context factory running fastnn on `backend`."""
        import fastnn
        return lambda: fastnn.use_backend(backend)

    def blas(self):
        """A context factory giving BLAS's own threading the run's threads."""
        return lambda: _all_threads(self.threads)


def training_steps(s):
    """The reference training steps (`CASES`): fastnn on each backend, torch, the step's
    GEMMs alone and its Adam update alone; rows carry the step's floor."""
    for name, widths, batch in CASES:
        s.log("training step %s %s batch %d ..." % (name, "-".join(map(str, widths)), batch))
        contenders = {"fastnn-" + b: (fastnn_step_fn(widths, batch, b), s.on(b))
                      for b in s.backends}
        if s.remote is not None:
            contenders["torch"] = s.remote.contender("torch_step_fn", widths, batch,
                                                     s.threads)
        contenders["gemm-only"] = (gemm_only_fn(widths, batch), s.blas())
        if "cython" in s.backends:
            contenders["adam-only"] = adam_only_fn(widths)
        yield ({"case": name, "kind": "train step", "widths": widths, "batch": batch,
                "gemm_gflop": gemm_flops(widths, batch) / 1e9,
                "floor": step_floor(widths, batch, s.sgemm_gflops, s.threads, s.copy_gbps)},
               contenders)


def batch1_inference(s):
    """Eval-mode inference of case M at batch 1 against torch and the GEMV floor."""
    name, widths, _ = CASES[1]
    s.log("inference %s batch 1 ..." % name)
    contenders = {"fastnn-" + b: (fastnn_infer_fn(widths), s.on(b)) for b in s.backends}
    if s.remote is not None:
        contenders["torch"] = s.remote.contender("torch_infer_fn", widths, s.threads)
    contenders["gemm-only"] = (gemv_only_fn(widths), s.blas())
    yield ({"case": name + " infer b=1", "kind": "inference", "widths": widths, "batch": 1,
            "gemm_gflop": 2 * sum(i * o for i, o in zip(widths[:-1], widths[1:])) / 1e9},
           contenders)


def sklearn_epochs(s):
    """An epoch of case M without BN against scikit-learn's MLPClassifier (partial_fit),
    and fastnn.sklearn's MLPClassifier.fit against scikit-learn's (`SKLEARN_FITS`; the
    rows carry both training accuracies)."""
    if not _available("sklearn"):
        return
    name, widths, batch = CASES[1]
    n_batches = 20 if s.quick else 100
    s.log("epoch vs scikit-learn MLPClassifier (%s, no BN, %d batches) ..." % (name, n_batches))
    b = s.backends[0]
    yield ({"case": name + " epoch (no BN)", "kind": "epoch", "widths": widths,
            "batch": batch},
           {"fastnn-" + b: (fastnn_epoch_fn(widths, batch, n_batches), s.on(b)),
            "sklearn": sklearn_epoch_fn(widths, batch, n_batches)})
    for dataset, epochs in SKLEARN_FITS:
        for dtype in ("float32", "float64"):
            s.log("MLPClassifier.fit vs scikit-learn's (%s, %s, %d epochs) ..."
                  % (dataset, dtype, epochs))
            fits = {lib: sklearn_fit(lib, dataset, epochs, np.dtype(dtype))
                    for lib in ("fastnn", "sklearn")}
            X, y = fits["fastnn"].data
            yield ({"case": "fit %s %s" % (dataset, dtype), "kind": "fit",
                    "epochs": epochs, "rows": len(X),
                    "accuracy": {lib: float(f().score(X, y)) for lib, f in fits.items()}},
                   {"fastnn-" + b: (fits["fastnn"], s.on(b)), "sklearn": fits["sklearn"]})


def cnn_steps(s):
    """The convolutional steps (LeNet-5-like, a residual block): `bench_cnn.steps`."""
    from .bench_cnn import steps       # loaded on use: bench_cnn builds on this module
    yield from steps(s)


#: the case families `run` measures by default, in order
FAMILIES = [training_steps, batch1_inference, sklearn_epochs, cnn_steps]


def run(quick=False, log=print, rounds=None, families=None):
    """Measure everything; return a dict (also printed as tables by `main`). rounds:
    interleaved rounds per case (default ROUNDS, or QUICK_ROUNDS when quick); each
    contender gets SAMPLE seconds of calls per round, then a `standalone` timing.
    families: case families (default `FAMILIES`), see `Session`."""
    import fastnn
    cfg = fastnn.show_config(print_=False)
    threads = fastnn.get_num_threads()
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    budget = rounds * SAMPLE
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "threads": threads,
           "fastnn": cfg["version"], "blas": cfg["blas"], "blas_core": blas_core(),
           "gemm": cfg.get("gemm", "none"),
           "rounds": rounds, "load": [os.getloadavg()[0]], "cases": []}
    with (Remote() if _available("torch") else contextlib.nullcontext()) as remote:
        log("machine limits ...")
        res["sgemm_rates"] = sgemm_rates(remote)
        res["copy_gbps"] = copy_bandwidth(budget)
        log("  single-thread sgemm %s GFLOP/s, copy %.1f GB/s" % (
            ", ".join("%s %.1f" % kv for kv in res["sgemm_rates"].items()), res["copy_gbps"]))
        s = Session(quick, threads, ["cython", "numpy"] if cfg["cython"] else ["numpy"],
                    remote, log, max(res["sgemm_rates"].values()), res["copy_gbps"])
        for family in (FAMILIES if families is None else families):
            for row, contenders in family(s):
                res["cases"].append(_measure(row, contenders, budget, rounds, log))
        res["torch_runtime"] = remote.info() if remote is not None else None
    res["load"].append(os.getloadavg()[0])
    from . import memory
    if memory.available():
        log("memory of a training step (allocations, peak vs need) ...")
        res["memory"] = memory.memory_rows()
    res["targets"] = targets(res)
    return res


def _measure(row, contenders, budget, rounds, log):
    """Fill a case row: interleaved samples and medians, standalone times, the load."""
    load = os.getloadavg()[0]
    row["samples"] = compare(contenders, budget, rounds)
    row.update({k: float(np.median(v)) for k, v in row["samples"].items()})
    row["standalone"] = {k: standalone(c) for k, c in contenders.items() if k in PEERS}
    row["load"] = [load, os.getloadavg()[0]]
    log("  " + _summary(row))
    return row


def blas_core():
    """The CPU kernel of the OpenBLAS the compiled kernels call (threadpoolctl's
    "architecture", e.g. SkylakeX or Haswell), with OPENBLAS_CORETYPE when it is set."""
    try:
        from threadpoolctl import threadpool_info
        from ..core.threads import is_kernel_blas
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return "unknown"
    cores = [i.get("architecture") or "?" for i in threadpool_info()
             if i.get("internal_api") == "openblas" and is_kernel_blas(i["filepath"])]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (", ".join(cores) or "not OpenBLAS") + (
        " (OPENBLAS_CORETYPE=%s)" % forced if forced else "")


def _summary(row):
    keys = [k for k in PEERS + ("gemm-only", "adam-only") if k in row]
    return ", ".join("%s %s" % (k, _fmt_time(row[k])) for k in keys)


def _fmt_time(t):
    return ("%.0f us" % (t * 1e6) if t < 1e-3 else "%.2f ms" % (t * 1e3) if t < 1
            else "%.3f s" % t)


def measures(r, q=50):
    """A case row's derived figures, each percentile q (default: the median) of its
    per-round values: "vs <peer>" (the peer's time over fastnn-cython's; > 1: fastnn is
    faster), "step / floor" (fastnn-cython's time over the step's floor), "step /
    GEMMs" (the step over its GEMMs alone) and "step / (GEMMs + Adam)"; and "GEMM
    GFLOP/s" (of the GEMMs alone, from their median time)."""
    out, s = {}, r["samples"]
    fc = "fastnn-cython"
    for peer, label in (("fastnn-numpy", "vs numpy"), ("torch", "vs torch"),
                        ("sklearn", "vs sklearn")):
        if fc in s and peer in s:
            out[label] = paired(s, peer, fc, q)
    if fc in s and r.get("floor"):
        out["step / floor"] = float(np.percentile(s[fc], q)) / r["floor"]
    if "gemm-only" in s:
        out["GEMM GFLOP/s"] = r["gemm_gflop"] / r["gemm-only"]
        if fc in s:
            out["step / GEMMs"] = paired(s, fc, "gemm-only", q)
            if "adam-only" in s:
                out["step / (GEMMs + Adam)"] = paired(s, fc, ("gemm-only", "adam-only"), q)
    return out


def targets(res):
    """The issue's targets against this run: [{case, measure, bound, kind, value, low,
    high, met}]: value the median of the per-round ratios, low and high their 25th and
    75th percentiles (the spread of the rounds); value None when the peer it needs is
    not installed."""
    found = {r["case"]: [measures(r, q) for q in (50, 25, 75)] for r in res["cases"]}
    goals = list(TARGETS)
    for r in res.get("memory", []):
        fixed = {"peak / need": r["ratio"], "step allocations": r["step_allocations"]}
        for m in found.setdefault(r["case"], [{}, {}, {}]):
            m.update(fixed)
        goals += [(r["case"], "step allocations", 0, "max"),
                  (r["case"], "peak / need", 1.25, "max")]
    rows = []
    for case, what, bound, kind in goals:
        v, lo, hi = (m.get(what) for m in found.get(case, [{}, {}, {}]))
        met = None if v is None else (v >= bound if kind == "min" else v <= bound)
        rows.append({"case": case, "measure": what, "bound": bound, "kind": kind,
                     "value": v, "low": lo, "high": hi, "met": met})
    return rows


def header(res):
    """The lines naming the machine, its limits, the load and the torch peer's runtime."""
    load = res.get("load", [])
    rates = res.get("sgemm_rates", {})
    lines = ["fastnn %s, %s, OpenBLAS core %s, %d threads, %s; load average %s on %d CPUs"
             % (res["fastnn"], res["cpu"], res.get("blas_core", "?"), res["threads"],
                res["date"], " -> ".join("%.2f" % v for v in load) or "?", os.cpu_count()),
             "fastnn's GEMM library: %s; single-thread sgemm GFLOP/s: %s; copy %.1f GB/s"
             % (res.get("gemm", "?"), ", ".join("%s %.1f" % kv for kv in rates.items()) or "?",
                res["copy_gbps"])]
    rt = res.get("torch_runtime")
    if rt:
        lines.append("torch peer: torch %s in a child process, %d threads, %d inter-op "
                     "threads, OpenMP %s%s" % (
                         rt["torch"], rt["threads"], rt["interop_threads"],
                         ", ".join(os.path.basename(p) for p in rt["openmp"]) or "none",
                         " (fastnn loaded there: not a plain torch)" if rt["fastnn_loaded"]
                         else ""))
    lines.append("times: medians of %d interleaved rounds; ratios: medians of the per-round "
                 "ratios; floor: GEMM FLOPs at the best single-thread sgemm x %d threads + "
                 "Adam's bytes at copy bandwidth" % (res["rounds"], res["threads"]))
    return lines


def table(res):
    """Markdown tables: times and ratios per case (`measures`; "vs" > 1: fastnn-cython is
    faster), the standalone check, then the targets."""
    lines = header(res) + [
        "", "| case | fastnn-cython | fastnn-numpy | torch | sklearn | vs numpy | vs torch "
        "| vs sklearn | floor | step / floor | step / GEMMs | GEMM GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        m = measures(r)
        cell = lambda k: _fmt_time(r[k]) if r.get(k) else "-"              # noqa: E731
        fmt = lambda k, f: f % m[k] if k in m else "-"                     # noqa: E731
        lines.append("| %s |" % " | ".join(
            [r["case"]] + [cell(k) for k in PEERS]
            + [fmt(k, "%.2fx") for k in ("vs numpy", "vs torch", "vs sklearn")]
            + [cell("floor"), fmt("step / floor", "%.2f"), fmt("step / GEMMs", "%.2f"),
               fmt("GEMM GFLOP/s", "%.1f")]))
    lines += [""] + standalone_table(res) + [""] + targets_table(res)
    return "\n".join(lines)


def standalone_table(res):
    """The standalone check as table lines: every contender's interleaved median against
    its standalone loop, a warning row where they disagree by more than AGREEMENT."""
    lines = ["| standalone check | interleaved | standalone | ratio | load | agrees |",
             "|---|---|---|---|---|---|"]
    for r in res["cases"]:
        for a in agreement(r):
            lines.append("| %s %s | %s | %s | %.2f | %s | %s |" % (
                r["case"], a["contender"], _fmt_time(a["interleaved"]),
                _fmt_time(a["standalone"]), a["ratio"],
                " -> ".join("%.2f" % v for v in r.get("load", [])) or "?",
                "yes" if a["ok"] else "**WARNING: differs by more than %d%%**"
                % round(AGREEMENT * 100)))
    if any(not a["ok"] for r in res["cases"] for a in agreement(r)):
        lines += ["", "WARNING: some interleaved times disagree with a plain loop of the "
                  "same work. Likely causes: other processes loading the CPUs (a load "
                  "average above the idle level; OpenMP teams stall when a thread loses "
                  "its core), thread pools of the previous contender still spinning, or "
                  "CPU frequency changes. Rerun on a quiet machine before trusting those "
                  "rows."]
    return lines


def targets_table(res):
    lines = ["| target | bound | this run | middle half of the rounds | met |",
             "|---|---|---|---|---|"]
    for t in res.get("targets", []):
        lines.append("| %s %s | %s %.2f | %s | %s | %s |" % (
            t["case"], t["measure"], ">=" if t["kind"] == "min" else "<=", t["bound"],
            "-" if t["value"] is None else "%.2f" % t["value"],
            "-" if t["value"] is None or t["low"] == t["high"]
            else "%.2f - %.2f" % (t["low"], t["high"]),
            {True: "yes", False: "**no**", None: "(peer not installed)"}[t["met"]]))
    return lines


def plot(res, path):
    """Bar chart of speed-ups of fastnn-cython over each peer, per case, on a log axis
    (medians of the per-round ratios; error bars over the middle half of the rounds,
    clipped to the axis, which the medians and targets alone scale; a black tick at
    each target)."""
    from .plots import new_figure, save_figure
    peers = ["vs numpy", "vs torch", "vs sklearn"]
    cases = [(r["case"], [measures(r, q) for q in (50, 25, 75)]) for r in res["cases"]
             if "fastnn-cython" in r]
    bounds = {(c, w): b for c, w, b, kind in TARGETS if kind == "min"}
    fig = new_figure((8, 4))
    ax = fig.add_subplot()
    ax.set_yscale("log")
    width = 0.8 / len(peers)
    heights = [1.0]
    for k, peer in enumerate(peers):
        pts = [(i + k * width, name, m[peer], lo[peer], hi[peer])
               for i, (name, (m, lo, hi)) in enumerate(cases) if peer in m]
        if not pts:
            continue
        xs, names, ys, los, his = map(list, zip(*pts))
        err = [[y - lo for y, lo in zip(ys, los)], [hi - y for y, hi in zip(ys, his)]]
        # bars grow from 1 (parity), up for a speed-up and down for a slow-down
        ax.bar(xs, [y - 1 for y in ys], width, bottom=1, label=peer)
        ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="k", capsize=2, lw=1)
        heights += ys
        for x, name in zip(xs, names):
            if (name, peer) in bounds:
                heights.append(bounds[(name, peer)])
                ax.hlines(bounds[(name, peer)], x - width / 2, x + width / 2, color="k",
                          lw=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylim(min(heights) / 2, max(heights) * 2)     # the whiskers never widen it
    ax.set_xticks([i + width for i in range(len(cases))])
    ax.set_xticklabels([name for name, _ in cases], fontsize=8)
    ax.set_ylabel("speed-up of fastnn-cython (x, log scale)")
    ax.set_title("fastnn, %d threads, %s, %s (whiskers: middle half of the rounds; black "
                 "ticks: targets)" % (res["threads"], res["cpu"], res["date"]), fontsize=8)
    ax.legend()
    save_figure(fig, path, dpi=110)


def add_parser(subparsers):
    from .cli import POSITIVE_INT
    p = subparsers.add_parser("bench", help="benchmark fastnn against NumPy, PyTorch, "
                              "scikit-learn and the machine's floor")
    p.add_argument("--quick", action="store_true", help="short run (under two minutes)")
    p.add_argument("--rounds", type=POSITIVE_INT, metavar="N",
                   help="interleaved rounds per case (default %d, --quick %d); more "
                   "rounds, tighter medians on a noisy machine" % (ROUNDS, QUICK_ROUNDS))
    p.add_argument("--json", metavar="FILE", help="write the raw results as JSON")
    p.add_argument("--plot", metavar="FILE", help="write a PNG bar chart of the speed-ups")
    p.set_defaults(func=main)
    return p


def main(args):
    res = run(quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True),
              rounds=args.rounds)
    print(table(res))
    if "memory" in res:
        from .memory import memory_table
        print()
        print(memory_table(res["memory"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print("results written to %s" % os.path.abspath(args.json))
    if args.plot:
        plot(res, args.plot)
        print("plot written to %s" % os.path.abspath(args.plot))
    return 0

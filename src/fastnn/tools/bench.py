"""`python -m fastnn bench`: fastnn-cython, fastnn-numpy, PyTorch and scikit-learn side
by side on the same work, with the machine's GEMM and memory-bandwidth limits.

Measured side by side, literally: `compare` runs the contenders of a case in rounds,
each round timing a batch of calls of every contender in turn (rotating the order, a
pause after each), and every ratio is the median of the per-round ratios (`paired`). A
shared, noisy machine (its speed drifts by 10-40% within seconds) then slows the
contenders of a round alike, so the ratios hold even where absolute times do not.
PyTorch is built and timed in a child process (`Remote`).
"""
import contextlib
import json
import platform
import sys
import time

import numpy as np

#: reference training steps: (name, layer widths, batch) — Dense->BN->ReLU hidden layers
CASES = [("S", (64, 128, 10), 32), ("M", (784, 256, 10), 64),
         ("L", (784, 512, 512, 10), 128), ("XL", (784, 1024, 1024, 10), 512)]

#: the targets of the performance issue: (case, measure, bound, "min" | "max"); with the
#: compiled build, each case's memory adds "step allocations" <= 0 and "peak / need" <= 1.25
TARGETS = [("S", "vs torch", 5.0, "min"), ("M", "vs torch", 1.8, "min"),
           ("L", "vs torch", 1.5, "min"), ("XL", "vs torch", 1.1, "min"),
           ("S", "vs numpy", 2.0, "min"), ("M", "vs numpy", 2.0, "min"),
           ("L", "vs numpy", 1.4, "min"),
           ("L", "step / GEMMs", 1.15, "max"), ("XL", "step / GEMMs", 1.15, "max"),
           ("M infer b=1", "vs torch", 5.0, "min"),
           ("M epoch (no BN)", "vs sklearn", 2.0, "min")]

ROUNDS, QUICK_ROUNDS = 21, 4
SAMPLE = 0.05    # seconds of back-to-back calls per contender per round
#: seconds between samples: thread pools spin-wait after work (OpenBLAS ~0.1 s, libgomp
#: less) and steal a core from whatever runs next; measured here, a 2-thread fastnn step
#: ran 1.3-1.6x slower within 50 ms of a BLAS-threaded GEMM, and at full speed after 0.2 s
PAUSE = 0.2


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


def compare(contenders, budget, rounds=ROUNDS):
    """Seconds per call of each contender, measured round-robin: {name: [one per round]}.

    contenders: {name: fn} or {name: (fn, context)}, where context() returns a context
    manager held while fn runs (a backend, a BLAS thread limit; entered outside the
    timings); fn may be a `RemoteFn` (timed in a child process). Each contender gets
    ~budget seconds in `rounds` samples; a sample times as many back-to-back calls as
    fill budget / rounds (at least one), after two
    warm-up calls. Within a round the contenders run one after the other (the order
    rotates from round to round), so a ratio of two contenders is best taken round by
    round (`paired`)."""
    items = []
    for name, c in contenders.items():
        fn, ctx = c if isinstance(c, tuple) else (c, None)
        items.append((name, _timer(fn), ctx or contextlib.nullcontext))
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
                samples[name].append(timed(k) / k)
            time.sleep(PAUSE)
    return samples


class Remote:
    """A child process that builds contenders and times their calls there. PyTorch runs
    this way, so that the two engines share no runtime: in one process they would use
    the same OpenMP runtime (both link libgomp.so.1, which the loader maps once) and the
    same allocator. One child serves a whole run (importing torch takes seconds)."""

    def __init__(self):
        import subprocess
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import fastnn.tools.bench as b; b._serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.count = 0

    def contender(self, factory, *args):
        """A `RemoteFn` for fastnn.tools.bench.<factory>(*args), built in the child."""
        if not factory.endswith("_fn"):
            raise ValueError("fastnn.tools.bench.Remote: not a contender factory: %r" % factory)
        reply = self._ask(json.dumps([factory, list(args)]))
        if reply != "ready":
            raise RuntimeError("fastnn.tools.bench.Remote(%s): the child process failed: %s"
                               % (factory, reply))
        self.count += 1
        return RemoteFn(self, self.count - 1)

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


def _serve():
    """The child side of `Remote`: a JSON line [factory, args] builds a contender
    ("ready", or the error on one line); "i k" times k calls of contender i."""
    import traceback
    fns = []
    for line in sys.stdin:
        if line.startswith("["):
            try:
                factory, args = json.loads(line)
                fns.append(globals()[factory](*args))
            except Exception:                          # report it on one line
                print(traceback.format_exc().replace("\n", " | "), flush=True)
                continue
            print("ready", flush=True)
            continue
        i, k = map(int, line.split())
        fn = fns[i]
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        print(repr(time.perf_counter() - t0), flush=True)


def _timer(fn):
    """calls -> seconds for a local callable or a `Remote`."""
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


def gemm_gflops(budget, threads):
    """float32 GEMM throughput of the BLAS the kernels use (scipy's), GFLOP/s."""
    from scipy.linalg.blas import sgemm
    n = 1024
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    with _all_threads(threads):
        t = median_time(lambda: sgemm(1.0, a, a, c=c, overwrite_c=1), budget)
    return 2 * n ** 3 / t / 1e9


def copy_bandwidth(budget):
    """Memory bandwidth of a large NumPy copy, GB/s counting read + write."""
    x = np.ones(16 << 20, np.float32)
    y = np.empty_like(x)
    t = median_time(lambda: np.copyto(y, x), budget)
    return 2 * x.nbytes / t / 1e9


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
    n = sum(i * o + o for i, o in zip(widths[:-1], widths[1:])) + 2 * sum(widths[1:-1])
    # filled arrays: never-written np.zeros pages all map to one zero page, whose reads
    # would cost nothing
    rng = np.random.default_rng(0)
    p, g, m = (rng.standard_normal(n, np.float32) * 1e-3 for _ in range(3))
    v = np.full(n, 1e-6, np.float32)
    with fastnn.use_backend("cython"):
        k = backend()
    nt = threads_for(n)
    return lambda: k.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False, nt)


def gemm_flops(widths, batch):
    f = 0
    for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
        f += 2 * batch * i * o * (3 if k else 2)
    return f


# ---------------------------------------------------------------- contenders

def _data(widths, batch, n_batches=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch * n_batches, widths[0]), np.float32)
    y = rng.integers(0, widths[-1], batch * n_batches)
    return x, y


def fastnn_model(widths, seed=0):
    import fastnn
    layers = []
    for i, o in zip(widths[:-2], widths[1:-1]):
        layers += [fastnn.Dense(i, o, rng=seed), fastnn.BatchNorm1d(o), fastnn.ReLU()]
    layers.append(fastnn.Dense(widths[-2], widths[-1], rng=seed))
    return fastnn.Sequential(*layers)


def fastnn_step_fn(widths, batch, backend):
    """A callable making one training step (forward, loss, backward, Adam) of the
    reference network; run it with `backend` active (fastnn.use_backend)."""
    import fastnn
    x, y = _data(widths, batch)
    with fastnn.use_backend(backend):
        model = fastnn_model(widths)
        trainer = fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
                                 fastnn.optim.Adam(model.parameters(), lr=1e-3), verbose=0)
    return trainer.stepper(x, y)


def fastnn_infer_fn(widths):
    """A callable running the eval-mode public forward at batch 1."""
    x, _ = _data(widths, 1)
    model = fastnn_model(widths).eval()
    return lambda: model(x)


def torch_model(widths, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = []
    for i, o in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(i, o), torch.nn.BatchNorm1d(o), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(widths[-2], widths[-1]))
    return torch.nn.Sequential(*layers)


def torch_step_fn(widths, batch, threads):
    import torch
    model = torch_model(widths, threads)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    x, y = _data(widths, batch)
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    return step


def torch_infer_fn(widths, threads):
    import torch
    model = torch_model(widths, threads).eval()
    x = torch.from_numpy(_data(widths, 1)[0])

    def infer():
        with torch.no_grad():
            model(x)
    return infer


def sklearn_epoch_fn(widths, batch, n_batches):
    from sklearn.neural_network import MLPClassifier
    x, y = _data(widths, batch, n_batches)
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
    x, y = _data(widths, batch, n_batches)
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


def run(quick=False, log=print, rounds=None):
    """Measure everything; return a dict (also printed as tables by `main`). rounds:
    interleaved rounds per case (default ROUNDS, or QUICK_ROUNDS when quick); each
    contender gets SAMPLE seconds of calls per round."""
    import fastnn
    cfg = fastnn.show_config(print_=False)
    threads = fastnn.get_num_threads()
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    budget = rounds * SAMPLE
    res = {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu_name(), "threads": threads,
           "fastnn": cfg["version"], "blas": cfg["blas"], "rounds": rounds, "cases": []}
    log("machine limits ...")
    res["gemm_gflops"] = gemm_gflops(budget, threads)
    res["copy_gbps"] = copy_bandwidth(budget)
    log("  sgemm %.1f GFLOP/s, copy %.1f GB/s" % (res["gemm_gflops"], res["copy_gbps"]))
    with (Remote() if _available("torch") else contextlib.nullcontext()) as remote:
        for row, contenders in _cases(cfg, threads, quick, remote, log):
            row["samples"] = compare(contenders, budget, rounds)
            row.update({k: float(np.median(v)) for k, v in row["samples"].items()})
            res["cases"].append(row)
            log("  " + _summary(row))
    from . import memory
    if memory.available():
        log("memory of a training step (allocations, peak vs need) ...")
        res["memory"] = memory.memory_rows()
    res["targets"] = targets(res)
    return res


def _cases(cfg, threads, quick, remote, log=print):
    """(row, contenders) of every case, built as it comes (torch's in `remote`, a
    `Remote` child process, when there is one)."""
    import fastnn
    backends = ["cython", "numpy"] if cfg["cython"] else ["numpy"]
    blas = lambda: _all_threads(threads)                       # noqa: E731
    on = lambda b: (lambda: fastnn.use_backend(b))             # noqa: E731
    for name, widths, batch in CASES:
        log("training step %s %s batch %d ..." % (name, "-".join(map(str, widths)), batch))
        contenders = {"fastnn-" + b: (fastnn_step_fn(widths, batch, b), on(b))
                      for b in backends}
        if remote is not None:
            contenders["torch"] = remote.contender("torch_step_fn", widths, batch, threads)
        contenders["gemm-only"] = (gemm_only_fn(widths, batch), blas)
        if cfg["cython"]:
            contenders["adam-only"] = adam_only_fn(widths)
        yield ({"case": name, "kind": "train step", "widths": widths, "batch": batch,
                "gemm_gflop": gemm_flops(widths, batch) / 1e9}, contenders)
    name, widths, _ = CASES[1]
    log("inference %s batch 1 ..." % name)
    contenders = {"fastnn-" + b: (fastnn_infer_fn(widths), on(b)) for b in backends}
    if remote is not None:
        contenders["torch"] = remote.contender("torch_infer_fn", widths, threads)
    contenders["gemm-only"] = (gemv_only_fn(widths), blas)
    yield ({"case": name + " infer b=1", "kind": "inference", "widths": widths, "batch": 1,
            "gemm_gflop": 2 * sum(i * o for i, o in zip(widths[:-1], widths[1:])) / 1e9},
           contenders)
    if _available("sklearn"):
        name, widths, batch = CASES[1]
        n_batches = 20 if quick else 100
        log("epoch vs scikit-learn MLPClassifier (%s, no BN, %d batches) ..."
            % (name, n_batches))
        b = backends[0]
        yield ({"case": name + " epoch (no BN)", "kind": "epoch", "widths": widths,
                "batch": batch},
               {"fastnn-" + b: (fastnn_epoch_fn(widths, batch, n_batches), on(b)),
                "sklearn": sklearn_epoch_fn(widths, batch, n_batches)})


def _summary(row):
    keys = [k for k in ("fastnn-cython", "fastnn-numpy", "torch", "sklearn", "gemm-only",
                        "adam-only")
            if k in row]
    return ", ".join("%s %s" % (k, _fmt_time(row[k])) for k in keys)


def _fmt_time(t):
    return "%.0f us" % (t * 1e6) if t < 0.1 else "%.3f s" % t


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measures(r, q=50):
    """A case row's derived figures, each percentile q (default: the median) of its
    per-round ratios (`paired`): "vs <peer>" (the peer's time over fastnn-cython's; > 1:
    fastnn is faster), "step / GEMMs" (the step over its GEMMs alone) and "step / (GEMMs
    + Adam)"; and "GEMM GFLOP/s" (of the GEMMs alone, from their median time)."""
    out, s = {}, r["samples"]
    fc = "fastnn-cython"
    for peer, label in (("fastnn-numpy", "vs numpy"), ("torch", "vs torch"),
                        ("sklearn", "vs sklearn")):
        if fc in s and peer in s:
            out[label] = paired(s, peer, fc, q)
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


def table(res):
    """Markdown tables: times and ratios per case (`measures`; "vs" > 1: fastnn-cython is
    faster), then the targets."""
    lines = ["fastnn %s, %s, %d threads, %s; sgemm %.1f GFLOP/s, copy %.1f GB/s; times: "
             "medians of %d interleaved rounds, ratios: medians of the per-round ratios"
             % (res["fastnn"], res["cpu"], res["threads"], res["date"], res["gemm_gflops"],
                res["copy_gbps"], res["rounds"]), "",
             "| case | fastnn-cython | fastnn-numpy | torch | sklearn | vs numpy | vs torch "
             "| vs sklearn | step / GEMMs | step / (GEMMs + Adam) | GEMM GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["cases"]:
        m = measures(r)
        cell = lambda k: _fmt_time(r[k]) if k in r else "-"                # noqa: E731
        fmt = lambda k, f: f % m[k] if k in m else "-"                     # noqa: E731
        lines.append("| %s |" % " | ".join(
            [r["case"]] + [cell(k) for k in ("fastnn-cython", "fastnn-numpy", "torch",
                                              "sklearn")]
            + [fmt(k, "%.2fx") for k in ("vs numpy", "vs torch", "vs sklearn")]
            + [fmt(k, "%.2f") for k in ("step / GEMMs", "step / (GEMMs + Adam)")]
            + [fmt("GEMM GFLOP/s", "%.1f")]))
    lines += ["", "| target | bound | this run | middle half of the rounds | met |",
              "|---|---|---|---|---|"]
    for t in res.get("targets", []):
        lines.append("| %s %s | %s %.2f | %s | %s | %s |" % (
            t["case"], t["measure"], ">=" if t["kind"] == "min" else "<=", t["bound"],
            "-" if t["value"] is None else "%.2f" % t["value"],
            "-" if t["value"] is None or t["low"] == t["high"]
            else "%.2f - %.2f" % (t["low"], t["high"]),
            {True: "yes", False: "**no**", None: "(peer not installed)"}[t["met"]]))
    return "\n".join(lines)


def plot(res, path):
    """Bar chart of speed-ups of fastnn-cython over each peer, per case (medians of the
    per-round ratios, whiskers over the middle half of the rounds, a black tick at each
    target)."""
    from .plots import _figure, _save
    peers = ["vs numpy", "vs torch", "vs sklearn"]
    rows = [r for r in res["cases"] if "fastnn-cython" in r]
    cases = [(r["case"], [measures(r, q) for q in (50, 25, 75)]) for r in rows]
    bounds = {(c, w): b for c, w, b, kind in TARGETS if kind == "min"}
    fig = _figure((8, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(peers)
    for k, peer in enumerate(peers):
        pts = [(i + k * width, m, lo, hi) for i, (_, (m, lo, hi)) in enumerate(cases)
               if peer in m]
        if not pts:
            continue
        xs = [x for x, _, _, _ in pts]
        ys = [m[peer] for _, m, _, _ in pts]
        err = [[m[peer] - lo[peer] for _, m, lo, _ in pts],
               [hi[peer] - m[peer] for _, m, _, hi in pts]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=peer)
        for x, (name, _) in zip(xs, [c for c in cases if peer in c[1][0]]):
            if (name, peer) in bounds:
                ax.hlines(bounds[(name, peer)], x - width / 2, x + width / 2, color="k",
                          lw=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + width for i in range(len(cases))])
    ax.set_xticklabels([name for name, _ in cases], fontsize=8)
    ax.set_ylabel("speed-up of fastnn-cython (x)")
    ax.set_title("fastnn, %d threads, %s (whiskers: middle half of the rounds; black "
                 "ticks: targets)" % (res["threads"], res["date"]), fontsize=9)
    ax.legend()
    _save(fig, path, dpi=110)


def add_parser(subparsers):
    from .cli import POSITIVE_INT
    p = subparsers.add_parser("bench", help="benchmark fastnn against NumPy, PyTorch, "
                              "scikit-learn and the machine's limits")
    p.add_argument("--quick", action="store_true", help="short run (under a minute)")
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
        print("results written to %s" % args.json)
    if args.plot:
        plot(res, args.plot)
        print("plot written to %s" % args.plot)
    return 0

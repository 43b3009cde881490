"""Convolutional training steps as benchmark contenders (issue 13): the same step in
fastnn (compiled and NumPy backends), in PyTorch, and as its GEMMs alone (the floor), on
the networks of `fastnn.tools.cnn_nets` (LeNet-5-like and a residual block).

`steps(session)` is the case family `python -m fastnn bench` runs (torch in its child
process); `contenders(case, threads)` gives {name: fn} (`fastnn`, `numpy`, `torch`,
`gemms`) for a quick in-process `fastnn.tools.bench.compare`; `ratios(samples)` the
paired ratios against the issue's targets (>= 3x torch and NumPy for LeNet, >= 1.3x
torch for the block). The GEMM floor runs the im2col products of every convolution over
the whole batch (z = W col, dW = dz col^T, dcol = W^T dz but for the first layer) and
the Dense layers' products, with the BLAS the kernels use, threaded by BLAS itself.
"""
import numpy as np

from . import bench
from .cnn_nets import CASES, data, torch_step_fn
from .reference_nets import gemm_flops
from ..ops.conv import output_size

#: (case, contender, denominator, target): the step must be `target` times faster
TARGETS = [("lenet", "torch", "fastnn", 3.0), ("lenet", "numpy", "fastnn", 3.0),
           ("resblock", "torch", "fastnn", 1.3)]


# ------------------------------------------------------------------------- fastnn
def _fastnn_layers(specs, seed):
    from .. import layers as L
    out = []
    for k, s in enumerate(specs):
        kind = s[0]
        if kind == "conv":
            out.append(L.Conv2d(s[1], s[2], s[3], padding=s[4], activation=s[5],
                                bias=s[5] is not None, rng=seed + k))
        elif kind == "dense":
            out.append(L.Dense(s[1], s[2], activation=s[3], rng=seed + k))
        elif kind == "residual":
            out.append(L.Residual(L.Sequential(*_fastnn_layers(s[1], seed + 100))))
        else:
            out.append({"pool": lambda: L.MaxPool2d(s[1]), "flatten": L.Flatten,
                        "bn": lambda: L.BatchNorm2d(s[1]), "relu": L.ReLU,
                        "gap": L.GlobalAvgPool2d}[kind]())
    return out


def fastnn_model(case, seed=0):
    """The case's network as a fastnn Sequential."""
    from ..layers import Sequential
    return Sequential(*_fastnn_layers(CASES[case]["layers"], seed))


def build(case, lr=1e-3):
    """A `build()` for `fastnn.tools.memory.step_memory`: (model, loss, Adam)."""
    from .. import optim
    from ..losses import SoftmaxCrossEntropy

    def make():
        model = fastnn_model(case)
        return model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=lr)
    return make


def fastnn_step_fn(case, backend):
    """One training step (forward, loss, backward, Adam) of the case on `backend`."""
    import fastnn
    x, y = data(case)
    with fastnn.use_backend(backend):
        model, loss, opt = build(case)()
        trainer = fastnn.Trainer(model, loss, opt, verbose=0)
    return trainer.stepper(x, y)


# ------------------------------------------------------------------- GEMM floor
def _conv_gemm_calls(x_shape, f, k, padding, first, rng):
    """The im2col products of one stride-1 convolution over the whole batch, as
    (a, b, c, trans_a, trans_b) sgemm calls on transposed Fortran views (no copies)."""
    n, c, h, w = x_shape
    oh, ow = output_size(h, k, 1, padding), output_size(w, k, 1, padding)
    depth, cols = c * k * k, n * oh * ow
    wm, col, dz = (rng.standard_normal(s, np.float32) for s in ((f, depth), (depth, cols),
                                                                   (f, cols)))
    z, dw, dcol = (np.empty(s, np.float32) for s in ((f, cols), (f, depth), (depth, cols)))
    calls = [(col.T, wm.T, z.T, 0, 0), (col.T, dz.T, dw.T, 1, 0)]
    if not first:
        calls.append((dz.T, wm.T, dcol.T, 0, 1))
    return calls, (n, f, oh, ow)


def _gemm_calls(specs, shape, first, rng):
    """(sgemm calls of the convolutions, output shape, the widths of the Dense part) of
    a list of layer specs on an input of `shape`."""
    calls, dense = [], []
    for s in specs:
        kind = s[0]
        if kind == "conv":
            more, shape = _conv_gemm_calls(shape, s[2], s[3], s[4], first, rng)
            calls += more
            first = False
        elif kind == "dense":
            dense.append(s[2])
            shape = (shape[0], s[2])
        elif kind == "residual":
            more, _, _ = _gemm_calls(s[1], shape, first, rng)
            calls += more
        elif kind == "pool":
            shape = shape[:2] + (shape[2] // s[1], shape[3] // s[1])
        elif kind in ("flatten", "gap"):
            shape = (shape[0], int(np.prod(shape[1:])) if kind == "flatten" else shape[1])
            dense.append(shape[1])
    return calls, shape, dense


def gemms_fn(case):
    """A callable running the case's GEMMs alone (the caller sets BLAS's threading);
    its `flops` attribute counts their floating-point operations."""
    from scipy.linalg.blas import sgemm
    spec = CASES[case]
    calls, _, widths = _gemm_calls(spec["layers"], spec["input"], True,
                                   np.random.default_rng(0))
    batch = spec["input"][0]
    # the convolutions' products, then Dense's (whose first layer needs its dx here)
    flops = sum(2 * c.size * (a.shape[0] if ta else a.shape[1]) for a, _, c, ta, _ in calls)
    flops += gemm_flops(widths, batch) + 2 * batch * widths[0] * widths[1]
    dense = bench.gemm_only_fn(widths, spec["input"][0], first_dx=True)

    def run():
        for a, b, c, ta, tb in calls:
            sgemm(1.0, a, b, c=c, overwrite_c=1, trans_a=ta, trans_b=tb)
        dense()
    run.flops = flops
    return run


def steps(s):
    """The case family of `fastnn.tools.bench.run` (see its `Session`): each CNN step on
    fastnn's backends, in torch (the peer process) and as its GEMMs alone, with the
    step's floor (GEMM FLOPs at the best sgemm rate x threads + Adam's bytes at copy
    bandwidth)."""
    for case, spec in CASES.items():
        s.log("training step %s %s ..." % (case, "x".join(map(str, spec["input"]))))
        contenders = {"fastnn-" + b: (fastnn_step_fn(case, b), s.on(b)) for b in s.backends}
        if s.remote is not None:
            contenders["torch"] = s.remote.contender("cnn_nets:torch_step_fn", case,
                                                     s.threads)
        gemms = gemms_fn(case)
        contenders["gemm-only"] = (gemms, s.blas())
        params = sum(p.size for p in fastnn_model(case).parameters())
        floor = (gemms.flops / (s.sgemm_gflops * 1e9 * s.threads)
                 + bench.ADAM_BYTES * params / (s.copy_gbps * 1e9))
        yield ({"case": case, "kind": "train step", "batch": spec["input"][0],
                "gemm_gflop": gemms.flops / 1e9, "floor": floor}, contenders)


def contenders(case, threads):
    """{name: fn or (fn, context)} of one case for `fastnn.tools.bench.compare`: the
    compiled step ("fastnn"), the NumPy backend's ("numpy"), PyTorch's ("torch", when
    installed) and the GEMMs alone ("gemms", BLAS on `threads` threads)."""
    import fastnn
    fastnn.set_num_threads(threads)
    out = {"fastnn": fastnn_step_fn(case, "cython"), "numpy": fastnn_step_fn(case, "numpy")}
    try:
        out["torch"] = torch_step_fn(case, threads)
    except ImportError:
        pass
    out["gemms"] = (gemms_fn(case), lambda: bench._all_threads(threads))
    return out


def ratios(case, samples):
    """{"<contender> / fastnn": median paired ratio} of `compare` samples of one case,
    with the target where the issue sets one."""
    out = {}
    for name in samples:
        if name != "fastnn":
            target = [t for c, n, _, t in TARGETS if c == case and n == name]
            out["%s / fastnn" % name] = (bench.paired(samples, name, "fastnn"),
                                         target[0] if target else None)
    return out


def run(cases=("lenet", "resblock"), budget=1.0, rounds=5, threads=None, log=print):
    """A short measurement: compare() of each case's contenders -> {case: ratios}."""
    import fastnn
    threads = threads or fastnn.get_num_threads()
    res = {}
    for case in cases:
        samples = bench.compare(contenders(case, threads), budget, rounds=rounds)
        res[case] = {"ms": {k: 1e3 * float(np.median(v)) for k, v in samples.items()},
                     "ratios": ratios(case, samples)}
        log("%s: %s" % (case, res[case]))
    return res

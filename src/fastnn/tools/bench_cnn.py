"""Convolutional training steps as benchmark contenders (issue 13): the same step in
fastnn (compiled and NumPy backends), in PyTorch, and as its GEMMs alone (the floor).

Cases (float32, softmax cross-entropy, Adam lr 1e-3):

* ``lenet``: LeNet-5-like, 64 x 1 x 28 x 28: conv 6@5x5, ReLU, max-pool 2, conv 16@5x5,
  ReLU, max-pool 2, dense 120, 84, 10 (ReLUs fused into the convolutions and Dense);
* ``resblock``: a residual block, 32 x 32 x 32 x 32: conv3x3-BN-ReLU-conv3x3-BN plus the
  skip, ReLU, global average pool, dense 10 (convolutions without bias, as before BN).

`contenders(case, threads)` gives {name: fn} (`fastnn`, `numpy`, `torch`, `gemms`) for
`fastnn.tools.bench.compare`; `ratios(samples)` the paired ratios against the issue's
targets (>= 3x torch and NumPy for LeNet, >= 1.3x torch for the block). The GEMM floor
runs the im2col products of every convolution over the whole batch (z = W col,
dW = dz col^T, dcol = W^T dz but for the first layer) and the Dense layers' products,
with the BLAS the kernels use, threaded by BLAS itself.
"""
import numpy as np

from . import bench
from ..ops.conv import output_size

#: what a case's network is made of: ("conv", in, out, kernel, padding, activation),
#: ("pool", k), ("flatten",), ("dense", in, out, activation), ("residual", [specs]),
#: ("bn", channels), ("relu",), ("gap",)
_BLOCK = [("conv", 32, 32, 3, 1, None), ("bn", 32), ("relu",), ("conv", 32, 32, 3, 1, None),
          ("bn", 32)]
CASES = {
    "lenet": {"input": (64, 1, 28, 28), "classes": 10, "layers": [
        ("conv", 1, 6, 5, 0, "relu"), ("pool", 2), ("conv", 6, 16, 5, 0, "relu"), ("pool", 2),
        ("flatten",), ("dense", 256, 120, "relu"), ("dense", 120, 84, "relu"),
        ("dense", 84, 10, None)]},
    "resblock": {"input": (32, 32, 32, 32), "classes": 10, "layers": [
        ("residual", _BLOCK), ("relu",), ("gap",), ("dense", 32, 10, None)]},
}
#: (case, contender, denominator, target): the step must be `target` times faster
TARGETS = [("lenet", "torch", "fastnn", 3.0), ("lenet", "numpy", "fastnn", 3.0),
           ("resblock", "torch", "fastnn", 1.3)]


def data(case, seed=0):
    """(x, labels) of one batch of `case`."""
    spec = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec["input"], np.float32)
    return x, rng.integers(0, spec["classes"], spec["input"][0])


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


# -------------------------------------------------------------------------- torch
def _torch_layers(specs):
    import torch
    nn = torch.nn
    out = []
    for s in specs:
        kind = s[0]
        if kind == "conv":
            out.append(nn.Conv2d(s[1], s[2], s[3], padding=s[4], bias=s[5] is not None))
            if s[5] == "relu":
                out.append(nn.ReLU())
        elif kind == "dense":
            out += [nn.Linear(s[1], s[2])] + ([nn.ReLU()] if s[3] == "relu" else [])
        elif kind == "residual":
            out.append(_TorchResidual(nn.Sequential(*_torch_layers(s[1]))))
        else:
            out.append({"pool": lambda: nn.MaxPool2d(s[1]), "flatten": nn.Flatten,
                        "bn": lambda: nn.BatchNorm2d(s[1]), "relu": nn.ReLU,
                        "gap": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
                        }[kind]())
    return out


def _TorchResidual(module):
    import torch

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.module = module

        def forward(self, x):
            return x + self.module(x)
    return Residual()


def torch_step_fn(case, threads):
    """One training step of the case in PyTorch (CPU, `threads` threads)."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*_torch_layers(CASES[case]["layers"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in data(case))

    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    return step


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
    """A callable running the case's GEMMs alone (the caller sets BLAS's threading)."""
    from scipy.linalg.blas import sgemm
    spec = CASES[case]
    calls, _, widths = _gemm_calls(spec["layers"], spec["input"], True,
                                   np.random.default_rng(0))
    dense = bench.gemm_only_fn(widths, spec["input"][0], first_dx=True)

    def run():
        for a, b, c, ta, tb in calls:
            sgemm(1.0, a, b, c=c, overwrite_c=1, trans_a=ta, trans_b=tb)
        dense()
    return run


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

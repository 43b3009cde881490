"""The convolutional benchmark networks (issue 13), described as data, with their
PyTorch twins. Imports neither fastnn nor torch at module level: the torch peer of
`python -m fastnn bench` (`torch_peer.py`, a process that never imports fastnn) builds
`torch_step_fn` from here; `fastnn.tools.bench_cnn` builds the fastnn side.

Cases (float32, softmax cross-entropy, Adam lr 1e-3):

* ``lenet``: LeNet-5-like, 64 x 1 x 28 x 28: conv 6@5x5, ReLU, max-pool 2, conv 16@5x5,
  ReLU, max-pool 2, dense 120, 84, 10 (ReLUs fused into the convolutions and Dense);
* ``resblock``: a residual block, 32 x 32 x 32 x 32: conv3x3-BN-ReLU-conv3x3-BN plus the
  skip, ReLU, global average pool, dense 10 (convolutions without bias, as before BN).
"""
import numpy as np

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

def data(case, seed=0):
    """(x, labels) of one batch of `case`."""
    spec = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec["input"], np.float32)
    return x, rng.integers(0, spec["classes"], spec["input"][0])


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

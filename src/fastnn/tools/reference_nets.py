"""The reference networks of the benchmark and the memory report: one definition of
each case's shapes, data and models, shared by fastnn, PyTorch and the figures.

Importing this module imports neither fastnn's kernels nor torch (the builders import
what they build), so the PyTorch peer's child process (`torch_peer`) loads it without
loading fastnn: PyTorch there runs exactly as in a user's plain script.
"""
import numpy as np

#: reference training steps: (name, layer widths, batch); Dense -> BatchNorm1d -> ReLU
#: hidden layers, a Dense output, softmax cross-entropy, Adam
CASES = [("S", (64, 128, 10), 32), ("M", (784, 256, 10), 64),
         ("L", (784, 512, 512, 10), 128), ("XL", (784, 1024, 1024, 10), 512)]


def data(widths, batch, n_batches=1, seed=0):
    """Inputs x (batch * n_batches, widths[0]) float32 and labels y in [0, widths[-1])."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch * n_batches, widths[0]), np.float32)
    y = rng.integers(0, widths[-1], batch * n_batches)
    return x, y


def param_count(widths):
    """Trainable values of the reference network: weights, biases, BN scales and shifts."""
    dense = sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))
    return dense + 2 * sum(widths[1:-1])


def gemm_flops(widths, batch):
    """Floating-point operations of a training step's matrix products: forward x @ W,
    backward dW and dx (no dx for the first layer)."""
    return sum(2 * batch * i * o * (3 if k else 2)
               for k, (i, o) in enumerate(zip(widths[:-1], widths[1:])))


def fastnn_model(widths, seed=0):
    """The reference network as a fastnn Sequential."""
    import fastnn
    layers = []
    for i, o in zip(widths[:-2], widths[1:-1]):
        layers += [fastnn.Dense(i, o, rng=seed), fastnn.BatchNorm1d(o), fastnn.ReLU()]
    layers.append(fastnn.Dense(widths[-2], widths[-1], rng=seed))
    return fastnn.Sequential(*layers)


def torch_model(widths, threads):
    """The reference network as a torch.nn.Sequential, with torch set to `threads`
    intra-op threads."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = []
    for i, o in zip(widths[:-2], widths[1:-1]):
        layers += [torch.nn.Linear(i, o), torch.nn.BatchNorm1d(o), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(widths[-2], widths[-1]))
    return torch.nn.Sequential(*layers)

"""Shared fixtures: tests run on the Cython backend by default and repeat on NumPy."""
import gzip
import os
import struct

import numpy as np
import pytest

import fastnn

#: the directory holding the `fastnn` these tests import (site-packages when installed,
#: src/ in a development tree): subprocess tests put it on PYTHONPATH so the child
#: imports the same build
FASTNN_PATH = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

BACKENDS = ["cython", "numpy"] if fastnn.show_config(print_=False)["cython"] else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test body with the given backend active."""
    with fastnn.use_backend(request.param):
        yield request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def tol(dtype):
    """Parity tolerance (rtol, atol) for a dtype, for values of order one. float32 atol
    covers rounding amplified by cancellation (1 - tanh^2 and 1 + tanh near -1)."""
    return (1e-5, 1e-5) if np.dtype(dtype) == np.float32 else (1e-11, 1e-12)


def adam_steps_like_torch(model, opt, ref, topt, batches):
    """Softmax cross-entropy training steps of a fastnn model and its torch twin on the
    same (x, y) batches, each loss compared (float64, rel 1e-10)."""
    import torch
    import torch.nn.functional as F
    from fastnn.losses import SoftmaxCrossEntropy
    crit = SoftmaxCrossEntropy()
    for x, y in batches:
        loss = crit(model(x), y)
        model.backward(crit.backward())
        opt.step()
        topt.zero_grad()
        tloss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)


def write_idx_digits(directory, n, images, labels):
    """The first n bundled digits as MNIST-format files in `directory`: uint8 (n, 8, 8)
    images, gzip-compressed, named `images`, and their uint8 labels, named `labels`."""
    X, y = fastnn.data.load_digits(images=True)
    imgs = X[:n, 0].astype(np.uint8)
    with gzip.open(os.path.join(directory, images), "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">III", *imgs.shape) + imgs.tobytes())
    with open(os.path.join(directory, labels), "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", n) + y[:n].astype(np.uint8).tobytes())

"""The kernel registry is per operation: an operation without a compiled twin runs its
NumPy reference on the "cython" backend while every other operation stays compiled, and
show_config() says which operations run NumPy code."""
import builtins
import importlib

import numpy as np
import pytest

import fastnn
from fastnn.core import backend as registry
from conftest import BACKENDS

pytestmark = pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")


def _twice(x, out, nthreads=1):
    """A NumPy-only kernel: out = 2 x."""
    np.multiply(x, 2, out=out)


@pytest.fixture
def numpy_only_op():
    registry.register_kernel("twice", _twice)
    yield "twice"
    del registry.KERNELS["twice"]
    registry.register_kernel("act_forward", *registry.KERNELS["act_forward"])


def test_a_numpy_only_operation_runs_beside_compiled_ones(numpy_only_op):
    from fastnn.kernels import _activations
    with fastnn.use_backend("cython"):
        k = registry.backend()
        assert k.twice is _twice
        assert k.act_forward is _activations.act_forward      # still compiled
        x = np.arange(4.0, dtype=np.float32)
        out = np.empty_like(x)
        k.twice(x, out)
        np.testing.assert_array_equal(out, 2 * x)
        y, _ = fastnn.ops.activation_forward(x - 2, "relu")
        np.testing.assert_array_equal(y, [0, 0, 0, 1])
    cfg = fastnn.show_config(print_=False)
    assert cfg["numpy_ops"] == ["twice"] and cfg["cython"] is True
    with fastnn.use_backend("numpy"):
        assert registry.backend().twice is _twice


def test_no_operation_runs_numpy_code_in_a_full_build():
    assert registry.numpy_ops() == []
    assert fastnn.show_config(print_=False)["numpy_ops"] == []


def test_a_family_that_failed_to_build_falls_back_alone(monkeypatch):
    """The compiled loss module missing: the losses run their NumPy references, the
    other families stay compiled, and the reason is reported."""
    real_import = importlib.import_module

    def without_losses(name, *args):
        if name == "fastnn.kernels._losses":
            raise ImportError("simulated: not built")
        return real_import(name, *args)
    monkeypatch.setattr(importlib, "import_module", without_losses)
    kernels, errors = registry._load_registry()
    loss_ops = set(importlib.import_module("fastnn.kernels.ref.losses").__all__)
    assert {k for k, (_, compiled) in kernels.items() if compiled is None} == loss_ops
    assert errors == ["fastnn.kernels._losses: simulated: not built"]
    assert kernels["dense_forward"][1] is not None

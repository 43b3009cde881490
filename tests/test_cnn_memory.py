"""Convolutional training steps allocate nothing once warm (compiled backend), and the
memory report covers them: the measured peak of a step against what it needs."""
import gc

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dense, Flatten, GlobalAvgPool2d,
                           MaxPool2d, ReLU, Residual, Sequential, Tanh)
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.tools import memory
from fastnn.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (fastnn.show_config(print_=False)["cython"] and memory.available()),
    reason="zero-allocation steps are a property of the compiled backend")


def _lenet(dtype):
    return Sequential(Conv2d(1, 4, 3, activation="relu", dtype=dtype, rng=0), MaxPool2d(2),
                      Conv2d(4, 6, 3, padding=1, dtype=dtype, rng=1), Tanh(),
                      AvgPool2d(2, padding=1), Flatten(), Dense(24, 5, dtype=dtype, rng=2))


def _resnet(dtype):
    block = Sequential(Conv2d(4, 4, 3, padding=1, bias=False, dtype=dtype, rng=1),
                       BatchNorm2d(4, dtype=dtype), ReLU(),
                       Conv2d(4, 4, 3, padding=1, bias=False, dtype=dtype, rng=2),
                       BatchNorm2d(4, dtype=dtype))
    return Sequential(Conv2d(1, 4, 3, padding=1, rng=0, dtype=dtype), Residual(block),
                      ReLU(), GlobalAvgPool2d(), Dense(4, 5, dtype=dtype, rng=3))


@pytest.mark.parametrize("make", [_lenet, _resnet], ids=["lenet", "resnet"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_warm_cnn_training_step_allocates_nothing(make, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 8, 8)).astype(dtype)
    y = rng.integers(0, 5, 8)
    with fastnn.use_backend("cython"):
        model = make(dtype)
        step = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()),
                       verbose=0).stepper(x, y)
        with memory.track_allocations() as first:
            step()
        step()
        gc.collect()
        gc.disable()
        try:
            with memory.track_allocations() as warm:
                step()
        finally:
            gc.enable()
    assert first.count > 0
    assert (warm.count, warm.nbytes) == (0, 0), warm


def test_cnn_steps_peak_within_1_25x_of_need():
    rows = memory.cnn_memory_rows()
    assert [r["case"] for r in rows] == ["lenet", "resblock"]
    for row in rows:
        assert row["step_allocations"] == 0, row
        assert row["need"] <= row["peak"] <= 1.25 * row["need"], row
    assert "| lenet |" in memory.memory_table(rows)

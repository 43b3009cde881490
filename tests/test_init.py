"""fastnn.init: shapes, dtypes, torch.nn.init's scales, rng handling and errors, and
fastnn.seed / the rng convention (fastnn.core.rng)."""
import math

import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import init

RANDOM = ["normal", "uniform", "xavier_uniform", "xavier_normal", "he_normal", "he_uniform",
          "lecun_normal"]
ALL = ["zeros", "ones"] + RANDOM


@pytest.mark.parametrize("name", ALL)
def test_shape_dtype_and_contiguity(name, dtype):
    f = getattr(init, name)
    w = f((7, 5), rng=0, dtype=dtype)
    assert w.shape == (7, 5) and w.dtype == dtype and w.flags.c_contiguous
    assert f((7, 5), 0).dtype == np.float32             # float32 by default, rng positional


@pytest.mark.parametrize("name", RANDOM)
def test_seeds_and_generators(name):
    f = getattr(init, name)
    np.testing.assert_array_equal(f((6, 4), rng=3), f((6, 4), rng=3))
    assert not np.array_equal(f((6, 4), rng=3), f((6, 4), rng=4))
    gen = np.random.default_rng(0)
    assert not np.array_equal(f((6, 4), rng=gen), f((6, 4), rng=gen))       # advances
    # the same seed gives the same weights in float32 and float64 (up to rounding)
    np.testing.assert_allclose(f((6, 4), rng=1, dtype=np.float32),
                               f((6, 4), rng=1, dtype=np.float64), rtol=1e-6)
    _random.seed(11)
    a = f((6, 4))
    _random.seed(11)
    np.testing.assert_array_equal(f((6, 4)), a)


def _std(fan):
    return math.sqrt(2.0 / fan)


SCALES = [  # (name, kwargs, shape, expected std)
    ("normal", {}, (400, 300), 0.01),
    ("normal", {"std": 0.5}, (400, 300), 0.5),
    ("xavier_normal", {}, (400, 200), math.sqrt(2 / 600)),
    ("xavier_normal", {"gain": 2.0}, (400, 200), 2 * math.sqrt(2 / 600)),
    ("he_normal", {}, (400, 200), math.sqrt(2 / 400)),
    ("he_normal", {"mode": "fan_out"}, (400, 200), math.sqrt(2 / 200)),
    ("he_normal", {"nonlinearity": "linear"}, (400, 200), math.sqrt(1 / 400)),
    ("he_normal", {"a": 1.0}, (400, 200), math.sqrt(1 / 400)),
    ("lecun_normal", {}, (400, 200), math.sqrt(1 / 400)),
    ("xavier_uniform", {}, (400, 200), math.sqrt(6 / 600) / math.sqrt(3)),
    ("he_uniform", {}, (400, 200), math.sqrt(6 / 400) / math.sqrt(3)),
    ("uniform", {"a": -2.0, "b": 2.0}, (400, 200), 4 / math.sqrt(12)),
    ("he_normal", {}, (20, 10, 3, 3), math.sqrt(2 / 90)),   # Conv2d's (F, C, KH, KW)
    ("he_normal", {"mode": "fan_out"}, (20, 10, 3, 3), math.sqrt(2 / 180)),
    ("xavier_normal", {}, (20, 10, 3, 3), math.sqrt(2 / 270)),
]


@pytest.mark.parametrize("name,kw,shape,std", SCALES)
def test_scales_follow_torch_formulas(name, kw, shape, std):
    w = getattr(init, name)(shape, rng=0, dtype=np.float64, **kw)
    assert abs(w.std() / std - 1) < 0.02
    assert abs(w.mean()) < 0.03 * std * 10


def test_uniform_bounds():
    w = init.xavier_uniform((30, 20), rng=0, dtype=np.float64)
    bound = math.sqrt(6 / 50)
    assert w.max() <= bound and w.min() >= -bound and w.max() > 0.9 * bound
    w = init.he_uniform((30, 20), rng=0, dtype=np.float64)
    assert np.abs(w).max() <= math.sqrt(2) * math.sqrt(3 / 30)
    w = init.uniform((1000,), rng=0)
    assert w.min() >= 0 and w.max() < 1
    w = init.uniform((1000,), rng=0, a=3, b=5)
    assert w.min() >= 3 and w.max() < 5


def test_zeros_ones():
    assert not init.zeros(3).any()
    assert (init.ones((2, 2), dtype=np.float64) == 1).all()


def test_calculate_gain_matches_torch_table():
    assert init.calculate_gain("linear") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError):
        init.calculate_gain("softmax")


@pytest.mark.parametrize("call,exc", [
    (lambda: init.he_normal((5,)), ValueError),
    (lambda: init.xavier_uniform(7), ValueError),
    (lambda: init.he_normal((5, 3), mode="fan_avg"), ValueError),
    (lambda: init.he_normal((0, 3)), ValueError),
    (lambda: init.normal((2, 2), std=-1), ValueError),
    (lambda: init.normal((2, 2), 0.5), TypeError),             # std must be a keyword
    (lambda: init.uniform((2, 2), a=1, b=0), ValueError),
    (lambda: init.zeros((2, -1)), ValueError),
    (lambda: init.zeros("abc"), ValueError),
    (lambda: init.ones((2, 2), dtype=np.int32), TypeError),
    (lambda: init.he_normal((2, 2), rng=1.5), TypeError),
    (lambda: init.he_normal((2, 2), rng=-3), ValueError),
    (lambda: init.he_normal((2, 2), nonlinearity="bogus"), ValueError),
    (lambda: init.get("bogus"), ValueError),
    (lambda: init.get(3), TypeError),
])
def test_errors(call, exc):
    with pytest.raises(exc):
        call()


def test_get_by_name_and_callable():
    assert init.get("he_normal") is init.he_normal
    assert init.get("kaiming_uniform") is init.he_uniform
    f = lambda shape, rng=None, dtype=np.float32: np.zeros(shape, dtype)  # noqa: E731
    assert init.get(f) is f


def test_seed_and_as_rng():
    _random.seed(5)
    a = _random.global_rng().random(3)
    _random.seed(5)
    np.testing.assert_array_equal(_random.as_rng(None).random(3), a)
    g = np.random.default_rng(0)
    assert _random.as_rng(g) is g
    np.testing.assert_array_equal(_random.as_rng(7).random(2), np.random.default_rng(7).random(2))
    with pytest.raises(TypeError):
        _random.seed(1.5)
    with pytest.raises(TypeError):
        _random.seed(True)
    with pytest.raises(ValueError):
        _random.seed(-1)
    with pytest.raises(TypeError):
        _random.as_rng(np.random.RandomState(0))

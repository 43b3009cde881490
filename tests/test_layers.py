"""Layers and the Module API, checked without torch: independent NumPy formulas,
float64 central-difference gradient checks of whole networks, copy/workspace semantics,
dtype policy and error messages."""
import numpy as np
import pytest
from scipy.special import erf

from fastnn.core import rng as _random
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, Flatten, LeakyReLU, Maxout,
                           Module, Parameter, PReLU, ReLU, Sequential, Sigmoid, SiLU, Swish,
                           Tanh)


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


# ------------------------------------------------------------ independent NumPy formulas
def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


REF_ACT = {
    "sigmoid": (Sigmoid(), _sig),
    "tanh": (Tanh(), np.tanh),
    "relu": (ReLU(), lambda z: np.maximum(z, 0)),
    "leaky_relu": (LeakyReLU(0.1), lambda z: np.where(z > 0, z, 0.1 * z)),
    "elu": (ELU(0.5), lambda z: np.where(z > 0, z, 0.5 * (np.exp(z) - 1))),
    "gelu": (GELU(), lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2)))),
    "gelu_tanh": (GELU("tanh"),
                  lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))),
    "silu": (SiLU(), lambda z: z * _sig(z)),
    "swish": (Swish(2.0), lambda z: z * _sig(2.0 * z)),
}


@pytest.mark.parametrize("name", sorted(REF_ACT))
def test_activation_forward_matches_formula(name, backend, dtype):
    layer, f = REF_ACT[name]
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(dtype) * 3
    y = layer(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, f(x.astype(np.float64)), rtol=rtol_for(dtype),
                               atol=rtol_for(dtype))


def test_dense_forward_matches_formula(backend, dtype):
    rng = np.random.default_rng(1)
    layer = Dense(4, 3, activation="tanh", dtype=dtype, rng=0)
    layer.bias.data = rng.standard_normal(3)
    x = rng.standard_normal((6, 4)).astype(dtype)
    expected = np.tanh(x.astype(np.float64) @ layer.weight.data + layer.bias.data)
    np.testing.assert_allclose(layer(x), expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    assert layer.weight.shape == (4, 3) and layer.bias.shape == (3,)


def test_maxout_forward_and_ties(backend):
    layer = Maxout(2, 2, pieces=3, dtype=np.float64, rng=0)
    x = np.array([[1.0, -2.0], [0.5, 0.25]])
    z = x @ layer.weight.data + layer.bias.data
    np.testing.assert_allclose(layer(x), z.reshape(2, 2, 3).max(axis=2), rtol=1e-12)
    # ties: all pieces equal -> the gradient goes to the first piece only
    layer.weight.data = np.zeros((2, 6))
    layer(x)
    layer.backward(np.ones((2, 2)))
    np.testing.assert_array_equal(layer.bias.grad, [2, 0, 0, 2, 0, 0])


def test_prelu_shared_and_per_channel(backend):
    x = np.array([[-2.0, 1.0, -1.0]])
    np.testing.assert_allclose(PReLU(dtype=np.float64)(x), [[-0.5, 1.0, -0.25]])
    layer = PReLU(3, init=0.1, dtype=np.float64)
    layer.alpha.data = [0.1, 0.2, 0.3]
    np.testing.assert_allclose(layer(x), [[-0.2, 1.0, -0.3]])
    layer.backward(np.ones((1, 3)))
    np.testing.assert_allclose(layer.alpha.grad, [-2.0, 0.0, -1.0])


def test_batchnorm_train_and_eval_formulas(backend, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((10, 3)) * 2 + 5).astype(dtype)
    bn = BatchNorm1d(3, momentum=0.3, dtype=dtype)
    y = bn(x)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(0), x64.var(0)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-5), rtol=rtol_for(dtype),
                               atol=rtol_for(dtype))
    np.testing.assert_allclose(bn.running_mean, 0.3 * mu, rtol=rtol_for(dtype))
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * var * 10 / 9, rtol=rtol_for(dtype))
    bn.eval()
    expected = (x64 - bn.running_mean) / np.sqrt(bn.running_var.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    assert bn(x[:1]).shape == (1, 3)          # eval accepts a batch of one
    wide = BatchNorm1d(3, eps=0.5, dtype=dtype)        # eps is honoured
    np.testing.assert_allclose(wide(x), (x64 - mu) / np.sqrt(var + 0.5), rtol=rtol_for(dtype),
                               atol=rtol_for(dtype))


def test_flatten_shapes(backend):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = Flatten()
    y = f(x)
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    assert f.backward(np.ones((2, 12), np.float32)).shape == (2, 3, 4)


# --------------------------------------------------------------------- dropout
def test_dropout_statistics_and_mask(backend):
    d = Dropout(0.3, rng=0)
    x = np.ones((200, 100), np.float32)
    y = d(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    dy = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    dx = d.backward(dy)
    np.testing.assert_allclose(dx, dy * y, rtol=1e-6)          # same mask and scale
    d.eval()
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(dy), dy)


def test_dropout_edge_probabilities_and_seeding(backend):
    x = np.ones((4, 5), np.float32)
    np.testing.assert_array_equal(Dropout(0.0)(x), x)
    np.testing.assert_array_equal(Dropout(1.0, rng=0)(x), np.zeros_like(x))
    a, b = Dropout(0.5, rng=3), Dropout(0.5, rng=3)
    np.testing.assert_array_equal(a(x), b(x))
    assert not np.array_equal(a(np.ones((50, 50))), a(np.ones((50, 50))))    # advances
    _random.seed(4)
    first = Dropout(0.5)(np.ones((8, 8)))
    _random.seed(4)
    np.testing.assert_array_equal(Dropout(0.5)(np.ones((8, 8))), first)
    with pytest.raises(ValueError, match="p"):
        Dropout(1.5)
    with pytest.raises(TypeError, match="rng"):
        Dropout(0.5, rng="seed")


# ---------------------------------------------------------- float64 gradient checks
def _num_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def _gradcheck(model, x, reset=lambda: None, tol=1e-6):
    """Check dx and every parameter grad of sum(model(x) * r) by central differences."""
    rng = np.random.default_rng(0)
    reset()
    y = model(x)
    r = rng.standard_normal(y.shape)
    dx = model.backward(r)
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}

    def loss():
        reset()
        return float(np.sum(model(x) * r))

    num_dx = _num_grad(loss, x)
    np.testing.assert_allclose(dx, num_dx, rtol=tol, atol=tol, err_msg="dx")
    for name, p in model.named_parameters():
        num = _num_grad(loss, p.data)
        np.testing.assert_allclose(grads[name], num, rtol=tol, atol=tol, err_msg=name)


def _model_all_layers():
    f64 = np.float64
    return Sequential(
        Flatten(),
        Dense(6, 8, activation="tanh", dtype=f64, rng=1),
        BatchNorm1d(8, dtype=f64),
        PReLU(8, dtype=f64),
        Maxout(8, 6, pieces=3, dtype=f64, rng=2),
        Dropout(0.25, rng=0),
        Dense(6, 6, activation="gelu", dtype=f64, rng=3),
        Sigmoid(), Dense(6, 6, activation="elu", activation_kw={"alpha": 0.5}, dtype=f64, rng=4),
        Tanh(), Dense(6, 6, activation="swish", dtype=f64, rng=5),
        ReLU(), Dense(6, 6, activation="leaky_relu", dtype=f64, rng=6),
        LeakyReLU(0.2), Dense(6, 6, activation="sigmoid", dtype=f64, rng=7),
        ELU(), GELU("tanh"), SiLU(), Swish(1.3), PReLU(dtype=f64),
        Dense(6, 3, bias=False, activation="silu", dtype=f64, rng=8),
    )


def test_gradcheck_network_with_every_layer(backend):
    model = _model_all_layers()
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    drop = model[5]

    def reset():                       # the same dropout mask on every evaluation
        drop._rng = np.random.default_rng(123)
    _gradcheck(model, x, reset)


def test_gradcheck_eval_mode_batchnorm_and_relu_dense(backend):
    f64 = np.float64
    model = Sequential(Dense(3, 5, activation="relu", dtype=f64, rng=0),
                       BatchNorm1d(5, affine=False, dtype=f64), Dense(5, 2, dtype=f64, rng=1),
                       BatchNorm1d(2, dtype=f64))
    model(np.random.default_rng(5).standard_normal((8, 3)))     # nontrivial running stats
    model.eval()
    _gradcheck(model, np.random.default_rng(2).standard_normal((4, 3)) + 0.3)


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "tanh", "sigmoid"])
def test_gradcheck_single_dense(activation, backend):
    layer = Dense(4, 3, activation=activation, dtype=np.float64, rng=0)
    layer.bias.data = [0.1, -0.2, 0.3]
    _gradcheck(layer, np.random.default_rng(3).standard_normal((5, 4)))


# ------------------------------------------------------------ Module API and semantics
def test_parameters_names_and_state_dict_keys():
    model = Sequential(Dense(3, 4, rng=0), BatchNorm1d(4), PReLU(), Dense(4, 2, bias=False, rng=1))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.gamma", "1.beta", "2.alpha", "3.weight"]
    assert model.parameters()[0] is model[0].weight
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.gamma", "1.beta",
                                        "1.running_mean", "1.running_var", "2.alpha", "3.weight"]
    assert model[0].weight.name == "weight"
    assert len(model) == 4 and isinstance(model[-1], Dense)
    assert len(model[1:3]) == 2 and model[1:3][0] is model[1]
    assert [type(m).__name__ for m in model] == ["Dense", "BatchNorm1d", "PReLU", "Dense"]
    with pytest.raises(IndexError):
        model[4]


def test_state_dict_round_trip_identical_predictions(backend):
    a = Sequential(Dense(3, 6, activation="relu", rng=0), BatchNorm1d(6), Maxout(6, 2, rng=1))
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    a(x)                                  # move the running stats
    b = Sequential(Dense(3, 6, activation="relu", rng=5), BatchNorm1d(6), Maxout(6, 2, rng=6))
    sd = a.state_dict()
    b.load_state_dict(sd)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x), b(x))
    sd["0.weight"][...] = 0               # a copy: the model is not affected
    assert a[0].weight.data.any()


def test_load_state_dict_rejects_without_side_effects():
    model = Sequential(Dense(3, 4, rng=0), BatchNorm1d(4))
    before = model.state_dict()
    bad_shape = dict(before)
    bad_shape["0.bias"] = np.zeros(5)
    bad_shape["0.weight"] = np.ones((3, 4))
    with pytest.raises(ValueError, match="0.bias"):
        model.load_state_dict(bad_shape)
    missing = dict(before)
    del missing["1.running_var"]
    with pytest.raises(ValueError, match="running_var"):
        model.load_state_dict(missing)
    extra = dict(before, **{"2.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="2.weight"):
        model.load_state_dict(extra)
    objs = dict(before)
    objs["0.bias"] = np.array([None] * 4, dtype=object)
    with pytest.raises(TypeError):
        model.load_state_dict(objs)
    ints = dict(before)
    ints["0.bias"] = np.zeros(4, np.int64)
    with pytest.raises(TypeError, match="float"):
        model.load_state_dict(ints)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model.load_state_dict({"0.bias": np.ones(4)}, strict=False)       # partial load
    np.testing.assert_array_equal(model[0].bias.data, np.ones(4, np.float32))
    np.testing.assert_array_equal(model[0].weight.data, before["0.weight"])


def test_outputs_are_fresh_and_internal_path_reuses(backend):
    model = Sequential(Dense(3, 4, rng=0), ReLU())
    x1 = np.ones((2, 3), np.float32)
    y1 = model(x1)
    y1_copy = y1.copy()
    y2 = model(2 * x1)
    np.testing.assert_array_equal(y1, y1_copy)             # not overwritten
    assert not np.shares_memory(y1, y2)
    dy = np.ones_like(y2)
    d1 = model.backward(dy)
    d1_copy = d1.copy()
    model.backward(3 * dy)
    np.testing.assert_array_equal(d1, d1_copy)
    # the internal path hands out the workspace arrays themselves (no allocation)
    x = np.ones((2, 3), np.float32)
    assert model._forward(x) is model._forward(x)


def test_backward_uses_cached_input_even_if_caller_mutates_it(backend):
    layer = Dense(3, 2, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    layer(x)
    layer.backward(np.ones((4, 2), np.float32))
    expected = layer.weight.grad.copy()
    layer(x)
    x[...] = 0
    layer.backward(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(layer.weight.grad, expected)


def test_grads_are_overwritten_in_place_not_accumulated(backend):
    model = Sequential(Dense(3, 4, rng=0), BatchNorm1d(4), PReLU(), Dense(4, 2, rng=1))
    grads = [p.grad for p in model.parameters()]
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    dy = np.ones((5, 2), np.float32)
    model(x)
    model.backward(dy)
    first = [g.copy() for g in grads]
    model(x)
    model.backward(dy)
    for p, g, f in zip(model.parameters(), grads, first):
        assert p.grad is g                      # the same array, written in place
        np.testing.assert_allclose(g, f, rtol=1e-6)


def test_need_dx_false_skips_input_gradient(backend):
    model = Sequential(Dense(3, 4, rng=0), Tanh(), Dense(4, 2, rng=1))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    dy = np.ones((5, 2), np.float32)
    model(x)
    assert model.backward(dy).shape == (5, 3)          # the public path returns dx
    g = model[0].weight.grad.copy()
    model._forward(x)
    assert model._backward(dy, need_dx=False) is None
    np.testing.assert_allclose(model[0].weight.grad, g, rtol=1e-6)


def test_train_eval_propagate():
    model = Sequential(Dense(2, 2, rng=0), Sequential(Dropout(0.5), BatchNorm1d(2)))
    assert model.training and model[1][0].training
    assert model.eval() is model
    assert not model[1][1].training
    model.train()
    assert model[1][1].training


# ---------------------------------------------------------------------- dtype policy
def test_model_dtype_and_input_conversion(backend):
    model = Sequential(Dense(3, 2, rng=0), ReLU())
    assert model.dtype == np.float32
    y = model(np.ones((2, 3), np.float64))
    assert y.dtype == np.float32
    assert model(np.ones((2, 3), np.float16)).dtype == np.float32
    assert model([[1.0, 2.0, 3.0]]).shape == (1, 2)
    m64 = Sequential(Dense(3, 2, dtype=np.float64, rng=0))
    assert m64(np.ones((2, 3), np.float32)).dtype == np.float64
    assert m64.backward(np.ones((2, 2), np.float32)).dtype == np.float64
    assert ReLU()(np.ones(3, np.float64)).dtype == np.float64     # parameterless: keeps it


@pytest.mark.parametrize("bad", [np.ones((2, 3), np.int64), np.ones((2, 3), bool),
                                 np.ones((2, 3), np.complex128),
                                 np.array([[None] * 3] * 2, dtype=object), "abc"],
                         ids=["int", "bool", "complex", "object", "str"])
def test_non_float_inputs_raise_type_error(bad):
    model = Sequential(Dense(3, 2, rng=0))
    with pytest.raises(TypeError, match="float"):
        model(bad)
    model(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="float"):
        model.backward(np.ones((2, 2), np.int32))


def test_mixed_dtypes_rejected_and_to_converts(backend):
    with pytest.raises(TypeError, match="one dtype"):
        Sequential(Dense(3, 2, rng=0), BatchNorm1d(2, dtype=np.float64))
    model = Sequential(Dense(3, 2, rng=0), BatchNorm1d(2)).to(np.float64)
    assert model.dtype == np.float64
    assert model[0].weight.grad.dtype == np.float64 and model[1].running_var.dtype == np.float64
    assert model(np.ones((2, 3), np.float32)).dtype == np.float64
    with pytest.raises(TypeError):
        Dense(2, 2, dtype=np.int32)


def test_error_messages_name_layer_expected_and_given(backend):
    model = Sequential(Dense(3, 4, rng=0), ReLU(), Dense(5, 2, rng=1))
    with pytest.raises(ValueError,
                       match=r"Sequential\[2\] Dense\(in_features=5.*\(N, 5\).*\(2, 4\)"):
        model(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"Sequential\[0\] Dense.*\(N, 3\).*\(2, 7\)"):
        model(np.ones((2, 7), np.float32))
    with pytest.raises(ValueError, match=r"Dense.*\(N, 3\).*\(3,\)"):
        Dense(3, 4, rng=0)(np.ones(3, np.float32))
    with pytest.raises(RuntimeError, match="Dense.*backward.*before forward"):
        Dense(3, 4, rng=0).backward(np.ones((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        Sequential(ReLU()).backward(np.ones((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="BatchNorm1d.*before forward"):
        BatchNorm1d(3)._backward(np.ones((2, 3), np.float32))
    good = Sequential(Dense(3, 2, rng=0))
    good(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"dout.*\(4, 2\).*\(4, 3\)"):
        good.backward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="BatchNorm1d.*more than 1 value per channel"):
        BatchNorm1d(3)(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*\(N, 3\)"):
        BatchNorm1d(3)(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"PReLU.*\(N, 4\)"):
        PReLU(4)(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        Flatten()(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="ReLU.*1 to 4"):
        ReLU()(np.ones((1, 1, 1, 1, 2), np.float32))


@pytest.mark.parametrize("ctor", [
    lambda: Dense(0, 3), lambda: Dense(3.0, 2), lambda: Dense(3, 2, bias="yes"),
    lambda: Dense(3, 2, activation="softmax"), lambda: Dense(3, 2, init="bogus"),
    lambda: Dense(3, 2, activation="elu", activation_kw={"beta": 1.0}),
    lambda: Maxout(3, 2, pieces=0), lambda: BatchNorm1d(3, eps=0.0),
    lambda: BatchNorm1d(3, momentum=2.0), lambda: GELU("fast"), lambda: LeakyReLU("a"),
    lambda: PReLU(0), lambda: Sequential(Dense(2, 2), "relu"), lambda: Dense(2, 2, rng=-1),
])
def test_bad_constructor_arguments(ctor):
    with pytest.raises((TypeError, ValueError)):
        ctor()


def test_dense_init_names_callables_and_rng():
    a = Dense(50, 40, rng=0)
    b = Dense(50, 40, rng=0)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert abs(a.weight.data.std() - np.sqrt(2 / 50)) < 0.02
    assert not a.bias.data.any()
    assert not Dense(3, 2, init="zeros").weight.data.any()
    calls = []

    def my_init(shape, rng=None, dtype=np.float32):
        calls.append(shape)
        return np.full(shape, 0.5, dtype)
    np.testing.assert_array_equal(Dense(3, 2, init=my_init).weight.data, 0.5)
    assert calls == [(3, 2)]
    with pytest.raises(ValueError, match="init"):
        Dense(3, 2, init=lambda shape, rng=None, dtype=None: np.zeros(4))
    _random.seed(9)
    w1 = Dense(4, 4).weight.data.copy()
    _random.seed(9)
    np.testing.assert_array_equal(Dense(4, 4).weight.data, w1)


def test_parameter_assignment_keeps_arrays():
    layer = Dense(2, 3, rng=0)
    w, g = layer.weight.data, layer.weight.grad
    layer.weight.data = np.ones((2, 3))
    layer.weight.grad = np.full((2, 3), 2.0)
    assert layer.weight.data is w and layer.weight.grad is g
    assert w.dtype == np.float32 and (w == 1).all() and (g == 2).all()
    with pytest.raises(ValueError, match="shape"):
        layer.weight.data = np.ones((3, 2))
    with pytest.raises(TypeError):
        layer.weight = np.ones((2, 3))
    with pytest.raises(TypeError):
        Parameter(np.ones(3, np.int64))


def test_user_defined_module_inside_sequential(backend):
    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.s = Parameter(np.array([2.0], np.float32))

        def forward(self, x):
            self.x = np.asarray(x, np.float32)
            return self.x * self.s.data

        def backward(self, dy):
            self.s.grad = np.array([np.sum(dy * self.x)], np.float32)
            return dy * self.s.data

    model = Sequential(Dense(2, 2, rng=0), Scale())
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.s"]
    x = np.ones((3, 2), np.float32)
    y = model(x)
    np.testing.assert_allclose(y, 2 * Dense(2, 2, rng=0)(x), rtol=1e-6)
    assert model.backward(np.ones_like(y)).shape == (3, 2)
    assert model[1].s.grad[0] != 0


def test_repr_is_informative():
    text = repr(Sequential(Dense(2, 3, activation="relu"), Dropout(0.2)))
    assert "Dense(in_features=2, out_features=3" in text and "Dropout(p=0.2)" in text


# ------------------------------------------------- Dense activation assigned later
def _leaky(z, slope):
    return np.where(z > 0, z, slope * z)


def test_dense_activation_assignment_changes_the_output_and_survives_save(backend, tmp_path):
    """Before, `layer.activation = "relu"` changed repr and the saved config but not
    the output, so save + load gave a model computing something else."""
    import fastnn
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    model = Sequential(Dense(3, 4, rng=0), Dense(4, 2, rng=1))
    z = x @ model[0].weight.data
    model(x), model(x)                               # recorded and replayed
    model[0].activation = "relu"
    np.testing.assert_allclose(model(x), np.maximum(z, 0) @ model[1].weight.data,
                               rtol=1e-5, atol=1e-6)
    model[0].activation = "leaky_relu"
    model[0].activation_kw = {"negative_slope": 0.5}
    want = _leaky(z, 0.5) @ model[1].weight.data
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    fastnn.save(model, tmp_path / "m.npz")
    np.testing.assert_array_equal(fastnn.load(tmp_path / "m.npz")(x), model(x))
    # the dict read back is a copy: changing it changes nothing
    model[0].activation_kw["negative_slope"] = 0.9
    assert model[0].activation_kw == {"negative_slope": 0.5}
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    model[0].activation_kw = None                    # keywords first: they fit leaky_relu
    model[0].activation = None
    np.testing.assert_allclose(model(x), z @ model[1].weight.data, rtol=1e-5, atol=1e-6)


def test_dense_activation_assignment_is_validated_and_changes_nothing_on_error():
    layer = Dense(3, 4, activation="leaky_relu", activation_kw={"negative_slope": 0.2}, rng=0)
    x = np.ones((2, 3), np.float32)
    before = layer(x)
    with pytest.raises(ValueError, match=r"Dense\(in_features=3.*unknown activation 'nope'"):
        layer.activation = "nope"
    with pytest.raises(TypeError, match="activation_kw must be None or a dict, got 5"):
        layer.activation_kw = 5
    with pytest.raises(TypeError, match="'relu' got unexpected keyword.*negative_slope"):
        layer.activation = "relu"                     # the keywords are leaky_relu's
    assert layer.activation == "leaky_relu"
    assert layer.activation_kw == {"negative_slope": 0.2}
    np.testing.assert_array_equal(layer(x), before)

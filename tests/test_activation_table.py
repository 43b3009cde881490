"""The activation table is the one declaration of every activation: the layer classes,
`fastnn.ops`, Dense's fused activations, `fastnn.load`, the CLI's names, the compiled
dispatch and the diagnostics' watch kinds all come from its rows, and its parameter
constraints are enforced at every door."""
import inspect
import io
import json
import math
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.kernels import activation_table as table
from fastnn.kernels import ref
from fastnn.tools.cli import build_mlp
from conftest import BACKENDS

LAYER_ROWS = [row for row in table.ACTIVATIONS.values() if row.layer is not None]
PARAM_ROWS = [row for row in LAYER_ROWS if row.param is not None
              and isinstance(row.param.default, float)]
BAD_VALUES = [(math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
              ("0.1", TypeError), (True, TypeError), (None, TypeError)]


@pytest.mark.parametrize("row", LAYER_ROWS, ids=lambda r: r.name)
def test_every_row_has_its_layer(row):
    cls = getattr(fastnn.layers, row.layer)
    assert cls is getattr(fastnn, row.layer) and cls.row is row
    assert cls.__doc__ == row.doc and cls.recordable
    params = list(inspect.signature(cls).parameters.values())
    if row.param is None:
        assert params == []
        assert cls()._config() == {}
    else:
        assert [(p.name, p.default) for p in params] == [(row.param.name, row.param.default)]
        layer = cls()
        assert layer._config() == {row.param.name: row.param.default}
        assert repr(layer) == "%s(%s=%r)" % (row.layer, row.param.name, row.param.default)
    with pytest.raises(TypeError):
        cls(1.0, 2.0)
    with pytest.raises(TypeError):
        cls(bogus=1)


@pytest.mark.parametrize("row", LAYER_ROWS, ids=lambda r: r.name)
def test_layers_compute_their_row(row, backend):
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(4, 6)
    want, _ = ops.activation_forward(x, row.name)
    np.testing.assert_array_equal(getattr(fastnn, row.layer)()(x), want)


@pytest.mark.parametrize("row", PARAM_ROWS, ids=lambda r: r.name)
@pytest.mark.parametrize("value,exc", BAD_VALUES, ids=lambda v: repr(v))
def test_parameters_checked_at_every_door(row, value, exc, backend):
    """A bad parameter value is refused by the layer, by ops, by Dense and by a fused
    dense_forward, with the same exception type."""
    name = row.param.name
    x = np.ones((2, 3), np.float32)
    with pytest.raises(exc, match=name):
        getattr(fastnn, row.layer)(value)
    with pytest.raises(exc, match=name):
        ops.activation_forward(x, row.name, **{name: value})
    with pytest.raises(exc, match=name):
        fastnn.Dense(3, 2, activation=row.name, activation_kw={name: value})
    with pytest.raises(exc, match=name):
        ops.dense_forward(x, np.ones((3, 2), np.float32), None, activation=row.name,
                          activation_kw={name: value})


def test_gelu_approximate_is_an_option():
    with pytest.raises(ValueError, match="approximate"):
        fastnn.GELU("exact")
    with pytest.raises(ValueError, match="approximate"):
        ops.activation_forward(np.ones(3, np.float32), "gelu", approximate="fast")
    assert table.resolve("gelu", {"approximate": "tanh"}, "t") == (table.CODES["gelu_tanh"], 0.0)
    assert table.resolve("gelu", None, "t") == (table.CODES["gelu"], 0.0)


def test_unknown_names_and_keywords():
    with pytest.raises(ValueError, match="unknown activation 'bogus'"):
        table.resolve("bogus", None, "t")
    with pytest.raises(ValueError, match="unknown activation"):
        table.resolve(3, None, "t")
    with pytest.raises(TypeError, match="unexpected keyword"):
        table.resolve("relu", {"negative_slope": 0.1}, "t")
    with pytest.raises(TypeError, match="must be a dict"):
        table.resolve("relu", [("a", 1)], "t")


def _rewrite_architecture(path, old, new):
    """Replace text in the JSON architecture of a saved model (as a hostile file would)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    arrays = {n[:-4]: np.load(io.BytesIO(b)) for n, b in members.items()}
    text = arrays["__fastnn_model__"].tobytes().decode().replace(old, new)
    arrays["__fastnn_model__"] = np.frombuffer(text.encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("act,kw", [("leaky_relu", "negative_slope"), ("elu", "alpha"),
                                    ("swish", "beta")])
@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_load_refuses_bad_fused_activation_parameters(act, kw, bad, tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(fastnn.Sequential(fastnn.Dense(3, 2, activation=act,
                                               activation_kw={kw: 0.375}, rng=0)), path)
    _rewrite_architecture(path, "0.375", bad)
    assert bad in json.dumps(json.loads(np.load(path)["__fastnn_model__"].tobytes()))
    with pytest.raises(ValueError, match=kw):
        fastnn.load(path)


def test_cli_names_are_the_tables():
    assert "swish" in table.LAYER_NAMES and "identity" not in table.LAYER_NAMES
    model = build_mlp("8-bn-swish,4-leaky_relu-elu,3", 5)
    names = [type(m).__name__ for m in model]
    assert names == ["Dense", "BatchNorm1d", "Swish", "Dense", "ELU", "Dense"]
    assert model[3].activation == "leaky_relu"


def test_watch_kinds_come_from_the_rows():
    kinds = {row.layer: getattr(fastnn, row.layer)().watch_kind() for row in LAYER_ROWS}
    assert kinds == {row.layer: row.watch for row in LAYER_ROWS}
    assert kinds["ReLU"] == "relu" and kinds["Sigmoid"] == "sigmoid" and kinds["GELU"] is None
    assert fastnn.PReLU().watch_kind() is None


def test_layer_facts_of_activations_and_prelu():
    relu, prelu = fastnn.ReLU(), fastnn.PReLU(5)
    assert relu.output_shape((7, 5)) == (7, 5) and prelu.output_shape((7, 5)) == (7, 5)
    assert relu.train_memory((7, 5), 4, first=False) == (140, 140)
    assert relu.train_memory((7, 5), 8, first=True) == (280, 0)
    assert prelu.train_memory((7, 5), 4, first=False) == (140, 140)
    assert not fastnn.PReLU.recordable
    with pytest.raises(ValueError, match="ReLU"):
        relu.output_shape((1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match="PReLU"):
        prelu.output_shape((7, 4))


def test_numpy_bodies_follow_the_code_order():
    """ref dispatches by position: every code's NumPy body is its row's."""
    x = np.linspace(-3, 3, 13)
    for code, kernel in enumerate(table.KERNELS):
        got, want = np.empty_like(x), np.empty_like(x)
        ref.act_forward(x, got, code, 0.5)
        kernel.forward(x, x.dtype.type(0.5), want)
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")
def test_compiled_enum_is_the_table():
    from fastnn.kernels import _activations
    assert [m.name for m in _activations.ActCode] == (
        ["ACT_" + k.name.upper() for k in table.KERNELS] + ["ACT_NUM_CODES"])
    assert [int(m) for m in _activations.ActCode] == list(range(len(table.KERNELS) + 1))

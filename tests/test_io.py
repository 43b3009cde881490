"""fastnn.io.save / load: round trips, the file format, atomic writes and rejection of
bad files (always ValueError, never unpickling, no side effects)."""
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import io
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, Flatten, LeakyReLU, Maxout,
                           Module, Parameter, PReLU, ReLU, Sequential, Sigmoid, SiLU, Swish,
                           Tanh)


def every_layer_model(dtype=np.float32):
    return Sequential(
        Flatten(), Dense(6, 8, activation="leaky_relu", activation_kw={"negative_slope": 0.2},
                         dtype=dtype, rng=0),
        BatchNorm1d(8, eps=1e-3, momentum=0.2, dtype=dtype), PReLU(8, init=0.1, dtype=dtype),
        Maxout(8, 5, pieces=3, dtype=dtype, rng=1), Dropout(0.3, rng=2),
        Sequential(Dense(5, 5, bias=False, init="xavier_uniform", dtype=dtype, rng=3), Sigmoid()),
        Tanh(), ReLU(), LeakyReLU(0.3), ELU(0.7), GELU("tanh"), SiLU(), Swish(1.5),
        BatchNorm1d(5, affine=False, dtype=dtype), Dense(5, 3, dtype=dtype, rng=4))


@pytest.fixture
def trained(tmp_path):
    model = every_layer_model()
    model(np.random.default_rng(0).standard_normal((10, 2, 3)))    # move running stats
    model.eval()
    path = tmp_path / "model.npz"
    io.save(model, path)
    return model, path


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_round_trip_identical_predictions(dt, tmp_path, backend):
    model = every_layer_model(dt)
    x = np.random.default_rng(0).standard_normal((10, 2, 3))
    model(x)
    model.eval()
    path = str(tmp_path / "m.npz")
    io.save(model, path)
    loaded = io.load(path)
    assert isinstance(loaded, Sequential) and loaded.dtype == dt
    assert repr(loaded) == repr(model)
    loaded.eval()
    np.testing.assert_array_equal(loaded(x), model(x))
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_single_layer_and_pathlike(tmp_path):
    layer = Dense(3, 2, activation="gelu", rng=0)
    io.save(layer, tmp_path / "d.npz")
    loaded = io.load(pathlib.Path(tmp_path / "d.npz"))
    assert type(loaded) is Dense and loaded.activation == "gelu" and loaded.init == "he_normal"
    np.testing.assert_array_equal(loaded.weight.data, layer.weight.data)


def test_file_format_is_plain_npz_with_json(trained):
    model, path = trained
    with np.load(path, allow_pickle=False) as f:
        names = set(f.files)
        arch = json.loads(f[io.ARCH_KEY].tobytes().decode("utf-8"))
        assert f[io.ARCH_KEY].dtype == np.uint8
    assert names == set(model.state_dict()) | {io.ARCH_KEY}
    assert arch["format"] == "fastnn.model" and arch["version"] == 1
    layers = arch["model"]["layers"]
    assert layers[1] == {"type": "Dense", "args": {
        "in_features": 6, "out_features": 8, "bias": True, "activation": "leaky_relu",
        "activation_kw": {"negative_slope": 0.2}, "init": "he_normal", "dtype": "float32"}}
    assert layers[6]["type"] == "Sequential" and len(layers[6]["layers"]) == 2


def test_exact_path_used_and_no_temp_files_left(tmp_path):
    io.save(Dense(2, 2, rng=0), tmp_path / "weights")          # no suffix added
    assert os.listdir(tmp_path) == ["weights"]
    assert type(io.load(tmp_path / "weights")) is Dense


def test_failed_save_keeps_existing_file(trained, monkeypatch):
    model, path = trained
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(io.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        io.save(Dense(4, 4, rng=1), path)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]                # temp file cleaned up


def test_save_rejects_non_builtin_modules(tmp_path):
    class Mine(Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="Mine"):
        io.save(Sequential(Dense(2, 2), Mine()), tmp_path / "x.npz")
    with pytest.raises(TypeError):
        io.save("model", tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ rejected files
def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _arch(path):
    return json.loads(_arrays(path)[io.ARCH_KEY].tobytes().decode("utf-8"))


def _write(path, arrays, arch=None):
    if arch is not None:
        arrays = dict(arrays)
        arrays[io.ARCH_KEY] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
    with open(path, "wb") as f:            # a file object: np.savez adds no suffix
        np.savez(f, **arrays)


def _mutate_arch(fn):
    def make(src, dst):
        arch = _arch(src)
        fn(arch)
        _write(dst, _arrays(src), arch)
    return make


def _mutate_arrays(fn):
    def make(src, dst):
        arrays = _arrays(src)
        fn(arrays)
        _write(dst, arrays)
    return make


def _raw(data):
    def make(src, dst):
        dst.write_bytes(data(src) if callable(data) else data)
    return make


def _set(d, *path_and_value):
    *keys, last, value = path_and_value
    for k in keys:
        d = d[k]
    d[last] = value


def _write_npy(dst):
    with open(dst, "wb") as f:
        np.save(f, np.zeros(3))


def _object_array(arrays):
    arrays["0.bias"] = np.array([None, 1], dtype=object)


BAD = {
    "text": _raw(b"definitely not a zip file\n"),
    "empty": _raw(b""),
    "npy": lambda src, dst: _write_npy(dst),
    "truncated": _raw(lambda src: src.read_bytes()[: len(src.read_bytes()) // 2]),
    "truncated-tail": _raw(lambda src: src.read_bytes()[:-30]),
    "corrupt-member": _raw(lambda src: src.read_bytes().replace(b"NUMPY", b"NUMPX", 1)),
    "no-arch": _mutate_arrays(lambda a: a.pop(io.ARCH_KEY)),
    "arch-not-json": _mutate_arrays(lambda a: a.__setitem__(
        io.ARCH_KEY, np.frombuffer(b"{not json", np.uint8))),
    "arch-not-utf8": _mutate_arrays(lambda a: a.__setitem__(
        io.ARCH_KEY, np.frombuffer(b"\xff\xfe", np.uint8))),
    "arch-float-array": _mutate_arrays(lambda a: a.__setitem__(io.ARCH_KEY, np.zeros(3))),
    "arch-list": _mutate_arch(lambda a: a.clear()),
    "bad-format": _mutate_arch(lambda a: _set(a, "format", "pickle")),
    "bad-version": _mutate_arch(lambda a: _set(a, "version", 99)),
    "unknown-layer": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "type", "Conv2d")),
    "layer-not-dict": _mutate_arch(lambda a: _set(a, "model", "layers", 1, [1, 2])),
    "args-not-dict": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args", [6, 8])),
    "str-int": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args", "in_features", "6")),
    "float-int": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args", "out_features", 8.0)),
    "bool-int": _mutate_arch(lambda a: _set(a, "model", "layers", 4, "args", "pieces", True)),
    "bad-dtype": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args", "dtype", "int32")),
    "bad-activation": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args",
                                                  "activation", "os.system")),
    "bad-init": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args", "init", 7)),
    "unknown-arg": _mutate_arch(lambda a: _set(a, "model", "layers", 5, "args", "seed", 1)),
    "bad-p": _mutate_arch(lambda a: _set(a, "model", "layers", 5, "args", "p", 2.0)),
    "extra-node-key": _mutate_arch(lambda a: _set(a, "model", "layers", 0, "code", "x")),
    "layers-not-list": _mutate_arch(lambda a: _set(a, "model", "layers", {"0": 1})),
    "sequential-args": _mutate_arch(lambda a: _set(a, "model", "args", "n", 3)),
    "huge-layer": _mutate_arch(lambda a: _set(a, "model", "layers", 1, "args",
                                              "in_features", 10 ** 6)),
    "mixed-dtypes": _mutate_arch(lambda a: _set(a, "model", "layers", 3, "args", "dtype",
                                                "float64")),
    "missing-array": _mutate_arrays(lambda a: a.pop("2.running_var")),
    "extra-array": _mutate_arrays(lambda a: a.__setitem__("99.weight", np.zeros(2, np.float32))),
    "misshaped-array": _mutate_arrays(lambda a: a.__setitem__("1.weight",
                                                              np.zeros((8, 6), np.float32))),
    "wrong-dtype-array": _mutate_arrays(lambda a: a.__setitem__("1.bias", np.zeros(8))),
    "int-array": _mutate_arrays(lambda a: a.__setitem__("1.bias", np.zeros(8, np.int32))),
    "object-array": _mutate_arrays(_object_array),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_load_rejects_bad_files_with_value_error(case, trained, tmp_path):
    _, good = trained
    bad = tmp_path / ("bad-" + case)
    BAD[case](good, bad)
    content = bad.read_bytes()
    rng_state = _random.global_rng().bit_generator.state
    with pytest.raises(ValueError, match="fastnn.load"):
        io.load(bad)
    assert bad.read_bytes() == content                              # untouched
    assert _random.global_rng().bit_generator.state == rng_state    # no random draws


def test_forged_sizes_rejected_before_allocating(trained, tmp_path):
    _, good = trained
    bad = tmp_path / "huge.npz"
    BAD["huge-layer"](good, bad)
    with pytest.raises(ValueError, match="more parameters than the file stores"):
        io.load(bad)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nope.npz")


def test_load_never_unpickles(trained, tmp_path, monkeypatch):
    import pickle
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    _, good = trained
    bad = tmp_path / "obj.npz"
    BAD["object-array"](good, bad)
    with pytest.raises(ValueError):
        io.load(bad)
    raw = tmp_path / "pickle.bin"
    raw.write_bytes(b"\x80\x04K\x01.")           # a pickle stream
    with pytest.raises(ValueError):
        io.load(raw)


def test_loaded_parameters_are_trainable(trained):
    _, path = trained
    model = io.load(path)
    assert all(isinstance(p, Parameter) for p in model.parameters())
    y = model(np.random.default_rng(1).standard_normal((4, 2, 3)))
    model.backward(np.ones_like(y))
    assert model[1].weight.grad.any()


def test_zip_member_names(trained):
    _, path = trained
    with zipfile.ZipFile(path) as z:
        assert all(n.endswith(".npy") for n in z.namelist())

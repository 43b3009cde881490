"""Tests for fastnn.data (batching, splits, preprocessing, data sets, loaders)."""

import gzip
import struct

import numpy as np
import pytest

from fastnn.data import (PCAWhiten, Standardize, load_csv, load_digits, load_idx, load_npz, make_spirals, minibatches, train_val_split)


# ------------------------------------------------------------------ minibatches

def _epoch(*args, **kwargs):
    return [np.asarray(b) for b in minibatches(*args, **kwargs)]


def test_minibatches_seeded_reproducible_and_varying():
    X = np.arange(50)
    a = _epoch(X, batch_size=8, rng=123)
    b = _epoch(X, batch_size=8, rng=123)
    c = _epoch(X, batch_size=8, rng=124)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), X)  # actually shuffled
    gen = np.random.default_rng(5)
    e1 = np.concatenate(_epoch(X, batch_size=8, rng=gen))
    e2 = np.concatenate(_epoch(X, batch_size=8, rng=gen))
    assert not np.array_equal(e1, e2)  # a Generator advances between epochs


def test_minibatches_each_sample_once_and_pairs_aligned():
    X = np.arange(103, dtype=np.float32).reshape(103, 1) * np.ones((1, 3), np.float32)
    y = np.arange(103) * 2
    xs, ys = [], []
    for xb, yb in minibatches(X, y, batch_size=10, rng=0):
        assert xb.shape[1:] == (3,) and len(xb) == len(yb)
        np.testing.assert_array_equal(xb[:, 0] * 2, yb)
        xs.append(xb)
        ys.append(yb)
    assert [len(b) for b in xs] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.sort(np.concatenate(ys)), np.arange(103) * 2)


def test_minibatches_drop_last_no_shuffle_and_x_only():
    X = np.arange(23)
    batches = _epoch(X, batch_size=5, shuffle=False, drop_last=True)
    assert [len(b) for b in batches] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(20))
    dropped = np.concatenate(_epoch(X, batch_size=5, rng=1, drop_last=True))
    assert len(np.unique(dropped)) == 20
    assert all(isinstance(b, np.ndarray) for b in minibatches(X, batch_size=4, rng=0))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"batch_size": 0}, ValueError),
        ({"batch_size": -3}, ValueError),
        ({"batch_size": 2.5}, TypeError),
        ({"batch_size": True}, TypeError),
        ({"y": np.zeros(9)}, ValueError),
        ({"rng": "seed"}, TypeError),
    ],
)
def test_minibatches_validates_eagerly(kwargs, exc):
    with pytest.raises(exc, match="minibatches"):
        minibatches(np.zeros((10, 2)), **kwargs)  # raised before iterating


# ------------------------------------------------------------------ train_val_split

def test_split_reproducible_partition():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    Xt, Xv, yt, yv = train_val_split(X, y, val_fraction=0.2, rng=7)
    assert Xt.shape == (40, 2) and Xv.shape == (10, 2) and yt.shape == (40,)
    np.testing.assert_array_equal(Xt[:, 0] // 2, yt)
    np.testing.assert_array_equal(Xv[:, 0] // 2, yv)
    np.testing.assert_array_equal(np.sort(np.concatenate([yt, yv])), y)
    again = train_val_split(X, y, val_fraction=0.2, rng=7)
    other = train_val_split(X, y, val_fraction=0.2, rng=8)
    assert all(np.array_equal(a, b) for a, b in zip((Xt, Xv, yt, yv), again))
    assert not np.array_equal(yv, other[3])


def test_split_stratified_keeps_proportions():
    y = np.repeat(np.array(["a", "b", "c"]), [60, 30, 10])
    X = np.arange(100)
    _, Xv, _, yv = train_val_split(X, y, val_fraction=0.2, stratify=True, rng=0)
    assert [int(np.sum(yv == c)) for c in "abc"] == [12, 6, 2]
    np.testing.assert_array_equal(y[Xv], yv)
    # uneven quotas 1.5/1.75/1.75 for 5 validation slots -> largest remainders win
    y2 = np.repeat([0, 1, 2], [6, 7, 7])
    _, _, yt2, yv2 = train_val_split(np.zeros((20, 1)), y2, 0.25, stratify=True, rng=3)
    assert np.bincount(yv2, minlength=3).tolist() == [1, 2, 2]
    assert np.bincount(yt2, minlength=3).tolist() == [5, 5, 5]


@pytest.mark.parametrize("frac", [0.01, 0.99, 0.0, 1.0, -0.5])
def test_split_rejects_empty_parts(frac):
    with pytest.raises(ValueError, match="train_val_split"):
        train_val_split(np.zeros((10, 2)), np.zeros(10), val_fraction=frac)


def test_split_rejects_length_mismatch():
    with pytest.raises(ValueError, match="len"):
        train_val_split(np.zeros((10, 2)), np.zeros(9))


# ------------------------------------------------------------------ Standardize

def test_standardize_zero_mean_unit_std_and_constant_columns(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.normal(3.0, 5.0, size=(200, 4))).astype(np.float32)
    X[:, 2] = 7.0  # constant feature, like a blank border pixel
    s = Standardize()
    Z = s.fit_transform(X)
    assert Z.dtype == np.float32 and Z.shape == X.shape
    keep = [0, 1, 3]
    np.testing.assert_allclose(Z[:, keep].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Z[:, keep].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    assert s.mean_.shape == (4,) and np.all(s.std_ > 0)
    unseen = np.array([[3.0, 3.0, 8.0, 3.0]], np.float32)  # constant column moved by 1
    out = s.transform(unseen)
    assert np.all(np.isfinite(out)) and abs(out[0, 2]) <= 1.0
    np.testing.assert_allclose(s.inverse_transform(Z), X, rtol=1e-5, atol=1e-4)

    np.savez(tmp_path / "s.npz", **s.state_dict())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as st:
        s2 = Standardize.from_state_dict(dict(st))
    np.testing.assert_array_equal(s2.transform(X), Z)


def test_standardize_errors():
    s = Standardize()
    with pytest.raises(RuntimeError, match="fit"):
        s.transform(np.zeros((2, 3)))
    s.fit(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError, match="shape"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="missing"):
        Standardize.from_state_dict({"mean": np.zeros(3)})


# ------------------------------------------------------------------ PCAWhiten

def _correlated(n=600, seed=0):
    rng = np.random.default_rng(seed)
    A = np.array([[3.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0.5, -0.2, 0.3, 0], [2.0, 0.1, 0.1, 0.5]])
    return rng.standard_normal((n, 4)) @ A.T + np.array([1.0, -2.0, 0.5, 4.0])


def test_pca_whitening_identity_covariance():
    X = _correlated()
    p = PCAWhiten()
    Z = p.fit_transform(X)
    assert Z.shape == (600, 4)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    ev = p.explained_variance_
    cov = np.cov(Z, rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.diag(ev / (ev + p.eps)), atol=1e-10)
    np.testing.assert_allclose(cov, np.eye(4), atol=1e-3)
    assert np.all(np.diff(ev) <= 0)
    np.testing.assert_allclose(p.components_ @ p.components_.T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(p.inverse_transform(Z), X, atol=1e-8)


def test_pca_projection_sign_convention_and_components():
    X = _correlated()
    p = PCAWhiten(n_components=2, whiten=False).fit(X)
    Z = p.transform(X)
    assert Z.shape == (600, 2)
    np.testing.assert_allclose(Z.var(axis=0), p.explained_variance_, rtol=1e-8)
    big = np.abs(p.components_).argmax(axis=1)
    assert np.all(p.components_[np.arange(2), big] > 0)
    flipped = PCAWhiten(n_components=2).fit(-X[::-1] + 3.0)  # same axes, reversed signs
    np.testing.assert_allclose(flipped.components_, p.components_, atol=1e-10)
    with pytest.raises(ValueError, match="n_components"):
        PCAWhiten(n_components=5).fit(X)
    with pytest.raises(RuntimeError):
        PCAWhiten().transform(X)


# ------------------------------------------------------------------ data sets

def test_make_spirals():
    X, y = make_spirals(n_per_class=50, n_classes=4, noise=0.1, rng=0)
    assert X.shape == (200, 2) and X.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50] * 4
    assert np.all(np.linalg.norm(X, axis=1) <= 1.0 + 1e-6)
    X2, _ = make_spirals(n_per_class=50, n_classes=4, noise=0.1, rng=0)
    np.testing.assert_array_equal(X, X2)
    X3, _ = make_spirals(n_per_class=50, n_classes=4, noise=0.1, rng=1)
    assert not np.array_equal(X, X3)
    Xc, _ = make_spirals(n_per_class=5, n_classes=2, noise=0.0, dtype=np.float64)
    np.testing.assert_allclose(Xc[4], [np.sin(4.0), np.cos(4.0)])  # arm 0 ends at r=1, t=4
    np.testing.assert_allclose(Xc[9], [np.sin(8.0), np.cos(8.0)])  # arm 1 ends at r=1, t=8
    with pytest.raises(ValueError, match="n_per_class"):
        make_spirals(n_per_class=0)


def test_load_digits():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.sum() == 1797
    assert counts.min() >= 170 and counts.max() <= 190
    np.testing.assert_array_equal(X[0, :8], [0, 0, 5, 13, 9, 1, 0, 0])  # first UCI sample, a 0
    assert y[0] == 0
    assert load_digits(dtype=np.float64)[0].dtype == np.float64


# ------------------------------------------------------------------ IDX

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
          np.float32: 0x0D, np.float64: 0x0E}


def _idx_bytes(arr, dims=None, code=None):
    arr = np.asarray(arr)
    dims = arr.shape if dims is None else dims
    code = _CODES[arr.dtype.type] if code is None else code
    head = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    out = load_idx(_write(tmp_path / "a.idx", _idx_bytes(arr), gz))
    assert out.dtype == np.dtype(dtype) and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # native, writable copy


def test_idx_labels_1d(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    np.testing.assert_array_equal(load_idx(_write(tmp_path / "l", _idx_bytes(labels))), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_rejects_bad_files(tmp_path, gz):
    good = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    cases = {
        "magic": (b"\x01" + good[1:], "not an IDX"),
        "code": (good[:2] + b"\x07" + good[3:], "dtype code"),
        "header": (good[:9], "truncated header"),
        "trunc": (good[:-1], "truncated.*24.*found 23"),
        "over": (good + b"\x00", "too large"),
        "huge": (_idx_bytes(np.zeros(6, np.uint8), dims=(2**31, 2**31, 2**31)), "need exactly"),
    }
    for name, (data, msg) in cases.items():
        path = _write(tmp_path / f"{name}.idx", data, gz)
        with pytest.raises(ValueError, match=msg) as info:
            load_idx(path)
        assert f"{name}.idx" in str(info.value)


# ------------------------------------------------------------------ CSV / NPZ

def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_header_target_by_name(tmp_path):
    p = _csv(tmp_path, "x1,label,x2\n1.5,0,2\n3,1,4e1\n\n-1,2,0\n")
    X, y = load_csv(p, target="label")
    np.testing.assert_array_equal(X, np.array([[1.5, 2], [3, 40], [-1, 0]], np.float32))
    assert X.dtype == np.float32 and y.dtype == np.int64 and y.tolist() == [0, 1, 2]
    X2, y2 = load_csv(p, target=1)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_csv_without_header_and_float_targets(tmp_path):
    X, y = load_csv(_csv(tmp_path, "1,2,3\n4,5,6\n"), dtype=np.float64)
    assert X.shape == (2, 2) and X.dtype == np.float64 and y.tolist() == [3, 6]
    _, yf = load_csv(_csv(tmp_path, "1,0.5\n2,1.25\n", "f.csv"), header=False)
    assert yf.dtype == np.float32 and yf.tolist() == [0.5, 1.25]


def test_csv_string_labels(tmp_path):
    p = _csv(tmp_path, "a;b;kind\n1;2;dog\n3;4;cat\n5;6;dog\n7;8;bird\n")
    X, y, classes = load_csv(p, delimiter=";", return_classes=True)
    assert classes == ["bird", "cat", "dog"]
    assert y.dtype == np.int64 and y.tolist() == [2, 1, 2, 0]
    assert X.shape == (4, 2)
    assert load_csv(_csv(tmp_path, "1,2\n3,4\n", "n.csv"), return_classes=True)[2] is None


@pytest.mark.parametrize(
    "text, kwargs, msg",
    [
        ("a,b,c\n1,2,3\n4,5\n", {}, r"line 3: expected 3 fields.*found 2"),
        ("a,b,c\n1,2,3\n\n4,x,6\n", {}, r"line 4, column 1 \('b'\).*'x'"),
        ('a,b,c\n1,"2\n",3\n4,5,six\n7,y,9\n', {}, r"line 5, column 1 \('b'\).*'y'"),
        ("a,b,c\n1,2,3\n", {"target": "y"}, r"unknown target column 'y'"),
        ("1,2,3\n", {"target": "c"}, r"no header"),
        ("1,2,3\n", {"target": 3}, r"out of range"),
        ("", {}, r"empty"),
        ("\n  \n", {}, r"empty"),
        ("a,b\n", {}, r"no data rows"),
    ],
)
def test_csv_errors(tmp_path, text, kwargs, msg):
    p = _csv(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=msg) as info:
        load_csv(p, **kwargs)
    assert "load_csv" in str(info.value) and "bad.csv" in str(info.value)


def test_load_npz(tmp_path):
    X, y = np.ones((4, 3), np.float32), np.arange(4)
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    X2, y2 = load_npz(tmp_path / "ok.npz")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    np.savez(tmp_path / "nokey.npz", X=X, labels=y)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        load_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "obj.npz", X=X, y=np.array([{}, 1, 2, 3], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")


def test_load_digits_as_images():
    X, y = load_digits()
    images, y2 = load_digits(images=True)
    assert images.shape == (1797, 1, 8, 8) and images.flags.c_contiguous
    np.testing.assert_array_equal(images[:, 0].reshape(1797, 64), X)
    np.testing.assert_array_equal(y, y2)
    assert images[0, 0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]      # the first row
    with pytest.raises(TypeError, match="load_digits: images must be True or False"):
        load_digits(images="yes")

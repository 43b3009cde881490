"""Model files and checkpoints that are not what they claim: rejected with one clear
line, before they expand in memory, with nothing changed; and the files fastnn writes
(mode, permissions, temporary files, symbolic links)."""
import json
import os
import stat
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import io, optim
from fastnn.core import archive
from fastnn.core import rng as random_state
from fastnn.layers import BatchNorm1d, Dense, Dropout, ReLU, Sequential
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.train.checkpoint import META_KEY, load_checkpoint, save_checkpoint
from fastnn.train.trainer import Trainer

DENSE = {"type": "Dense", "args": {"in_features": 4, "out_features": 3, "bias": True,
                                   "activation": None, "activation_kw": None,
                                   "init": "he_normal", "dtype": "float32"}}


def arch_blob(model_node, **extra):
    arch = dict({"format": "fastnn.model", "version": 1, "model": model_node}, **extra)
    return np.frombuffer(json.dumps(arch).encode(), np.uint8)


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def peak_bytes(fn):
    """(peak traced bytes, exception) of fn(): numpy's and Python's allocations."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:          # noqa: BLE001 -- the caller checks it
        return tracemalloc.get_traced_memory()[1], exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, None


# ----------------------------------------------------------------- not a model file
def test_non_model_files_get_one_clear_line(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,label\n1,2,0\n")
    renamed = tmp_path / "notes.npz"
    renamed.write_text("just some text\n")
    cases = {csv: "not an .npz archive \\(a text file starting 'a,b,label",
             renamed: "not an .npz archive \\(a text file starting 'just some text",
             tmp_path: "it is a directory"}
    for path, reason in cases.items():
        with pytest.raises(ValueError, match="fastnn.load: .* is not a valid fastnn model "
                                             "file: " + reason) as info:
            fastnn.load(path)
        assert "allow_pickle" not in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_and_model_files_name_each_others_loader(tmp_path):
    model = Sequential(Dense(2, 3, rng=0))
    ckpt = str(tmp_path / "run.ckpt")
    save_checkpoint(ckpt, model=model)
    with pytest.raises(ValueError, match="training checkpoint; use .*load_checkpoint"):
        fastnn.load(ckpt)
    saved = str(tmp_path / "model.npz")
    fastnn.save(model, saved)
    with pytest.raises(ValueError, match="model file .*; use fastnn.load"):
        load_checkpoint(saved, model=model)


def test_save_to_a_directory_or_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"fastnn.save: \. is a directory; give a file path"):
        fastnn.save(Dense(2, 2, rng=0), ".")
    with pytest.raises(FileNotFoundError, match="fastnn.save: the directory .* does not exist"):
        fastnn.save(Dense(2, 2, rng=0), tmp_path / "no" / "m.npz")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- sizes before memory
def test_architecture_sizes_are_checked_cumulatively_before_building(tmp_path):
    """400 x Dense(1000, 1000) over one array of 10^6 elements: each layer alone fits the
    file's arrays, all of them need 400 times more."""
    layer = dict(DENSE, args=dict(DENSE["args"], in_features=1000, out_features=1000))
    path = write_npz(tmp_path / "many.npz",
                     __fastnn_model__=arch_blob({"type": "Sequential", "args": {},
                                                 "layers": [layer] * 400}),
                     x=np.zeros(10 ** 6, np.float32))
    peak, exc = peak_bytes(lambda: fastnn.load(path))
    assert isinstance(exc, ValueError) and "more parameters than the file stores" in str(exc)
    assert peak < 20 << 20, "peaked at %d bytes before rejecting" % peak


def _bomb(path, name, n_bytes, header_shape=None, extra=()):
    """An archive whose member `name` is an .npy of `n_bytes` zero bytes, deflated
    (about 1000 times smaller), plus the arrays of `extra`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, arr in extra:
            with z.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, arr)
        with z.open(name + ".npy", "w", force_zip64=True) as f:
            shape = header_shape or (n_bytes // 4,)
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": shape})
            chunk = bytes(1 << 20)
            for _ in range(n_bytes >> 20):
                f.write(chunk)
    return path


def test_compressed_bombs_are_rejected_before_decompressing(tmp_path):
    model = Sequential(Dense(4, 3, rng=0))
    ckpt = str(tmp_path / "run.ckpt")
    save_checkpoint(ckpt, model=model)
    with np.load(ckpt) as z:
        meta = z[META_KEY]
    cases = {  # 256 MB of zeros in about 256 KB, as an unexpected array and as a weight
        "extra": _bomb(tmp_path / "extra.npz", "zeros", 1 << 28,
                       extra=[("__fastnn_model__", arch_blob(DENSE))]),
        "weight": _bomb(tmp_path / "weight.npz", "weight", 1 << 28,
                        extra=[("__fastnn_model__", arch_blob(DENSE)),
                               ("bias", np.zeros(3, np.float32))]),
        "arch": _bomb(tmp_path / "arch.npz", "__fastnn_model__", 1 << 28),
    }
    for name, path in cases.items():
        peak, exc = peak_bytes(lambda: fastnn.load(path))
        assert isinstance(exc, ValueError) and "declare" in str(exc), (name, exc)
        assert peak < 20 << 20, "%s: peaked at %d bytes" % (name, peak)
    path = _bomb(tmp_path / "ckpt_bomb.npz", "model/0.weight", 1 << 28,
                 extra=[(META_KEY, meta), ("model/0.bias", np.zeros(3, np.float32))])
    peak, exc = peak_bytes(lambda: load_checkpoint(path, model=model))
    assert isinstance(exc, ValueError) and "not a valid fastnn checkpoint" in str(exc)
    assert peak < 20 << 20


def test_declared_shapes_are_checked_against_the_model_before_reading(tmp_path):
    """A member within the size cap but shaped unlike the model: rejected from its
    header, its data never read."""
    path = tmp_path / "big.npz"
    write_npz(path, __fastnn_model__=arch_blob(DENSE), weight=np.zeros((2000, 1000),
                                                                       np.float32),
              bias=np.zeros(3, np.float32))
    peak, exc = peak_bytes(lambda: fastnn.load(path))
    assert isinstance(exc, ValueError)
    assert "more parameters" in str(exc) or "must be float32 of shape (4, 3)" in str(exc)
    assert peak < 4 << 20, peak


def test_duplicate_member_names_are_rejected(tmp_path):
    path = tmp_path / "dup.npz"
    good = tmp_path / "good.npz"
    fastnn.save(Dense(4, 3, rng=0), good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("weight.npy", src.read("weight.npy"))
    with pytest.raises(ValueError, match="repeats member names \\['weight.npy'\\]"):
        fastnn.load(path)


def test_layer_count_is_capped_and_load_time_is_linear(tmp_path):
    relu = {"type": "ReLU", "args": {}}
    over = write_npz(tmp_path / "over.npz", __fastnn_model__=arch_blob(
        {"type": "Sequential", "args": {}, "layers": [relu] * io.MAX_LAYERS}))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="more than %d modules" % io.MAX_LAYERS):
        fastnn.load(over)          # the Sequential itself is one module more
    assert time.perf_counter() - t0 < 2.0
    model = Sequential(*[ReLU() for _ in range(io.MAX_LAYERS - 2)], Dense(2, 2, rng=0))
    path = tmp_path / "deep.npz"
    fastnn.save(model, path)
    t0 = time.perf_counter()
    assert len(fastnn.load(path)) == io.MAX_LAYERS - 1
    assert time.perf_counter() - t0 < 30.0         # about 0.4 s here; a loose bound


def test_non_finite_weights_load_with_a_warning(tmp_path):
    w = np.zeros((4, 3), np.float32)
    w[1, 2] = np.inf
    path = write_npz(tmp_path / "inf.npz", __fastnn_model__=arch_blob(DENSE), weight=w,
                     bias=np.full(3, np.nan, np.float32))
    with pytest.warns(RuntimeWarning, match="NaN or infinite values in weight, bias"):
        model = fastnn.load(path)
    assert np.isinf(model.weight.data[1, 2])


# ----------------------------------------------------------------- the saved mode
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_load_returns_the_model_in_the_saved_mode(tmp_path, mode):
    model = Sequential(Dense(3, 8, rng=0), BatchNorm1d(8), Dropout(0.5, rng=1), Dense(8, 2, rng=2))
    model(np.random.default_rng(0).standard_normal((16, 3)))       # move running stats
    if mode == "eval":
        model.eval()
    elif mode == "mixed":
        model[2].eval()
    fastnn.save(model, tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    assert [m.training for m in loaded.modules()] == [m.training for m in model.modules()]
    if mode == "eval":
        x = np.ones((1, 3), np.float32)              # one row: fine in eval mode
        np.testing.assert_array_equal(loaded(x), model(x))


def test_files_without_a_mode_load_in_training_mode(tmp_path):
    path = write_npz(tmp_path / "old.npz", __fastnn_model__=arch_blob(DENSE),
                     weight=np.zeros((4, 3), np.float32), bias=np.zeros(3, np.float32))
    assert fastnn.load(path).training
    bad = write_npz(tmp_path / "bad.npz", __fastnn_model__=arch_blob(DENSE, training="no"),
                    weight=np.zeros((4, 3), np.float32), bias=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="training must be true, false"):
        fastnn.load(bad)


# ----------------------------------------------------------------- files written
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_follow_the_umask_and_overwrites_keep_the_mode(tmp_path, umask_022):
    path = tmp_path / "m.npz"
    fastnn.save(Dense(2, 2, rng=0), path)
    assert _mode(path) == 0o644
    os.chmod(path, 0o600)
    fastnn.save(Dense(2, 2, rng=1), path)
    assert _mode(path) == 0o600
    ckpt = tmp_path / "c.ckpt"
    save_checkpoint(ckpt, model=Dense(2, 2, rng=0))
    assert _mode(ckpt) == 0o644
    os.chmod(ckpt, 0o640)
    save_checkpoint(ckpt, model=Dense(2, 2, rng=0))
    assert _mode(ckpt) == 0o640


def _dead_pid():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_later_save_removes_stale_temporaries_of_its_target_only(tmp_path):
    target = tmp_path / "m.npz"
    stale = tmp_path / (".m.npz.%s-%d-%s.fastnn-tmp" % (archive._HOST, _dead_pid(), "0" * 16))
    live = tmp_path / (".m.npz.%s-%d-%s.fastnn-tmp" % (archive._HOST, os.getpid(), "1" * 16))
    other = tmp_path / (".other.npz.%s-%d-%s.fastnn-tmp" % (archive._HOST, _dead_pid(),
                                                           "2" * 16))
    for p in (stale, live, other):
        p.write_bytes(b"half a save")
    fastnn.save(Dense(2, 2, rng=0), target)
    assert not stale.exists()                     # its process is gone
    assert live.exists() and other.exists()       # a running save's; another target's
    assert type(fastnn.load(target)) is Dense


def test_saving_to_a_symlink_writes_through_to_its_target(tmp_path):
    real = tmp_path / "real.npz"
    fastnn.save(Dense(2, 2, rng=0), real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    fastnn.save(Dense(2, 2, rng=1), link)
    assert link.is_symlink()
    np.testing.assert_array_equal(fastnn.load(real).weight.data, Dense(2, 2, rng=1).weight.data)


# ----------------------------------------------------------------- hostile checkpoints
def _make():
    random_state.seed(3)
    model = Sequential(Dense(2, 8), ReLU(), Dropout(0.3, rng=7), Dense(8, 3))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=optim.StepLR(opt, 2),
                   verbose=0)


def _state(tr):
    opt = tr.optimizer.state_dict()
    return (repr(tr.model.state_dict()), repr(opt), repr(tr.scheduler.state_dict()),
            tr.model[2].generator.bit_generator.state, tr.epochs_done, tr.global_step,
            repr(tr.history.as_dict()), random_state.global_rng().bit_generator.state)


def _edit(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays[META_KEY].tobytes())
    edit(meta)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    write_npz(dst, **arrays)


def _nest(depth):
    value = 0
    for _ in range(depth):
        value = {"key": value}
    return value


def _set_rng(meta, kind, state):
    meta["rngs"][meta["dropout"]["2"]] = {"bit_generator": kind, "state": state,
                                          "has_uint32": 0, "uinteger": 0}


HOSTILE = {
    "start beyond epochs_done": lambda m: m["trainer"]["fit"].update(start=5),
    "huge start": lambda m: m["trainer"]["fit"].update(start=10 ** 6),
    "optimizer step 10**400": lambda m: m["optimizer"]["state"]["0"].update(step=10 ** 400),
    "StepLR step_size 0": lambda m: m["scheduler"]["state"].update(step_size=0),
    "gamma NaN": lambda m: m["scheduler"]["state"].update(gamma=float("nan")),
    "gamma inf": lambda m: m["scheduler"]["state"].update(gamma=float("inf")),
    "gamma -1": lambda m: m["scheduler"]["state"].update(gamma=-1.0),
    "short MT19937 key": lambda m: m["rngs"].__setitem__(m["dropout"]["2"], {
        "bit_generator": "MT19937",
        "state": {"key": {"__ndarray__": "<u4", "data": [1, 2, 3]}, "pos": 0}}),
    "generator nested 700 deep": lambda m: _set_rng(m, "PCG64", _nest(700)),
    "generator int out of range": lambda m: _set_rng(m, "PCG64", {"state": 2 ** 200,
                                                                  "inc": 1}),
    "negative bad_epochs": lambda m: m["trainer"]["fit"].update(bad_epochs=-1),
    "history not consecutive": lambda m: m["trainer"]["history"]["rows"]["epoch"]
    .__setitem__(0, 7),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoints_are_rejected_before_anything_changes(case, tmp_path):
    X = np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    good = str(tmp_path / "good.ckpt")
    _make().fit(X, y, epochs=2, batch_size=8, seed=0, checkpoint=good)
    bad = str(tmp_path / "bad.ckpt")
    _edit(good, bad, HOSTILE[case])
    tr = _make()
    tr.fit(X, y, epochs=1, batch_size=8, seed=1)
    before = _state(tr)
    with pytest.raises(ValueError, match="not a valid fastnn checkpoint"):
        load_checkpoint(bad, tr)
    assert _state(tr) == before
    with pytest.raises(ValueError, match="not a valid fastnn checkpoint"):
        tr.fit(X, y, epochs=2, batch_size=8, resume=bad)
    assert _state(tr) == before
    load_checkpoint(good, tr)                       # the good file still loads
    assert tr.epochs_done == 2

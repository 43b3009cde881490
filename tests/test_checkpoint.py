"""Checkpoints: bit-identical resume, atomic saves, validation of bad files, no pickle."""
import json
import os
import pickle

import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn.train import checkpoint
from fastnn import data, optim
from fastnn.train.checkpoint import META_KEY, load_checkpoint, save_checkpoint
from fastnn.layers import BatchNorm1d, Dense, Dropout, ReLU, Sequential
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.train.trainer import History, Trainer

X, Y = data.make_spirals(60, 3, rng=0)
XTR, XVA, YTR, YVA = data.train_val_split(X, Y, 0.25, rng=0)


def make(sched="step", patience=None):
    _random.seed(3)
    model = Sequential(Dense(2, 24), BatchNorm1d(24), ReLU(), Dropout(0.3, rng=7),
                       Dense(24, 24), ReLU(), Dropout(0.2), Dense(24, 3))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    s = optim.StepLR(opt, 2, gamma=0.5) if sched == "step" else optim.CosineAnnealingLR(opt, 6)
    return Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=s, verbose=0, patience=patience)


def fit(tr, epochs=6, seed=0, **kw):
    return tr.fit(XTR, YTR, validation_data=(XVA, YVA), epochs=epochs, batch_size=16,
                  seed=seed, **kw)


def params(tr):
    return [p.data.copy() for p in tr.model.parameters()]


def full_state(tr):
    """Everything loading may change: model arrays, optimizer, scheduler, generators."""
    opt = tr.optimizer.state_dict()
    return (tr.model.state_dict(), repr(opt["param_groups"]),
            {i: {k: np.array(v) for k, v in s.items()} for i, s in opt["state"].items()},
            tr.scheduler.state_dict(), _random.global_rng().bit_generator.state,
            tr.model[3].generator.bit_generator.state, tr.epochs_done, len(tr.history))


def same_state(a, b):
    def eq(x, y):
        if isinstance(x, dict):
            return set(x) == set(y) and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, np.ndarray):
            return np.array_equal(x, y)
        return x == y
    return all(eq(x, y) for x, y in zip(a, b))


def same_history(h1, h2):
    d1, d2 = h1.as_dict(), h2.as_dict()
    return (all(d1[k] == d2[k] for k in History.KEYS if k != "time")
            and h1.best_epoch == h2.best_epoch and h1.stop_reason == h2.stop_reason)


@pytest.fixture
def ckpt(tmp_path):
    return str(tmp_path / "run.ckpt.npz")


# ------------------------------------------------------------------ bit-identical resume
@pytest.mark.parametrize("sched,seed", [("step", 0), ("cosine", None)])
def test_resume_is_bit_identical(ckpt, sched, seed):
    ref = make(sched, patience=4)
    h_ref = fit(ref, seed=seed)
    ref_params, ref_state = params(ref), full_state(ref)

    part = make(sched, patience=4)
    fit(part, epochs=3, seed=seed, checkpoint=ckpt)
    _random.seed(1234)                 # a "new process": other global state
    resumed = make(sched, patience=4)
    h = fit(resumed, seed=seed, resume=ckpt)

    assert h.epoch == h_ref.epoch and h.epoch[:4] == [1, 2, 3, 4]
    assert resumed.epochs_done == ref.epochs_done
    assert all(np.array_equal(a, b) for a, b in zip(ref_params, params(resumed)))
    assert same_history(h_ref, h)
    assert same_state(ref_state, full_state(resumed))
    assert resumed.global_step == ref.global_step


def test_resume_after_a_crash_mid_run(ckpt):
    ref = make()
    h_ref = fit(ref)

    class Crash(Exception):
        pass

    def crash(tr, epoch, row):
        if epoch == 4:
            raise Crash
    part = make()
    part.callbacks.append(crash)
    with pytest.raises(Crash):
        fit(part, checkpoint=ckpt)
    assert load_checkpoint(ckpt, make())["epoch"] == 3
    resumed = make()
    h = fit(resumed, resume=ckpt)
    assert all(np.array_equal(a, b) for a, b in zip(params(ref), params(resumed)))
    assert same_history(h_ref, h)


def test_resume_checks_fit_arguments(ckpt):
    fit(make(), epochs=2, checkpoint=ckpt)
    tr = make()
    before = full_state(tr)
    with pytest.raises(ValueError, match="batch_size"):
        tr.fit(XTR, YTR, validation_data=(XVA, YVA), epochs=6, batch_size=8, resume=ckpt)
    assert same_state(before, full_state(tr))


def test_resume_of_a_finished_early_stopped_run(ckpt):
    tr = make(patience=1)
    h1 = fit(tr, epochs=30, checkpoint=ckpt)
    assert h1.stop_reason == "early_stopping"
    again = make(patience=1)
    h2 = fit(again, epochs=30, resume=ckpt)
    assert same_history(h1, h2) and again.epochs_done == tr.epochs_done
    assert all(np.array_equal(a, b) for a, b in zip(params(tr), params(again)))


# ------------------------------------------------------------------ atomic save
def test_interrupted_save_keeps_previous_checkpoint(ckpt, monkeypatch):
    tr = make()
    fit(tr, epochs=1, checkpoint=ckpt)
    with open(ckpt, "rb") as f:
        good = f.read()
    fit(tr, epochs=1)                                  # new state to save

    def half_write(f, arrays):
        f.write(b"PK\x03\x04 partial archive")
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint, "_write_npz", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, tr)
    with pytest.raises(OSError, match="disk full"):   # also from inside fit
        fit(tr, epochs=1, checkpoint=ckpt)
    monkeypatch.undo()
    with open(ckpt, "rb") as f:
        assert f.read() == good
    assert os.listdir(os.path.dirname(ckpt)) == [os.path.basename(ckpt)]
    assert load_checkpoint(ckpt, make())["epoch"] == 1


# ------------------------------------------------------------------ bad files
def _rewrite(src, dst, edit_meta=None, extra=None, drop=None):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if edit_meta is not None:
        meta = json.loads(arrays[META_KEY].tobytes())
        edit_meta(meta)
        arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    if drop is not None:
        del arrays[drop]
    arrays.update(extra or {})
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


def _bad_files(src, d):
    with open(src, "rb") as f:
        raw = f.read()
    files = {}

    def put(name, content):
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(content)
        files[name] = p
    put("truncated", raw[:len(raw) // 2])
    put("empty", b"")
    put("garbage", b"not a checkpoint at all" * 10)
    flipped = bytearray(raw)
    mid = len(raw) // 2
    flipped[mid:mid + 16] = bytes(b ^ 0xFF for b in flipped[mid:mid + 16])
    put("flipped", bytes(flipped))
    p = os.path.join(d, "npy")
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    files["npy"] = p

    def variant(name, **kw):
        files[name] = os.path.join(d, name)
        _rewrite(src, files[name], **kw)
    variant("version", edit_meta=lambda m: m.update(version=2))
    variant("format", edit_meta=lambda m: m.update(format="fastnn.model"))
    variant("object_array", extra={"model/0.weight": np.array([{"a": 1}, None], dtype=object)})
    variant("missing_array", drop="model/1.running_mean")
    variant("int_array", extra={"model/0.bias": np.zeros(24, np.int64)})
    variant("bad_rng", edit_meta=lambda m: m["rngs"][0]["state"].update(state="x"))
    variant("other_arch", edit_meta=lambda m: m["model"]["model"]["layers"].pop())
    variant("bad_history", edit_meta=lambda m: m["trainer"]["history"]["rows"]["loss"].pop())
    variant("bad_optimizer", edit_meta=lambda m: m["optimizer"]["param_groups"][0]
            .update(lr=-1.0))
    variant("bad_sched", edit_meta=lambda m: m["scheduler"]["state"].update(last_epoch="2"))
    variant("no_meta", drop=META_KEY)
    return files


def test_bad_files_raise_value_error_and_change_nothing(ckpt, tmp_path):
    fit(make(), epochs=2, checkpoint=ckpt)
    d = tmp_path / "bad"
    d.mkdir()
    files = _bad_files(ckpt, str(d))
    tr = make()
    fit(tr, epochs=1, seed=5)
    before = full_state(tr)
    for name, path in files.items():
        with pytest.raises(ValueError, match="not a valid fastnn checkpoint"):
            load_checkpoint(path, tr)
        with pytest.raises(ValueError, match="not a valid fastnn checkpoint"):
            fit(tr, epochs=6, resume=path)
        assert same_state(before, full_state(tr)), name
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(d / "missing"), tr)
    load_checkpoint(ckpt, tr)                         # the good file still loads
    assert tr.epochs_done == 2 and not same_state(before, full_state(tr))


def test_load_into_parts(ckpt):
    tr = make()
    fit(tr, epochs=2)
    save_checkpoint(ckpt, model=tr.model, optimizer=tr.optimizer, scheduler=tr.scheduler)
    other = make()
    with pytest.raises(ValueError, match="has no trainer state"):
        load_checkpoint(ckpt, other)
    info = load_checkpoint(ckpt, model=other.model, optimizer=other.optimizer,
                           scheduler=other.scheduler)
    assert info["history"] is None
    assert all(np.array_equal(a, b) for a, b in zip(params(tr), params(other)))
    assert other.optimizer.lr == tr.optimizer.lr
    with pytest.raises(ValueError, match="has a scheduler"):
        load_checkpoint(ckpt, model=other.model, optimizer=other.optimizer)


# ------------------------------------------------------------------ no pickle
def test_checkpoint_never_needs_pickle(ckpt, monkeypatch):
    fit(make(), epochs=2, checkpoint=ckpt)
    with np.load(ckpt, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype.kind in "fu" and a.dtype != object for a in arrays.values())

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    tr = make()
    info = load_checkpoint(ckpt, tr)
    assert info["epoch"] == 2 and len(info["history"]) == 2


def test_loading_keeps_the_optimizers_fused_update(ckpt):
    fit(make(), epochs=2, checkpoint=ckpt)
    tr = make()
    flat = tr.model.parameters()[0].data.base
    load_checkpoint(ckpt, tr)
    # still every parameter a view of the optimizer's one flat buffer (one kernel call
    # updates them all, as in an uninterrupted run)
    assert flat is not None and all(p.data.base is flat for p in tr.model.parameters())


def test_trainer_run_state_round_trip_and_checks():
    tr = make()
    fit(tr, epochs=2)
    state = tr.run_state()
    assert state["epochs_done"] == 2 and state["fit"]["start"] == 0
    other = make()
    other.load_run_state(state)
    assert other.epochs_done == 2 and other.history.as_dict() == tr.history.as_dict()
    for edit, match in ((dict(epochs_done=5), "history's last epoch"),
                        (dict(global_step=-1), "global_step"),
                        (dict(fit=dict(state["fit"], start=3)), "run covers epochs"),
                        (dict(fit=dict(state["fit"], rng=3)), "rng must be a numpy Generator")):
        fresh = make()
        with pytest.raises(ValueError, match="Trainer.load_run_state: .*" + match):
            fresh.load_run_state(dict(state, **edit))
        assert fresh.epochs_done == 0 and len(fresh.history) == 0

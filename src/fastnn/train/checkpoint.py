"""Training checkpoints: everything needed to resume a run bit-identically, in one .npz.

A checkpoint holds the model (fastnn.io's architecture JSON + state_dict arrays), the
optimizer (state arrays + hyperparameters), the scheduler, the trainer's epoch /
step counters, its History so far, the best-epoch tracking of the run in progress
(best score, saved best parameters, early-stopping counter) and every random state
that affects training: the shuffling generator of `Trainer.fit`, fastnn's global
generator and each Dropout layer's generator. Generator states are stored as JSON;
loading never unpickles (`np.load(..., allow_pickle=False)`).

Writing is atomic (temporary file in the same directory + `os.replace`): a crash
during a save leaves the previous checkpoint intact. Loading validates the whole file
against the target trainer / model first and raises ValueError (changing nothing)
for a corrupted, truncated, foreign or wrong-version file.

Loading restores fastnn's global generator too (Dropout layers without their own
`rng` and ``fit(seed=None)`` draw from it).

>>> import os, tempfile, numpy as np
>>> from fastnn.layers import Sequential, Dense, Dropout, ReLU
>>> from fastnn.losses import SoftmaxCrossEntropy
>>> from fastnn.optim import Adam, StepLR
>>> from fastnn.train.trainer import Trainer
>>> from fastnn.train.checkpoint import save_checkpoint, load_checkpoint
>>> X = np.random.default_rng(0).normal(size=(64, 2)); y = (X[:, 0] > 0).astype(int)
>>> def make():
...     model = Sequential(Dense(2, 8, rng=0), ReLU(), Dropout(0.2, rng=1), Dense(8, 2, rng=2))
...     opt = Adam(model.parameters(), lr=1e-2)
...     return Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=StepLR(opt, 2), verbose=0)
>>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt.npz")
>>> full = make(); _ = full.fit(X, y, epochs=4, seed=0)
>>> part = make(); _ = part.fit(X, y, epochs=2, seed=0, checkpoint=path)   # "crash" here
>>> resumed = make(); h = resumed.fit(X, y, epochs=4, seed=0, resume=path)
>>> h.epoch, all(np.array_equal(a.data, b.data) for a, b in
...              zip(full.model.parameters(), resumed.model.parameters()))
([1, 2, 3, 4], True)
>>> info = load_checkpoint(path, resumed)      # or restore by hand
>>> info["epoch"]
2
"""
import json
import os
import zipfile

import numpy as np

from ..core import rng as _random
from .. import io as _io
from ..layers.base import Module, Parameter

__all__ = ["save_checkpoint", "load_checkpoint"]

META_KEY = "__fastnn_checkpoint__"
FORMAT = "fastnn.train.checkpoint"
VERSION = 1
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


# ------------------------------------------------------------------------ helpers
def _parts(fn, trainer, model, optimizer, scheduler):
    if trainer is not None:
        if model is not None or optimizer is not None or scheduler is not None:
            raise TypeError("%s: pass either a Trainer or model/optimizer/scheduler, not both"
                            % fn)
        if not hasattr(trainer, "history") or not hasattr(trainer, "model"):
            raise TypeError("%s: expected a fastnn Trainer, got %s" % (fn, type(trainer).__name__))
        return trainer.model, trainer.optimizer, trainer.scheduler
    if not isinstance(model, Module):
        raise TypeError("%s: expected a Trainer or model=<fastnn Module>, got %s"
                        % (fn, type(model).__name__))
    if optimizer is None and scheduler is not None:
        raise TypeError("%s: a scheduler needs its optimizer" % fn)
    return model, optimizer, scheduler


def _dropouts(model):
    from ..layers.dropout import Dropout
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Dropout)]


def _json_default(obj):
    if isinstance(obj, np.ndarray):          # e.g. MT19937's key
        return {"__ndarray__": obj.dtype.str, "data": obj.tolist()}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError("cannot store %s in a checkpoint" % type(obj).__name__)


def _decode_arrays(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__", "data"}:
            dt = np.dtype(obj["__ndarray__"])
            if dt.kind not in "iu":
                raise ValueError("bad array dtype in a generator state")
            return np.asarray(obj["data"], dtype=dt)
        return {k: _decode_arrays(v) for k, v in obj.items()}
    return obj


def _write_npz(f, arrays):
    """Write the archive to the open file `f` (a separate function so tests can make it
    fail half-way)."""
    np.savez(f, **arrays)


# ------------------------------------------------------------------------ save
def save_checkpoint(path, trainer=None, *, model=None, optimizer=None, scheduler=None):
    """Write a checkpoint of `trainer` (or of model / optimizer / scheduler) to `path`
    (the exact path; no suffix added), atomically.

    With a Trainer, also saves its epoch and step counters, its History and, while or
    after `fit` ran, the state of that run (shuffling generator, best epoch tracking,
    early-stopping counter) so that ``fit(..., resume=path)`` continues it."""
    fn = "save_checkpoint"
    model, optimizer, scheduler = _parts(fn, trainer, model, optimizer, scheduler)
    path = os.fspath(path)
    arrays = {}
    rngs, index = [], {}

    def ref(gen):
        if gen is None:
            return None
        if id(gen) not in index:
            index[id(gen)] = len(rngs)
            rngs.append(gen.bit_generator.state)
        return index[id(gen)]

    meta = {"format": FORMAT, "version": VERSION,
            "model": {"format": _io.FORMAT, "version": _io.VERSION, "model": _io._node(model)},
            "optimizer": None, "scheduler": None, "trainer": None}
    for k, v in model.state_dict().items():
        arrays["model/" + k] = v
    meta["global_rng"] = ref(_random.global_rng())
    meta["dropout"] = {n: ref(m._rng) for n, m in _dropouts(model)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        state = {}
        for i, s in sd["state"].items():
            names = sorted(k for k, v in s.items() if isinstance(v, np.ndarray))
            state[str(i)] = {"step": s.get("step"), "arrays": names}
            for name in names:
                arrays["optimizer/%d/%s" % (i, name)] = s[name]
        meta["optimizer"] = {"type": type(optimizer).__name__, "param_groups": sd["param_groups"],
                             "state": state}
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__, "state": scheduler.state_dict()}
    if trainer is not None:
        h = trainer.history
        tmeta = {"epochs_done": trainer.epochs_done, "global_step": trainer.global_step,
                 "history": {"rows": h.as_dict(), "best_epoch": h.best_epoch, "n_val": h.n_val,
                             "stop_reason": h.stop_reason, "interrupted": h.interrupted,
                             "warnings": list(h.warnings)},
                 "fit": None}
        run = getattr(trainer, "_fit_state", None)
        if run is not None:
            fit = {k: run[k] for k in _FIT_KEYS}
            fit["shuffle_rng"] = ref(run["rng"])
            fit["best_state"] = run["best_state"] is not None
            if run["best_state"] is not None:
                for k, v in run["best_state"].items():
                    arrays["best/" + k] = v
            tmeta["fit"] = fit
        meta["trainer"] = tmeta
    meta["rngs"] = rngs
    try:
        blob = json.dumps(meta, default=_json_default, allow_nan=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError("%s: %s" % (fn, exc)) from None
    arrays[META_KEY] = np.frombuffer(blob, dtype=np.uint8)
    _io.atomic_savez(path, arrays, _write_npz)


_FIT_KEYS = ("start", "epochs", "n", "batch_size", "shuffle", "validation", "restore_best",
             "best_score", "bad_epochs")


# ------------------------------------------------------------------------ load
class _Bad(ValueError):
    pass


def _bad(path, reason):
    return ValueError("load_checkpoint: %s is not a valid fastnn checkpoint: %s"
                      % (path, reason))


def _is_int(v, low=None):
    return isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _require(cond, reason):
    if not cond:
        raise _Bad(reason)


def _read_npz(path):
    if not os.path.isfile(path):
        raise FileNotFoundError("load_checkpoint: no such file: %s" % path)
    try:
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise _Bad("not an .npz archive (a bare .npy array)")
            with data:
                return {k: data[k] for k in data.files}
    except _Bad:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError,
            NotImplementedError, MemoryError, TypeError) as exc:
        raise _Bad("%s: %s" % (type(exc).__name__, exc)) from None


def _check_rng_state(st):
    _require(isinstance(st, dict) and st.get("bit_generator") in _BIT_GENERATORS,
             "a generator state must name one of %s" % (_BIT_GENERATORS,))
    try:
        st = _decode_arrays(st)
        bg = getattr(np.random, st["bit_generator"])()
        bg.state = st
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _Bad("bad generator state: %s" % exc) from None
    return bg


def _check_history(hd):
    from .trainer import History
    _require(isinstance(hd, dict) and set(hd) == {"rows", "best_epoch", "n_val", "stop_reason",
                                                  "interrupted", "warnings"},
             "bad history entry")
    rows = hd["rows"]
    _require(isinstance(rows, dict) and set(rows) == set(History.KEYS),
             "history columns must be %s" % (History.KEYS,))
    n = len(rows["epoch"]) if isinstance(rows["epoch"], list) else -1
    for k, col in rows.items():
        _require(isinstance(col, list) and len(col) == n, "history column %r is malformed" % k)
        _require(all(v is None or _is_num(v) for v in col),
                 "history column %r must hold numbers" % k)
    _require(all(_is_int(v, 1) for v in rows["epoch"]), "history epochs must be ints >= 1")
    _require(hd["best_epoch"] is None or _is_int(hd["best_epoch"], 1), "bad best_epoch")
    _require(hd["n_val"] is None or _is_int(hd["n_val"], 0), "bad n_val")
    _require(hd["stop_reason"] is None or isinstance(hd["stop_reason"], str), "bad stop_reason")
    _require(isinstance(hd["interrupted"], bool), "bad interrupted flag")
    _require(isinstance(hd["warnings"], list)
             and all(isinstance(w, str) for w in hd["warnings"]), "bad warnings")
    h = History()
    for k in History.KEYS:
        setattr(h, k, list(rows[k]))
    for k in ("best_epoch", "n_val", "stop_reason", "interrupted"):
        setattr(h, k, hd[k])
    h.warnings = list(hd["warnings"])
    return h


def _check_model(arrays, model, prefix, what):
    expected = dict(model._state_items())
    keys = {k[len(prefix):] for k in arrays if k.startswith(prefix)}
    missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
    _require(not missing and not extra, "%s arrays do not match the model: missing %s, "
             "unexpected %s" % (what, missing or "none", extra or "none"))
    out = {}
    for k, target in expected.items():
        a = arrays[prefix + k]
        _require(a.dtype == target.dtype and a.shape == target.shape,
                 "%s array %r must be %s of shape %s, got %s of shape %s"
                 % (what, k, target.dtype, target.shape, a.dtype, a.shape))
        out[k] = a
    return out


def _check_optimizer(om, arrays, optimizer):
    fn_type = type(optimizer).__name__
    _require(isinstance(om, dict) and set(om) == {"type", "param_groups", "state"},
             "bad optimizer entry")
    _require(om["type"] == fn_type, "the checkpoint's optimizer is %r, this one is %s"
             % (om["type"], fn_type))
    groups = om["param_groups"]
    _require(isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict),
             "the optimizer must have one parameter group")
    group = dict(groups[0])
    params = optimizer.params
    ids = group.pop("params", None)
    _require(ids == list(range(len(params))), "the checkpoint's optimizer has %s parameters, "
             "this one has %d" % ("?" if not isinstance(ids, list) else len(ids), len(params)))
    known = set(optimizer.param_groups[0]) | {"initial_lr"}
    _require(set(group) <= known and set(optimizer.param_groups[0]) <= set(group),
             "optimizer hyperparameters %s do not match %s" % (sorted(group), sorted(known)))
    hyper = {k: v for k, v in group.items() if k != "initial_lr"}
    if "betas" in hyper and isinstance(hyper["betas"], list):
        hyper["betas"] = tuple(hyper["betas"])
    # build a throw-away optimizer over copies: validates the values, touches nothing
    try:
        type(optimizer)([Parameter(np.zeros(p.shape, p.dtype)) for p in params], **hyper)
    except (TypeError, ValueError) as exc:
        raise _Bad("bad optimizer hyperparameters: %s" % exc) from None
    _require("initial_lr" not in group or _is_num(group["initial_lr"]), "bad initial_lr")
    state = {}
    raw = om["state"]
    _require(isinstance(raw, dict), "bad optimizer state")
    for key, s in raw.items():
        _require(key.isdigit() and int(key) < len(params) and isinstance(s, dict)
                 and set(s) == {"step", "arrays"}, "bad optimizer state entry %r" % key)
        i = int(key)
        st = {}
        if s["step"] is not None:
            _require(_is_int(s["step"], 0), "optimizer step must be an int >= 0")
            st["step"] = s["step"]
        _require(isinstance(s["arrays"], list), "bad optimizer state entry %r" % key)
        for name in s["arrays"]:
            _require(name in optimizer._state_names, "unknown optimizer state %r" % (name,))
            a = arrays.get("optimizer/%d/%s" % (i, name))
            _require(a is not None and a.dtype == params[i].dtype and a.ndim == 1
                     and a.size == params[i].size,
                     "optimizer state %d/%s is missing or mis-shaped" % (i, name))
            st[name] = a
        state[i] = st
    n_arrays = sum(1 for k in arrays if k.startswith("optimizer/"))
    _require(n_arrays == sum(len(s) - ("step" in s) for s in state.values()),
             "unexpected optimizer arrays")
    group = dict(groups[0])
    return {"state": state, "param_groups": [group]}


def _check_scheduler(sm, scheduler):
    _require(isinstance(sm, dict) and set(sm) == {"type", "state"}, "bad scheduler entry")
    _require(sm["type"] == type(scheduler).__name__, "the checkpoint's scheduler is %r, this "
             "one is %s" % (sm["type"], type(scheduler).__name__))
    cur, new = scheduler.state_dict(), sm["state"]
    _require(isinstance(new, dict) and set(new) == set(cur), "scheduler state keys differ")
    for k, v in cur.items():
        w = new[k]
        if isinstance(v, bool):
            _require(isinstance(w, bool), "scheduler %r must be a bool" % k)
        elif _is_num(v):
            _require(_is_num(w) and (not _is_int(v) or _is_int(w)),
                     "scheduler %r must be a number" % k)
        elif isinstance(v, list):
            _require(isinstance(w, list) and all(_is_num(x) for x in w),
                     "scheduler %r must be a list of numbers" % k)
        else:
            _require(v == w, "scheduler %r differs" % k)
    return new


def _check_fit(fm, arrays, model, n_rngs):
    _require(isinstance(fm, dict) and set(fm) == set(_FIT_KEYS) | {"shuffle_rng", "best_state"},
             "bad fit-state entry")
    for k in ("start", "bad_epochs"):
        _require(_is_int(fm[k], 0), "fit %s must be an int >= 0" % k)
    for k in ("epochs", "n", "batch_size"):
        _require(_is_int(fm[k], 1), "fit %s must be an int >= 1" % k)
    for k in ("shuffle", "validation", "restore_best", "best_state"):
        _require(isinstance(fm[k], bool), "fit %s must be a bool" % k)
    bs = fm["best_score"]
    _require(bs is None or (isinstance(bs, list) and 1 <= len(bs) <= 2
                            and all(_is_num(x) for x in bs)), "bad best score")
    _require(_is_int(fm["shuffle_rng"], 0) and fm["shuffle_rng"] < n_rngs,
             "bad shuffling generator reference")
    fit = dict(fm)
    fit["best_score"] = None if bs is None else tuple(bs)
    fit["best_state"] = (_check_model(arrays, model, "best/", "best-parameters")
                         if fm["best_state"] else None)
    if not fm["best_state"]:
        _require(not any(k.startswith("best/") for k in arrays), "unexpected best arrays")
    return fit


def load_checkpoint(path, trainer=None, *, model=None, optimizer=None, scheduler=None):
    """Restore a checkpoint written by `save_checkpoint` into `trainer` (or into
    model / optimizer / scheduler, which must match the saved ones: same architecture,
    optimizer and scheduler types). Also restores fastnn's global generator and the
    Dropout generators. Returns a dict: "epoch" (epochs done), "history" (a History or
    None), "fit" (the saved run state or None).

    Raises ValueError, without changing anything, when the file is not a valid
    checkpoint for these objects (corrupted, truncated, wrong version, object arrays,
    different architecture...); FileNotFoundError when it does not exist."""
    fn = "load_checkpoint"
    model, optimizer, scheduler = _parts(fn, trainer, model, optimizer, scheduler)
    path = os.fspath(path)
    try:
        plan = _validate(path, trainer, model, optimizer, scheduler)
    except _Bad as exc:
        raise _bad(path, str(exc)) from None
    return _apply(plan, trainer, model, optimizer, scheduler)


def _validate(path, trainer, model, optimizer, scheduler):
    arrays = _read_npz(path)
    blob = arrays.pop(META_KEY, None)
    _require(blob is not None, "no %r entry" % META_KEY)
    _require(blob.dtype == np.uint8 and blob.ndim == 1, "the metadata must be 1-D uint8")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Bad("metadata is not valid JSON (%s)" % exc) from None
    keys = {"format", "version", "model", "optimizer", "scheduler", "trainer", "global_rng",
            "dropout", "rngs"}
    _require(isinstance(meta, dict) and set(meta) == keys, "metadata keys must be %s"
             % sorted(keys))
    _require(meta["format"] == FORMAT, "format %r is not %r" % (meta["format"], FORMAT))
    _require(_is_int(meta["version"]) and meta["version"] == VERSION,
             "unsupported version %r (this fastnn reads version %d)" % (meta["version"], VERSION))
    for k, a in arrays.items():
        _require(a.dtype.kind == "f", "array %r must be float, got %s" % (k, a.dtype))
        _require(k.startswith(("model/", "optimizer/", "best/")), "unexpected array %r" % k)
    # model: same architecture (fastnn.io's description) and arrays
    _require(meta["model"] == {"format": _io.FORMAT, "version": _io.VERSION,
                               "model": json.loads(json.dumps(_io._node(model)))},
             "it was saved from a different model architecture")
    plan = {"model": _check_model(arrays, model, "model/", "model")}
    # generators
    rngs = meta["rngs"]
    _require(isinstance(rngs, list), "bad generator list")
    plan["rngs"] = [_check_rng_state(st) for st in rngs]
    g = meta["global_rng"]
    _require(_is_int(g, 0) and g < len(rngs), "bad global generator reference")
    plan["global_rng"] = g
    drop = meta["dropout"]
    names = [n for n, _ in _dropouts(model)]
    _require(isinstance(drop, dict) and sorted(drop) == sorted(names), "bad Dropout entry")
    _require(all(v is None or (_is_int(v, 0) and v < len(rngs)) for v in drop.values()),
             "bad Dropout generator reference")
    plan["dropout"] = drop
    # optimizer / scheduler: present in both or in neither
    _require((meta["optimizer"] is None) == (optimizer is None),
             "the checkpoint %s an optimizer" % ("has no" if optimizer is not None else "has"))
    _require((meta["scheduler"] is None) == (scheduler is None),
             "the checkpoint %s a scheduler" % ("has no" if scheduler is not None else "has"))
    plan["optimizer"] = (_check_optimizer(meta["optimizer"], arrays, optimizer)
                         if optimizer is not None else None)
    _require(optimizer is not None or not any(k.startswith("optimizer/") for k in arrays),
             "unexpected optimizer arrays")
    plan["scheduler"] = (_check_scheduler(meta["scheduler"], scheduler)
                         if scheduler is not None else None)
    # trainer
    tm = meta["trainer"]
    plan["trainer"] = None
    if trainer is not None:
        _require(isinstance(tm, dict) and set(tm) == {"epochs_done", "global_step", "history",
                                                      "fit"},
                 "the checkpoint has no trainer state")
        _require(_is_int(tm["epochs_done"], 0) and _is_int(tm["global_step"], 0),
                 "bad trainer counters")
        history = _check_history(tm["history"])
        fit = None if tm["fit"] is None else _check_fit(tm["fit"], arrays, model, len(rngs))
        plan["trainer"] = {"epochs_done": tm["epochs_done"], "global_step": tm["global_step"],
                           "history": history, "fit": fit}
    elif tm is not None:
        _require(isinstance(tm, dict) and _is_int(tm.get("epochs_done"), 0),
                 "bad trainer counters")
        plan["epoch"] = tm["epochs_done"]
    if trainer is None or tm is None or tm.get("fit") is None:
        _require(not any(k.startswith("best/") for k in arrays), "unexpected best arrays")
    return plan


def _apply(plan, trainer, model, optimizer, scheduler):
    """Mutate: only called once everything validated."""
    model.load_state_dict(plan["model"])
    gens = []
    for k, bg in enumerate(plan["rngs"]):
        if k == plan["global_rng"]:
            cur = _random.global_rng()
            if type(cur.bit_generator) is type(bg):
                cur.bit_generator.state = bg.state
            else:
                _random._global = np.random.Generator(bg)
            gens.append(_random.global_rng())
        else:
            gens.append(np.random.Generator(bg))
    for name, mod in _dropouts(model):
        idx = plan["dropout"][name]
        mod._rng = None if idx is None else gens[idx]
    if optimizer is not None:
        optimizer.load_state_dict(plan["optimizer"])
        _reflatten(optimizer)
    if scheduler is not None:
        scheduler.load_state_dict(plan["scheduler"])
    info = {"epoch": plan.get("epoch"), "history": None, "fit": None}
    tp = plan["trainer"]
    if tp is not None:
        trainer.epochs_done = tp["epochs_done"]
        trainer.global_step = tp["global_step"]
        trainer.history = tp["history"]
        fit = tp["fit"]
        if fit is not None:
            fit = dict(fit)
            fit["rng"] = gens[fit.pop("shuffle_rng")]
        trainer._fit_state = fit
        info.update(epoch=tp["epochs_done"], history=tp["history"], fit=fit)
    return info


def _reflatten(optimizer):
    """`Optimizer.load_state_dict` validates by building a second optimizer over the same
    parameters, which moves them into that one's flat buffer; put them back into this
    optimizer's own flat buffer so it keeps using the one fused update (bit-identical
    to an uninterrupted run)."""
    flat = getattr(optimizer, "_flat", None)
    if flat is None:
        return
    rebuilt = type(flat).build(optimizer._params)
    if rebuilt is not None:
        optimizer._flat = rebuilt

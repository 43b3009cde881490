"""Training checkpoints: everything needed to resume a run bit-identically, in one .npz.

A checkpoint holds the model (fastnn.io's architecture JSON + state_dict arrays), the
optimizer (state arrays + hyperparameters), the scheduler, the trainer's epoch /
step counters, its History so far, the best-epoch tracking of the run in progress
(best score, saved best parameters, early-stopping counter) and every random state
that affects training: the shuffling generator of `Trainer.fit`, fastnn's global
generator and each Dropout layer's generator. Generator states are stored as JSON;
loading never unpickles (`np.load(..., allow_pickle=False)`).

Writing is atomic (temporary file in the same directory + `os.replace`; permissions,
symbolic links and stale temporary files as `fastnn.save`): a crash during a save
leaves the previous checkpoint intact. Reading (`read_checkpoint`) validates the whole
file against the target trainer / model first -- sizes from the archive's directory
and headers before anything is decompressed, then every field's type, range and
consistency -- and raises ValueError (changing nothing) for a corrupted, truncated,
forged, foreign or wrong-version file; `Checkpoint.apply()` then restores it. The
objects are restored through their public state methods: ``model.load_state_dict``,
``optimizer.load_state_dict``, ``scheduler.load_state_dict``,
``trainer.load_run_state``, ``Dropout.generator``.

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

import numpy as np

from .. import io as model_io
from ..core import rng as random_state
from ..core.archive import ArchiveError, NpzArchive, atomic_savez
from ..core.validation import Integer
from ..layers.base import Module
from ..layers.dropout import Dropout
from ..optim import LRScheduler, Optimizer

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "Checkpoint"]

META_KEY = model_io.CHECKPOINT_KEY
FORMAT = "fastnn.train.checkpoint"
VERSION = 1
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
#: an int inside a generator state (PCG64's are 128-bit)
_STATE_INT = Integer(0, 2 ** 128 - 1)
_META_KEYS = {"format", "version", "model", "optimizer", "scheduler", "trainer",
              "global_rng", "dropout", "rngs"}
_PREFIXES = ("model/", "optimizer/", "best/")


# ------------------------------------------------------------------------ helpers
def _parts(fn, trainer, model, optimizer, scheduler):
    if trainer is not None:
        if model is not None or optimizer is not None or scheduler is not None:
            raise TypeError("%s: pass either a Trainer or model/optimizer/scheduler, not both"
                            % fn)
        if not callable(getattr(trainer, "run_state", None)):
            raise TypeError("%s: expected a fastnn Trainer, got %s" % (fn, type(trainer).__name__))
        return trainer.model, trainer.optimizer, trainer.scheduler
    if not isinstance(model, Module):
        raise TypeError("%s: expected a Trainer or model=<fastnn Module>, got %s"
                        % (fn, type(model).__name__))
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError("%s: optimizer must be a fastnn optimizer, got %s"
                        % (fn, type(optimizer).__name__))
    if scheduler is not None and (optimizer is None or not isinstance(scheduler, LRScheduler)):
        raise TypeError("%s: scheduler must be a fastnn scheduler, with its optimizer" % fn)
    return model, optimizer, scheduler


def _dropouts(model):
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


def _write_npz(f, arrays):
    """Write the archive to the open file `f` (a separate function so tests can make it
    fail half-way)."""
    np.savez(f, **arrays)


def _state_shapes(model):
    """{state_dict key: (dtype, shape)} of a model, without copying anything."""
    shapes = {k: (p.dtype, p.shape) for k, p in model.named_parameters()}
    shapes.update((k, (b.dtype, b.shape)) for k, b in model.named_buffers())
    return shapes


# ------------------------------------------------------------------------ save
class _Generators:
    """The table of generator states a checkpoint stores; objects are referenced by
    index, so one generator used in several places stays one after loading."""

    def __init__(self):
        self.states, self._index = [], {}

    def ref(self, gen):
        if gen is None:
            return None
        if id(gen) not in self._index:
            self._index[id(gen)] = len(self.states)
            self.states.append(gen.bit_generator.state)
        return self._index[id(gen)]


def save_checkpoint(path, trainer=None, *, model=None, optimizer=None, scheduler=None):
    """Write a checkpoint of `trainer` (or of model / optimizer / scheduler) to `path`
    (the exact path; no suffix added), atomically.

    With a Trainer, also saves its `run_state()`: epoch and step counters, History and,
    while or after `fit` ran, the state of that run (shuffling generator, best epoch
    tracking, early-stopping counter) so that ``fit(..., resume=path)`` continues it."""
    fn = "save_checkpoint"
    model, optimizer, scheduler = _parts(fn, trainer, model, optimizer, scheduler)
    gens = _Generators()
    arrays = {"model/" + k: v for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION,
            "model": {"format": model_io.FORMAT, "version": model_io.VERSION,
                      "model": model_io.architecture(model, fn)},
            "global_rng": gens.ref(random_state.global_rng()),
            "dropout": {n: gens.ref(m.generator) for n, m in _dropouts(model)},
            "optimizer": None if optimizer is None else _optimizer_meta(optimizer, arrays),
            "scheduler": None if scheduler is None else {"type": type(scheduler).__name__,
                                                         "state": scheduler.state_dict()},
            "trainer": None if trainer is None else _trainer_meta(trainer, gens, arrays)}
    meta["rngs"] = gens.states
    try:
        blob = json.dumps(meta, default=_json_default, allow_nan=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError("%s: %s" % (fn, exc)) from None
    arrays[META_KEY] = np.frombuffer(blob, dtype=np.uint8)
    atomic_savez(os.fspath(path), arrays, _write_npz, fn)


def _optimizer_meta(optimizer, arrays):
    sd = optimizer.state_dict()
    state = {}
    for i, s in sd["state"].items():
        names = sorted(k for k, v in s.items() if isinstance(v, np.ndarray))
        state[str(i)] = {"step": s.get("step"), "arrays": names}
        for name in names:
            arrays["optimizer/%d/%s" % (i, name)] = s[name]
    return {"type": type(optimizer).__name__, "param_groups": sd["param_groups"],
            "state": state}


def _trainer_meta(trainer, gens, arrays):
    state = trainer.run_state()
    fit = state["fit"]
    if fit is not None:
        fit = dict(fit)
        fit["shuffle_rng"] = gens.ref(fit.pop("rng"))
        best = fit.pop("best_state")
        fit["best_state"] = best is not None
        arrays.update(("best/" + k, v) for k, v in (best or {}).items())
    return {"epochs_done": state["epochs_done"], "global_step": state["global_step"],
            "history": state["history"], "fit": fit}


# ------------------------------------------------------------------------ load
class _Bad(ValueError):
    """A reason the file is not a valid checkpoint (the caller adds the path)."""


def _require(cond, reason):
    if not cond:
        raise _Bad(reason)


def load_checkpoint(path, trainer=None, *, model=None, optimizer=None, scheduler=None):
    """Restore a checkpoint written by `save_checkpoint` into `trainer` (or into
    model / optimizer / scheduler, which must match the saved ones: same architecture,
    optimizer and scheduler types). Also restores fastnn's global generator and the
    Dropout generators. Returns a dict: "epoch" (epochs done), "history" (a History or
    None), "fit" (the saved run state or None).

    Raises ValueError, without changing anything, when the file is not a valid
    checkpoint for these objects (`read_checkpoint`); FileNotFoundError when it does
    not exist."""
    return read_checkpoint(path, trainer, model=model, optimizer=optimizer,
                           scheduler=scheduler).apply()


def read_checkpoint(path, trainer=None, *, model=None, optimizer=None, scheduler=None):
    """Read and validate a checkpoint for these objects without changing them: a
    `Checkpoint` whose `apply()` restores it. ValueError for a file that is not a valid
    checkpoint for them, FileNotFoundError for a missing one."""
    fn = "load_checkpoint"
    model, optimizer, scheduler = _parts(fn, trainer, model, optimizer, scheduler)
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError("%s: no such file: %s" % (fn, path))
    try:
        with NpzArchive(path) as archive:
            plan = _read(archive, trainer, model, optimizer, scheduler)
    except (_Bad, ArchiveError) as exc:
        raise ValueError("%s: %s is not a valid fastnn checkpoint: %s"
                         % (fn, path, exc)) from None
    return Checkpoint(plan, trainer, model, optimizer, scheduler)


def _read(archive, trainer, model, optimizer, scheduler):
    """Everything the checkpoint restores, validated against the objects: sizes first
    (from the archive's headers), then every value; nothing is changed."""
    names = set(archive.names)
    if META_KEY not in names:
        _require(model_io.ARCH_KEY not in names,
                 "it is a fastnn model file (fastnn.save); use fastnn.load")
        raise _Bad("no %r entry (not written by save_checkpoint)" % META_KEY)
    meta = model_io.read_json(archive, META_KEY, _Bad)
    _check_meta(meta, model, optimizer, scheduler, trainer)
    expected = _expected_arrays(meta, model, optimizer)
    arrays = _read_arrays(archive, names - {META_KEY}, expected)
    gens = [_generator(state) for state in meta["rngs"]]
    tm = meta["trainer"]
    plan = {"model": {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")},
            "generators": gens, "global_rng": meta["global_rng"], "dropout": meta["dropout"],
            "optimizer": None, "scheduler": None, "trainer": None,
            "epoch": tm["epochs_done"] if tm is not None else None}
    if optimizer is not None:
        plan["optimizer"] = _optimizer_state(meta["optimizer"], arrays)
        _owner_check(optimizer.check_state_dict, plan["optimizer"], "optimizer")
    if scheduler is not None:
        plan["scheduler"] = meta["scheduler"]["state"]
        _owner_check(scheduler.check_state_dict, plan["scheduler"], "scheduler")
    if trainer is not None:
        plan["trainer"] = _run_state(tm, arrays, gens)
        _owner_check(trainer.check_run_state, plan["trainer"], "trainer")
    return plan


def _owner_check(check, value, what):
    """The owner's own validation of its saved state, as a reason the file is bad."""
    try:
        check(value)
    except (TypeError, ValueError) as exc:
        raise _Bad("%s state: %s" % (what, exc)) from None


def _check_meta(meta, model, optimizer, scheduler, trainer):
    """The metadata's form: keys, format, version, architecture, generator references,
    which parts it holds, and the optimizer's and trainer's entries' structure."""
    _require(isinstance(meta, dict) and set(meta) == _META_KEYS,
             "metadata keys must be %s" % sorted(_META_KEYS))
    _require(meta["format"] == FORMAT, "format %.80r is not %r" % (meta["format"], FORMAT))
    _require(meta["version"] == VERSION and not isinstance(meta["version"], bool),
             "unsupported version %.80r (this fastnn reads version %d)"
             % (meta["version"], VERSION))
    arch = {"format": model_io.FORMAT, "version": model_io.VERSION,
            "model": model_io.architecture(model, "load_checkpoint")}
    _require(meta["model"] == json.loads(json.dumps(arch)),
             "it was saved from a different model architecture")
    rngs = meta["rngs"]
    _require(isinstance(rngs, list) and len(rngs) <= len(_dropouts(model)) + 2,
             "bad generator list")
    _require(_is_ref(meta["global_rng"], len(rngs)), "bad global generator reference")
    drop = meta["dropout"]
    _require(isinstance(drop, dict) and set(drop) == {n for n, _ in _dropouts(model)}
             and all(v is None or _is_ref(v, len(rngs)) for v in drop.values()),
             "bad Dropout generator entry")
    for what, obj, entry in (("an optimizer", optimizer, meta["optimizer"]),
                             ("a scheduler", scheduler, meta["scheduler"])):
        _require((entry is None) == (obj is None),
                 "the checkpoint %s %s" % ("has no" if obj is not None else "has", what))
        if obj is not None:
            _require(isinstance(entry, dict) and entry.get("type") == type(obj).__name__,
                     "the checkpoint's %s is %.80r, this one is %s"
                     % (what[2:], entry.get("type") if isinstance(entry, dict) else entry,
                        type(obj).__name__))
    if optimizer is not None:
        _check_optimizer_entry(meta["optimizer"], len(optimizer.params))
    if meta["scheduler"] is not None:
        _require(set(meta["scheduler"]) == {"type", "state"}, "bad scheduler entry")
    _check_trainer_entry(meta["trainer"], trainer is not None, len(rngs))


def _is_ref(value, n):
    return Integer(0, n - 1).accepts_type(value) and 0 <= value < n


def _check_optimizer_entry(om, n_params):
    _require(set(om) == {"type", "param_groups", "state"} and isinstance(om["state"], dict),
             "bad optimizer entry")
    for key, s in om["state"].items():
        _require(key.isdigit() and int(key) < n_params and isinstance(s, dict)
                 and set(s) == {"step", "arrays"} and isinstance(s["arrays"], list)
                 and len(s["arrays"]) <= 8
                 and all(isinstance(a, str) for a in s["arrays"])
                 and len(set(s["arrays"])) == len(s["arrays"]),
                 "bad optimizer state entry %.20r" % key)


def _check_trainer_entry(tm, needed, n_rngs):
    if tm is None:
        _require(not needed, "the checkpoint has no trainer state")
        return
    _require(isinstance(tm, dict) and set(tm) == {"epochs_done", "global_step", "history",
                                                  "fit"},
             "bad trainer entry")
    _require(Integer(0).accepts_type(tm["epochs_done"]) and tm["epochs_done"] >= 0,
             "bad trainer counters")
    fit = tm["fit"]
    _require(fit is None or (isinstance(fit, dict) and _is_ref(fit.get("shuffle_rng"), n_rngs)
                             and isinstance(fit.get("best_state"), bool)),
             "bad fit-state entry")


def _expected_arrays(meta, model, optimizer):
    """{array name: (dtype, shape)} the metadata says the archive holds."""
    shapes = _state_shapes(model)
    expected = {"model/" + k: v for k, v in shapes.items()}
    if optimizer is not None:
        params = optimizer.params
        for key, s in meta["optimizer"]["state"].items():
            p = params[int(key)]
            expected.update(("optimizer/%s/%s" % (key, name), (p.dtype, (p.size,)))
                            for name in s["arrays"])
    fit = meta["trainer"]["fit"] if meta["trainer"] is not None else None
    if fit is not None and fit["best_state"]:
        expected.update(("best/" + k, v) for k, v in shapes.items())
    return expected


def _read_arrays(archive, present, expected):
    """The arrays, once every name, dtype and shape matched the expectation."""
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    _require(not missing and not extra, "arrays do not match the model and optimizer: "
             "missing %s, unexpected %s" % (missing[:10] or "none", extra[:10] or "none"))
    for name, (dtype, shape) in expected.items():
        got = archive.header(name)
        _require(got == (dtype, shape), "array %r must be %s of shape %s, got %s of shape %s"
                 % (name, dtype, shape, got[0], got[1]))
    return {name: archive.read(name) for name in expected}


def _generator(state):
    """A Generator from a stored bit-generator state, its structure checked against a
    fresh generator's of the same kind (so no depth or size is taken from the file)."""
    _require(isinstance(state, dict) and state.get("bit_generator") in _BIT_GENERATORS,
             "a generator state must name one of %s" % (_BIT_GENERATORS,))
    bit_gen = getattr(np.random, state["bit_generator"])()
    value = _like(bit_gen.state, state, "generator state")
    try:
        bit_gen.state = value
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise _Bad("bad generator state: %s" % exc) from None
    return np.random.Generator(bit_gen)


def _like(template, value, where):
    """`value` decoded with the structure of `template` (dicts, ints, strings, arrays
    stored as {"__ndarray__": dtype, "data": list}); _Bad where it differs."""
    if isinstance(template, dict):
        _require(isinstance(value, dict) and set(value) == set(template),
                 "%s must have the keys %s" % (where, sorted(template)))
        return {k: _like(template[k], value[k], "%s.%s" % (where, k)) for k in template}
    if isinstance(template, np.ndarray):
        _require(isinstance(value, dict) and set(value) == {"__ndarray__", "data"}
                 and value["__ndarray__"] == template.dtype.str
                 and isinstance(value["data"], list) and len(value["data"]) == template.size
                 and all(_STATE_INT.accepts_type(v) and _STATE_INT.in_range(v)
                         for v in value["data"]),
                 "%s must be %d ints of %s" % (where, template.size, template.dtype))
        try:
            return np.array(value["data"], dtype=template.dtype).reshape(template.shape)
        except OverflowError:
            raise _Bad("%s holds values out of range for %s" % (where, template.dtype)) from None
    if isinstance(template, str):
        _require(value == template, "%s must be %r" % (where, template))
        return value
    _require(_STATE_INT.accepts_type(value) and _STATE_INT.in_range(value),
             "%s must be an int in [0, 2**128)" % where)
    return value


def _optimizer_state(om, arrays):
    """The optimizer's state_dict as the checkpoint stores it."""
    state = {}
    for key, s in om["state"].items():
        entry = {name: arrays["optimizer/%s/%s" % (key, name)] for name in s["arrays"]}
        if s["step"] is not None:
            entry["step"] = s["step"]
        state[int(key)] = entry
    return {"state": state, "param_groups": om["param_groups"]}


def _run_state(tm, arrays, gens):
    """The trainer's run_state as the checkpoint stores it (generators resolved)."""
    fit = tm["fit"]
    if fit is not None:
        fit = dict(fit)
        fit["rng"] = gens[fit.pop("shuffle_rng")]
        fit["best_state"] = ({k[len("best/"):]: v for k, v in arrays.items()
                              if k.startswith("best/")} if fit["best_state"] else None)
    return {"epochs_done": tm["epochs_done"], "global_step": tm["global_step"],
            "history": tm["history"], "fit": fit}


class Checkpoint:
    """A checkpoint read and validated by `read_checkpoint` for given objects; nothing
    has changed until `apply()`. `run_state` is the trainer's saved `run_state()` (None
    when reading into model / optimizer / scheduler)."""

    def __init__(self, plan, trainer, model, optimizer, scheduler):
        self._plan = plan
        self._objects = (trainer, model, optimizer, scheduler)
        self.run_state = plan["trainer"]

    def apply(self):
        """Restore everything (once); returns {"epoch", "history", "fit"} as
        `load_checkpoint`."""
        plan, (trainer, model, optimizer, scheduler) = self._plan, self._objects
        model.load_state_dict(plan["model"])
        gens = _install_global(plan["generators"], plan["global_rng"])
        for name, layer in _dropouts(model):
            index = plan["dropout"][name]
            layer.generator = None if index is None else gens[index]
        if optimizer is not None:
            optimizer.load_state_dict(plan["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(plan["scheduler"])
        info = {"epoch": plan["epoch"], "history": None, "fit": None}
        run = plan["trainer"]
        if run is not None:
            if run["fit"] is not None:         # the restored generator, if it is the global
                run["fit"]["rng"] = gens[plan["generators"].index(run["fit"]["rng"])]
            trainer.load_run_state(run)
            info.update(history=trainer.history, fit=run["fit"])
        return info


def _install_global(gens, index):
    """Make generator `index` fastnn's global one: the current global generator takes
    its state when it is of the same kind (code holding it keeps working), else it is
    replaced. Returns the generator list with the global one in place."""
    current, new = random_state.global_rng(), gens[index]
    if type(current.bit_generator) is type(new.bit_generator):
        current.bit_generator.state = new.bit_generator.state
        new = current
    else:
        random_state.set_global_rng(new)
    return gens[:index] + [new] + gens[index + 1:]

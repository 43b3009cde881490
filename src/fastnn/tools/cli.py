"""Command line: ``python -m fastnn <command>`` or the ``fastnn`` console script.

Commands: ``info`` (build configuration), ``demo`` (MLP on the bundled digits),
``train`` (a CSV / IDX / NPZ data file, architecture from a short spec), ``search``
(random search over learning rate and weight decay). ``fastnn <command> --help`` lists
the options. Bad arguments and unreadable or malformed files print one line on stderr
and exit with status 2; a diverging run exits with 1; Ctrl-C with 130.

Extending: a module listed in `PLUGINS` (``fastnn.tools.bench`` today) that can be imported
and has ``add_parser(subparsers)`` gets its subcommand: that function adds a parser
and sets ``func=callable(args) -> exit status`` with ``set_defaults``.

Architecture specs (``--arch``): comma-separated layers; each hidden layer is a width
followed by dash-separated modifiers applied in order: ``bn`` (BatchNorm1d), ``relu``,
``tanh``, ``sigmoid``, ``gelu``, ``leaky_relu``, ``elu``, ``silu`` and ``dropoutP``
(Dropout with p=P, e.g. ``dropout0.2``). The last entry is the output size.
Example: ``256-bn-relu,128-relu-dropout0.2,10``. An activation right after the width is
fused into the Dense layer; tanh / sigmoid layers get Xavier init, the rest He init.
"""
import argparse
import os
import sys
import time

import numpy as np

from ..kernels.activation_table import ACTIVATIONS, LAYER_NAMES

__all__ = ["main", "build_parser", "build_mlp", "PLUGINS"]

#: modules that may contribute a subcommand through add_parser(subparsers)
PLUGINS = ["fastnn.tools.bench"]

_ACTS = LAYER_NAMES          # the activation table's names that have a layer
_LOSSES = {"ce": "SoftmaxCrossEntropy", "hinge": "MulticlassHinge", "bce": "BCEWithLogits",
           "mse": "MSE"}
_OPTIMIZERS = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3,
               "rmsprop": 1e-3, "adagrad": 1e-2}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


# ------------------------------------------------------------------- architecture
def build_mlp(spec, in_features, dtype=np.float32):
    """A Sequential MLP from an architecture spec (see the module docstring).

    >>> build_mlp("32-bn-relu,16-tanh-dropout0.1,3", 8)        # doctest: +ELLIPSIS
    Sequential(...)
    """
    from .. import layers as L
    from ..layers import BatchNorm1d, Dense, Dropout, Sequential
    if not isinstance(spec, str) or not spec.strip():
        raise CLIError("--arch: empty architecture spec")
    entries = [e.strip() for e in spec.split(",")]
    layers, width = [], in_features
    for k, entry in enumerate(entries):
        tokens = [t.strip().lower() for t in entry.split("-")]
        try:
            out = int(tokens[0])
        except ValueError:
            raise CLIError("--arch: entry %d (%r) must start with a layer width, e.g. "
                           "'128-relu'" % (k + 1, entry)) from None
        if out < 1:
            raise CLIError("--arch: entry %d (%r): the width must be >= 1" % (k + 1, entry))
        mods = tokens[1:]
        if k == len(entries) - 1 and mods:
            raise CLIError("--arch: the last entry (%r) is the output size and takes no "
                           "modifiers" % entry)
        for m in mods:
            if m not in _ACTS and m != "bn" and not m.startswith("dropout"):
                raise CLIError("--arch: unknown modifier %r in %r (expected bn, %s or "
                               "dropoutP)" % (m, entry, ", ".join(_ACTS)))
        acts = [m for m in mods if m in _ACTS]
        init = "xavier_normal" if acts and acts[0] in ("tanh", "sigmoid") else "he_normal"
        fused = mods[0] if mods and mods[0] in _ACTS else None
        layers.append(Dense(width, out, activation=fused, init=init, dtype=dtype))
        for m in mods[1:] if fused else mods:
            if m == "bn":
                layers.append(BatchNorm1d(out))
            elif m in _ACTS:
                layers.append(getattr(L, ACTIVATIONS[m].layer)())
            else:
                p = m[len("dropout"):].lstrip("=:") or "0.5"
                try:
                    p = float(p)
                except ValueError:
                    raise CLIError("--arch: bad dropout modifier %r (expected e.g. dropout0.2)"
                                   % m) from None
                if not 0 <= p < 1:
                    raise CLIError("--arch: dropout probability must be in [0, 1), got %g" % p)
                layers.append(Dropout(p))
        width = out
    return Sequential(*layers)


# --------------------------------------------------------------------------- data
def _load_data(args):
    """(X (N, D) float32, y, description) from args.data / --labels / --target."""
    from .. import data
    path = args.data
    if path in (None, "digits"):
        X, y = data.load_digits()
        return X, y, "bundled UCI digits"
    if not os.path.exists(path):
        raise CLIError("cannot read %r: no such file" % path)
    if os.path.isdir(path):
        raise CLIError("cannot read %r: it is a directory" % path)
    lower = path.lower()
    if lower.endswith(".npz"):
        X, y = data.load_npz(path)
    elif lower.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
        target = args.target
        try:
            target = int(target)
        except ValueError:
            pass
        delimiter = "\t" if lower.endswith(".tsv") else ","
        X, y = data.load_csv(path, target=target, delimiter=delimiter)
    elif "idx" in lower or "ubyte" in lower:
        if not args.labels:
            raise CLIError("IDX images %r need their labels file: --labels PATH" % path)
        X = data.load_idx(path)
        y = data.load_idx(args.labels)
        if len(X) != len(y):
            raise CLIError("%r has %d images but %r has %d labels"
                           % (path, len(X), args.labels, len(y)))
    else:
        raise CLIError("cannot tell the format of %r: expected .csv, .tsv, .npz or an IDX "
                       "file (name containing 'idx' or 'ubyte')" % path)
    X = np.asarray(X)
    if X.ndim < 2 or len(X) < 2:
        raise CLIError("%r: expected at least 2 samples with features, got shape %s"
                       % (path, X.shape))
    X = X.reshape(len(X), -1).astype(np.float32)
    y = np.asarray(y)
    if y.dtype.kind == "u":
        y = y.astype(np.int64)
    return X, y, path


def _loss_for(name, y):
    from .. import losses
    if name == "auto":
        name = "ce" if y.dtype.kind in "iu" and y.ndim == 1 else "mse"
    return name, getattr(losses, _LOSSES[name])()


def _check_targets(loss_name, y, out_size, path):
    """Validate labels against the loss and output size; return y shaped for the loss."""
    if loss_name in ("ce", "hinge"):
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise CLIError("%s: %s needs integer class labels, got %s values of shape %s"
                           % (path, loss_name, y.dtype, y.shape))
        if y.min() < 0:
            raise CLIError("%s: class labels must be >= 0, found %d" % (path, y.min()))
        n_classes = int(y.max()) + 1
        if n_classes > out_size:
            raise CLIError("the architecture's output size is %d but the labels go up to %d: "
                           "end --arch with %d" % (out_size, n_classes - 1, n_classes))
        return y.astype(np.int64)
    y = y.astype(np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[1] != out_size:
        raise CLIError("the architecture's output size is %d but the targets have %d "
                       "column(s)" % (out_size, y.shape[1]))
    if loss_name == "bce" and (y.min() < 0 or y.max() > 1):
        raise CLIError("%s: bce targets must be in [0, 1]" % path)
    return y


def _optimizer(name, params, lr, momentum, weight_decay):
    from .. import optim
    lr = _OPTIMIZERS[name] if lr is None else lr
    if name in ("sgd", "momentum", "nesterov"):
        mom = momentum if momentum is not None else (0.0 if name == "sgd" else 0.9)
        return optim.SGD(params, lr=lr, momentum=mom, nesterov=name == "nesterov",
                         weight_decay=weight_decay)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
           "adagrad": optim.Adagrad}[name]
    return cls(params, lr=lr, weight_decay=weight_decay)


def _fold_standardize(model, scaler):
    """Fold x -> (x - mean) / std into the first Dense layer, so the model takes raw
    inputs: W' = W / std[:, None], b' = b - (mean / std) @ W."""
    first = model[0]
    if type(first).__name__ != "Dense" or first.bias is None:
        return False
    w = first.weight.data.astype(np.float64)
    mean = np.asarray(scaler.mean_, dtype=np.float64).reshape(-1)
    std = np.asarray(scaler.std_, dtype=np.float64).reshape(-1)
    first.weight.data = (w / std[:, None]).astype(first.weight.dtype)
    first.bias.data = (first.bias.data - (mean / std) @ w).astype(first.bias.dtype)
    return True


def _plot_curves(history, path, title, quiet=False):
    from . import plots
    try:
        plots.plot_history(history, path, title=title)
    except ImportError:
        print('note: matplotlib is not installed, no learning-curve PNG '
              '(pip install "fastnn[plot]")', file=sys.stderr)
        return False
    if not quiet:
        print("learning curves written to %s" % path)
    return True


def _positive(kind):
    def conv(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected a %s, got %r"
                                             % ("number" if kind is float else "whole number",
                                                text)) from None
        if not v > 0:
            raise argparse.ArgumentTypeError("must be > 0, got %r" % text)
        return v
    return conv


def _parsed(cast, ok, rule, what="a number"):
    """An argparse type: `cast(text)`, which must satisfy `ok`, else `rule` is reported."""
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text)) from None
        if not ok(v):
            raise argparse.ArgumentTypeError("must be %s, got %r" % (rule, text))
        return v
    return parse


_fraction = _parsed(float, lambda v: 0 < v < 1, "between 0 and 1")
_nonneg_float = _parsed(float, lambda v: v >= 0, ">= 0")
_seed = _parsed(int, lambda v: v >= 0, ">= 0", "a whole number")


# ------------------------------------------------------------------------ commands
def cmd_info(args):
    from ..core.backend import show_config
    show_config()
    return 0


DEMO_ARCH = "128-bn-relu-dropout0.1,64-bn-relu-dropout0.1,10"


def cmd_demo(args):
    from ..core import rng as _random
    from .. import data, optim
    from ..losses import SoftmaxCrossEntropy
    from ..train.trainer import Trainer
    if not args.no_plot:
        _check_writable(args.plot, "--plot")
    t_start = time.perf_counter()
    epochs = args.epochs if args.epochs is not None else (10 if args.quick else 20)
    X, y = data.load_digits()
    Xtr, Xte, ytr, yte = data.train_val_split(X, y, 0.2, stratify=True, rng=args.seed)
    Xtr, Xva, ytr, yva = data.train_val_split(Xtr, ytr, 0.1, stratify=True, rng=args.seed + 1)
    n_images = len(Xtr)
    Xtr, ytr = shifted_copies(Xtr, ytr, (8, 8))
    scaler = data.Standardize().fit(Xtr)
    Xtr, Xva, Xte = scaler.transform(Xtr), scaler.transform(Xva), scaler.transform(Xte)
    _random.seed(args.seed)
    model = build_mlp(DEMO_ARCH, 64)
    opt = optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-2)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    verbose = 0 if args.quiet else 1
    if verbose:
        print("fastnn demo: 8x8 digits, %d train images (x5 with 1-pixel shifts) / %d "
              "validation / %d test, standardized" % (n_images, len(Xva), len(Xte)))
        print("model %s (%d parameters), AdamW lr 5e-3 weight decay 1e-2, cosine schedule, "
              "%d epochs, batch 32, backend %s"
              % (DEMO_ARCH, sum(p.size for p in model.parameters()), epochs, _backend()))
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=sched,
                      diagnostics=not args.no_diagnostics, verbose=verbose)
    history = trainer.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=epochs, batch_size=32,
                          seed=args.seed)
    test = trainer.evaluate(Xte, yte)
    elapsed = time.perf_counter() - t_start
    print("test accuracy %.4f (%d images), test loss %.4f, best epoch %s, %.1f s"
          % (test["accuracy"], len(Xte), test["loss"], history.best_epoch, elapsed))
    if not args.no_plot:
        _plot_curves(history, args.plot, "fastnn demo: MLP on 8x8 digits (test accuracy %.3f)"
                     % test["accuracy"], quiet=args.quiet)
    return 0


def shifted_copies(X, y, shape):
    """Data augmentation for small images: X (N, H*W) -> (5N, H*W), the originals and
    their copies shifted by one pixel right, left, down and up (zero fill); y repeated."""
    h, w = shape
    imgs = X.reshape(-1, h, w)
    out = [imgs]
    for axis, step in ((2, 1), (2, -1), (1, 1), (1, -1)):
        s = np.roll(imgs, step, axis=axis)
        edge = 0 if step == 1 else -1
        if axis == 1:
            s[:, edge, :] = 0
        else:
            s[:, :, edge] = 0
        out.append(s)
    return np.concatenate(out).reshape(len(X) * 5, h * w), np.tile(y, 5)


def _backend():
    from ..core.backend import get_backend
    return get_backend()


def _prepare_training(args):
    from .. import data
    X, y, desc = _load_data(args)
    loss_name, _ = _loss_for(args.loss, y)
    classify = loss_name in ("ce", "hinge")
    arch = args.arch
    if arch is None:
        out = int(y.max()) + 1 if classify and y.dtype.kind in "iu" else (
            1 if y.ndim == 1 else y.shape[1])
        arch = "128-bn-relu,64-relu,%d" % out
    model_probe = build_mlp(arch, X.shape[1])
    out_size = model_probe[len(model_probe) - 1].out_features
    y = _check_targets(loss_name, y, out_size, desc)
    Xtr, Xva, ytr, yva = data.train_val_split(X, y, args.val_fraction, stratify=classify,
                                              rng=args.seed)
    scaler = None
    if not args.no_standardize:
        scaler = data.Standardize().fit(Xtr)
        Xtr, Xva = scaler.transform(Xtr), scaler.transform(Xva)
    return dict(X=Xtr, y=ytr, Xv=Xva, yv=yva, arch=arch, loss_name=loss_name, scaler=scaler,
                desc=desc, in_features=X.shape[1])


def _check_writable(path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError("%s %r: the folder %r does not exist" % (option, path, folder))
    if os.path.isdir(path):
        raise CLIError("%s %r is a directory" % (option, path))


def cmd_train(args):
    from ..core import rng as _random
    from .. import io
    from ..train.trainer import Trainer
    for path, option in ((args.out, "--out"), (args.plot, "--plot")):
        if path:
            _check_writable(path, option)
    d = _prepare_training(args)
    _random.seed(args.seed)
    model = build_mlp(d["arch"], d["in_features"])
    _, loss = _loss_for(d["loss_name"], d["y"])
    opt = _optimizer(args.optimizer, model.parameters(), args.lr, args.momentum,
                     args.weight_decay)
    verbose = 0 if args.quiet else (2 if args.verbose else 1)
    if verbose:
        print("fastnn train: %s: %d train / %d validation samples, %d features; model %s, "
              "loss %s, optimizer %s lr %g" % (d["desc"], len(d["X"]), len(d["Xv"]),
                                               d["in_features"], d["arch"], type(loss).__name__,
                                               args.optimizer, opt.lr))
    trainer = Trainer(model, loss, opt, diagnostics=args.diagnostics, verbose=verbose,
                      patience=args.patience)
    history = trainer.fit(d["X"], d["y"], validation_data=(d["Xv"], d["yv"]),
                          epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    res = trainer.evaluate(d["Xv"], d["yv"])
    print("validation: " + "  ".join("%s %.4f" % kv for kv in res.items())
          + "  (best epoch %s)" % history.best_epoch)
    if args.out:
        note = ""
        if d["scaler"] is not None:
            note = (" (standardization folded into the first layer: it takes raw inputs)"
                    if _fold_standardize(model, d["scaler"]) else
                    " (expects standardized inputs)")
        try:
            io.save(model, args.out)
        except OSError as exc:
            raise CLIError("cannot write %r: %s" % (args.out, exc.strerror or exc)) from None
        print("model saved to %s%s" % (args.out, note))
    if args.plot:
        _plot_curves(history, args.plot, "fastnn train: %s" % d["desc"], quiet=args.quiet)
    return 0


def cmd_search(args):
    from ..train.search import loguniform, random_search
    from ..train.trainer import Trainer
    d = _prepare_training(args)
    lo, hi = args.lr_range
    wlo, whi = args.wd_range
    if not 0 < lo < hi:
        raise CLIError("--lr-range: expected 0 < LOW < HIGH, got %g %g" % (lo, hi))
    if not 0 < wlo < whi:
        raise CLIError("--wd-range: expected 0 < LOW < HIGH, got %g %g" % (wlo, whi))

    def build(lr, weight_decay):
        model = build_mlp(d["arch"], d["in_features"])
        _, loss = _loss_for(d["loss_name"], d["y"])
        return Trainer(model, loss, _optimizer(args.optimizer, model.parameters(), lr,
                                               args.momentum, weight_decay), verbose=0)

    if not args.quiet:
        print("fastnn search: %s, model %s, optimizer %s, %d trials x %d epochs%s"
              % (d["desc"], d["arch"], args.optimizer, args.trials, args.epochs,
                 ", successive halving" if args.halving else ""))
    results = random_search(build, {"lr": loguniform(lo, hi),
                                    "weight_decay": loguniform(wlo, whi)},
                            d["X"], d["y"], d["Xv"], d["yv"], n_trials=args.trials,
                            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            halving=args.halving, verbose=0 if args.quiet else 1)
    print(results)
    best = results.best
    print("best: lr %.3g, weight decay %.3g" % (best["lr"], best["weight_decay"]))
    return 0


# --------------------------------------------------------------------------- parser
def _add_data_args(p, optional=False):
    if optional:
        p.add_argument("data", nargs="?", default="digits",
                       help="data file (.csv, .tsv, .npz, IDX) or 'digits' (default)")
    else:
        p.add_argument("data", help="data file: .csv/.tsv (last column = target unless "
                       "--target), .npz (arrays X and y), IDX images (with --labels), or "
                       "'digits' for the bundled digits")
    p.add_argument("--labels", metavar="PATH", help="IDX labels file for IDX images")
    p.add_argument("--target", default="-1", metavar="COL",
                   help="CSV target column: index or header name (default: last)")
    p.add_argument("--arch", metavar="SPEC", help="architecture, e.g. '256-bn-relu,128-relu,10'"
                   " (default 128-bn-relu,64-relu,<outputs>)")
    p.add_argument("--loss", choices=["auto"] + list(_LOSSES), default="auto",
                   help="loss (default auto: ce for integer labels, mse otherwise)")
    p.add_argument("--optimizer", choices=list(_OPTIMIZERS), default="adam",
                   help="optimizer (default adam)")
    p.add_argument("--momentum", type=_nonneg_float, default=None,
                   help="SGD momentum (default 0.9 for momentum/nesterov)")
    p.add_argument("--batch-size", type=_positive(int), default=32, help="default 32")
    p.add_argument("--val-fraction", type=_fraction, default=0.2,
                   help="fraction held out for validation (default 0.2)")
    p.add_argument("--no-standardize", action="store_true",
                   help="do not standardize the features")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="print only the results")


def build_parser():
    parser = _Parser(prog="fastnn", description="fastnn: a fast, trustworthy CPU "
                     "deep-learning engine. Run 'fastnn COMMAND --help' for details.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("info", help="show the build and runtime configuration")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="train an MLP on the bundled 8x8 digits",
                       description="Train a 64-128-64-10 MLP (BatchNorm, ReLU, dropout, "
                       "AdamW, cosine schedule; training images augmented with 1-pixel "
                       "shifts) on the bundled digits with per-epoch progress and "
                       "diagnostics; print the test accuracy and write learning curves.")
    p.add_argument("--quick", action="store_true", help="short run (10 epochs) for CI")
    p.add_argument("--epochs", type=_positive(int), default=None,
                   help="epochs (default 20, 10 with --quick)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--plot", metavar="PATH", default="fastnn-demo.png",
                   help="learning-curve PNG (default fastnn-demo.png; needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="train without the diagnostics monitor")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train an MLP on a data file",
                       description="Train an MLP on a CSV / NPZ / IDX data file with a "
                       "validation split; optionally save it (fastnn.load reads it back).")
    _add_data_args(p)
    p.add_argument("--lr", type=_positive(float), default=None,
                   help="learning rate (default per optimizer: adam 1e-3, sgd 0.05, ...)")
    p.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="default 0")
    p.add_argument("--epochs", type=_positive(int), default=10, help="default 10")
    p.add_argument("--patience", type=_positive(int), default=None,
                   help="early stopping patience in epochs")
    p.add_argument("--diagnostics", action="store_true",
                   help="babysitting diagnostics and warnings")
    p.add_argument("--verbose", action="store_true", help="also print diagnostics tables")
    p.add_argument("--out", metavar="PATH", help="save the trained model (.npz)")
    p.add_argument("--plot", metavar="PATH", help="write a learning-curve PNG")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="random search over learning rate and weight decay",
                       description="Random search (log-uniform) over learning rate and "
                       "weight decay on a data file or the bundled digits.")
    _add_data_args(p, optional=True)
    p.add_argument("--trials", type=_positive(int), default=10, help="default 10")
    p.add_argument("--epochs", type=_positive(int), default=5,
                   help="epochs per trial (default 5)")
    p.add_argument("--lr-range", type=_positive(float), nargs=2, default=(1e-4, 1e-1),
                   metavar=("LOW", "HIGH"), help="default 1e-4 1e-1")
    p.add_argument("--wd-range", type=_positive(float), nargs=2, default=(1e-6, 1e-2),
                   metavar=("LOW", "HIGH"), help="default 1e-6 1e-2")
    p.add_argument("--halving", action="store_true", help="successive halving")
    p.set_defaults(func=cmd_search)

    for name in PLUGINS:
        try:
            mod = __import__(name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)
    return parser


def _one_line(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        text = "cannot read %r: %s" % (exc.filename, exc.strerror or exc)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv=None):
    """Entry point of ``fastnn`` / ``python -m fastnn``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        print("fastnn: error: missing COMMAND, one of %s (see --help)"
              % ", ".join(sub.choices), file=sys.stderr)
        return 2
    from ..train.trainer import NonFiniteError
    prog = "fastnn %s" % args.command
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("FASTNN_DEBUG"):
            raise
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

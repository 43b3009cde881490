"""Command line: ``python -m fastnn <command>`` or the ``fastnn`` console script.

Commands: ``info`` (build configuration), ``demo`` (MLP on the bundled digits),
``train`` (a CSV / IDX / NPZ data file, architecture from a short spec), ``predict``
(a saved model on a data file), ``search`` (random search over learning rate and weight
decay). ``fastnn --version`` prints the version; ``fastnn <command> --help`` lists the
options. ``train`` and ``search`` take ``--distributed`` to run on the MPI ranks of
``mpiexec -n K fastnn ...`` (rank 0 prints and writes the files; an error on any rank
ends them all). Bad arguments and unreadable or malformed files print one line on stderr
and exit with status 2; a diverging run exits with 1; Ctrl-C with 130.

Class labels may be integers or names (strings, in a CSV's target column or an .npz's
``y``): names are numbered in sorted order, printed, and saved with the model
(``--out``) as the entry "extra.classes", which ``fastnn predict`` prints back.

Extending: a module listed in `PLUGINS` (``fastnn.tools.bench`` today) that can be imported
and has ``add_parser(subparsers)`` gets its subcommand: that function adds a parser
and sets ``func=callable(args) -> exit status`` with ``set_defaults``.

Architecture specs (``--arch``): see `fastnn.tools.arch` (and `ARCH_HELP`, the text of
``--help``): Dense widths, convolutions ``cFkK[sS][pP][dD]``, pooling ``poolK`` /
``avgK``, ``gap``, ``flatten`` and residual blocks ``res(...)``, each with
dash-separated modifiers (``bn``, every activation of the activation table,
``dropoutP``). Examples: ``256-bn-relu,128-relu-dropout0.2,10`` and
``c16k3p1-bn-relu,pool2,c32k3-relu,gap,10``.
"""
import argparse
import contextlib
import csv
import math
import os
import sys
import time
from collections import namedtuple

import numpy as np

from .. import __version__
from ..core.validation import Integer, Real
from . import arch

__all__ = ["main", "build_parser", "build_mlp", "build_model", "option_type", "PLUGINS",
           "POSITIVE_INT"]

#: modules that may contribute a subcommand through add_parser(subparsers)
PLUGINS = ["fastnn.tools.bench"]

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
    """A Sequential MLP from an architecture spec (see `fastnn.tools.arch`).

    >>> build_mlp("32-bn-relu,16-tanh-dropout0.1,3", 8)        # doctest: +ELLIPSIS
    Sequential(...)
    """
    return build_model(spec, (in_features,), dtype)


def build_model(spec, input_shape, dtype=np.float32):
    """A Sequential from an architecture spec (`fastnn.tools.arch`) for samples of
    `input_shape`, (features,) or (C, H, W); CLIError for a bad spec."""
    try:
        return arch.build_model(spec, input_shape, dtype)
    except arch.ArchError as exc:
        raise CLIError(str(exc)) from None


# --------------------------------------------------------------------------- data
#: a data file read for training or prediction: X (N, D) float32; y (N,) int64 class
#: indices, float targets (N,) / (N, k), or None; classes: names of the class indices
#: (str, sorted) when the labels were names, else None; image_shape: (C, H, W) of a
#: sample when the file holds images (X is their pixels, flattened), else None
Data = namedtuple("Data", "X y desc classes image_shape")


def _data_format(path):
    lower = path.lower()
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
        return "csv"
    if "idx" in lower or "ubyte" in lower:
        return "idx"
    raise CLIError("cannot tell the format of %r: expected .csv, .tsv, .npz or an IDX "
                   "file (name containing 'idx' or 'ubyte')" % path)


def _check_readable(path, what="cannot read"):
    if not os.path.exists(path):
        raise CLIError("%s %r: no such file" % (what, path))
    if os.path.isdir(path):
        raise CLIError("%s %r: it is a directory" % (what, path))


def _load_data(args, labels_optional=False, n_features=None):
    """Data from args.data / --labels / --target. With `labels_optional` (prediction) a
    CSV of exactly `n_features` columns, an .npz without "y" and IDX images without
    --labels give y None."""
    from .. import data
    path = args.data
    fmt = "digits" if path in (None, "digits") else None
    if fmt is None:
        _check_readable(path)
        fmt = _data_format(path)
    if args.labels and fmt != "idx":
        raise CLIError("--labels is for IDX images only: %s holds its own labels (%s)"
                       % ("the bundled digits" if fmt == "digits" else repr(path),
                          "the CSV's target column, --target" if fmt == "csv"
                          else "the .npz's array 'y'" if fmt == "npz" else "built in"))
    classes = None
    if fmt == "digits":
        X, y = data.load_digits(images=True)
        path = "bundled UCI digits"
    elif fmt == "npz":
        X, y = _read_npz(path, labels_optional)
        y, classes = _numbered_classes(y, path)
    elif fmt == "csv":
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        if labels_optional and _csv_width(path, delimiter) == n_features:
            X, y = _read_feature_csv(path, delimiter), None
        else:
            X, y, classes = data.load_csv(path, target=_column(args.target),
                                          delimiter=delimiter, return_classes=True)
    else:
        X, y = _read_idx(path, args.labels, labels_optional)
    return Data(_features(X, path), y, path, classes, _image_shape(X))


def _column(target):
    """--target: a column index when it reads as one, else a header name."""
    try:
        return int(target)
    except ValueError:
        return target


def _read_npz(path, labels_optional):
    from .. import data
    if labels_optional:
        with np.load(path, allow_pickle=False) as archive:
            if "y" not in archive.files and "X" in archive.files:
                return archive["X"], None
    return data.load_npz(path)


def _read_idx(path, labels, labels_optional):
    from .. import data
    if not labels:
        if labels_optional:
            return data.load_idx(path), None
        raise CLIError("IDX images %r need their labels file: --labels PATH" % path)
    _check_readable(labels, "cannot read --labels")
    X, y = data.load_idx(path), data.load_idx(labels)
    if len(X) != len(y):
        raise CLIError("%r has %d images but %r has %d labels" % (path, len(X), labels, len(y)))
    return X, y


def _csv_width(path, delimiter):
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next((row for row in csv.reader(f, delimiter=delimiter) if any(row)), [])
    return len(first)


def _read_feature_csv(path, delimiter):
    """A CSV of features only (an optional header row of names is skipped)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if any(row)]
    try:
        float(rows[0][0])
    except ValueError:
        rows = rows[1:]                              # a header
    except IndexError:
        raise CLIError("%r is empty: expected rows of features" % path) from None
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        raise CLIError("%r: expected rows of numeric features, all of one length" % path) \
            from None


def _numbered_classes(y, path):
    """Labels given as names (strings) -> (their indices in the sorted names, the names);
    numeric labels pass through with classes None."""
    if y is None or y.dtype.kind in "biuf":
        return y, None
    if y.dtype.kind not in "US" or y.ndim != 1:
        raise CLIError("%r: array 'y' must hold numbers or class names (strings) in one "
                       "column, got %s of shape %s" % (path, y.dtype, y.shape))
    names, y = np.unique(y, return_inverse=True)
    return y.astype(np.int64), [str(n) for n in names]


def _image_shape(X):
    """(C, H, W) of the samples of X when they are images ((N, H, W): one channel, as
    MNIST's IDX files; (N, C, H, W)), else None."""
    shape = np.shape(X)
    return (1,) + shape[1:] if len(shape) == 3 else shape[1:] if len(shape) == 4 else None


def _features(X, path):
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise CLIError("%r: the features (array 'X' of an .npz) must be numbers, got %s"
                       % (path, X.dtype))
    if X.ndim < 2 or len(X) < 1:
        raise CLIError("%r: expected samples with features, got shape %s" % (path, X.shape))
    return X.reshape(len(X), -1).astype(np.float32)


def _loss_for(name, y):
    from .. import losses
    if name == "auto":
        name = "ce" if y.dtype.kind in "iu" and y.ndim == 1 else "mse"
    return name, getattr(losses, _LOSSES[name])()


def _n_classes(y, classes):
    return len(classes) if classes else int(y.max()) + 1


def _check_targets(loss_name, d, out_size):
    """Validate d.y against the loss and the output size; return y shaped for the loss."""
    y, path = d.y, d.desc
    if loss_name in ("ce", "hinge"):
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise CLIError("%s: %s needs integer class labels, got %s values of shape %s"
                           % (path, loss_name, y.dtype, y.shape))
        if y.min() < 0:
            raise CLIError("%s: class labels must be >= 0, found %d" % (path, y.min()))
        n_classes = _n_classes(y, d.classes)
        if n_classes != out_size:
            raise CLIError("the architecture's output size is %d but %s has %d classes "
                           "(labels 0-%d): end --arch with %d"
                           % (out_size, path, n_classes, n_classes - 1, n_classes))
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
    from ..layers import Dense
    first = model[0]
    if not isinstance(first, Dense) or first.bias is None:
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


def option_type(cast, constraint):
    """An argparse type: `cast(text)`, which must satisfy `constraint` (a
    fastnn.core.validation constraint), else argparse reports what was expected."""
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected %s, got %r"
                                             % (constraint.describe(), text)) from None
        if not constraint.in_range(value):
            raise argparse.ArgumentTypeError("must be %s, got %r"
                                             % (constraint.describe(), text))
        return value
    return parse


POSITIVE_INT = option_type(int, Integer(1))
POSITIVE_FLOAT = option_type(float, Real(0, closed="neither"))
NONNEGATIVE_FLOAT = option_type(float, Real(0))
FRACTION = option_type(float, Real(0, 1, closed="neither"))
SEED = option_type(int, Integer(0))


# ------------------------------------------------------------------------ commands
def cmd_info(args):
    from ..core.backend import show_config
    show_config()
    return 0


DEMO_ARCH = "128-bn-relu-dropout0.1,64-bn-relu-dropout0.1,10"
#: `demo --cnn`: two 3x3 convolution stages on the 8x8 images, then the classifier
DEMO_CNN_ARCH = "c32k3p1-bn-relu,pool2,c64k3p1-bn-relu,pool2-dropout0.25,10"


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
    if args.cnn:         # images (N, 1, 8, 8) scaled by one number: the pixels' std
        std = float(Xtr.std())
        Xtr, Xva, Xte = ((a / std).reshape(len(a), 1, 8, 8) for a in (Xtr, Xva, Xte))
        spec, kind, input_shape = DEMO_CNN_ARCH, "CNN", (1, 8, 8)
    else:
        scaler = data.Standardize().fit(Xtr)
        Xtr, Xva, Xte = scaler.transform(Xtr), scaler.transform(Xva), scaler.transform(Xte)
        spec, kind, input_shape = DEMO_ARCH, "MLP", (64,)
    _random.seed(args.seed)
    model = build_model(spec, input_shape)
    opt = optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-2)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    verbose = 0 if args.quiet else 1
    if verbose:
        print("fastnn demo: %s on 8x8 digits, %d train images (x5 with 1-pixel shifts) / %d "
              "validation / %d test, %s" % (kind, n_images, len(Xva), len(Xte),
                                            "scaled" if args.cnn else "standardized"))
        print("model %s (%d parameters), AdamW lr 5e-3 weight decay 1e-2, cosine schedule, "
              "%d epochs, batch 32, backend %s"
              % (spec, sum(p.size for p in model.parameters()), epochs, _backend()))
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=sched,
                      diagnostics=not args.no_diagnostics, verbose=verbose)
    history = trainer.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=epochs, batch_size=32,
                          seed=args.seed)
    test = trainer.evaluate(Xte, yte)
    elapsed = time.perf_counter() - t_start
    print("test accuracy %.4f (%d images), test loss %.4f, best epoch %s, %.1f s"
          % (test["accuracy"], len(Xte), test["loss"], history.best_epoch, elapsed))
    if not args.no_plot:
        _plot_curves(history, args.plot, "fastnn demo: %s on 8x8 digits (test accuracy %.3f)"
                     % (kind, test["accuracy"]), quiet=args.quiet)
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
    from ..layers import Conv2d
    d = _load_data(args)
    if len(d.X) < 2:
        raise CLIError("%s: expected at least 2 samples to train and validate, got %d"
                       % (d.desc, len(d.X)))
    loss_name, _ = _loss_for(args.loss, d.y)
    classify = loss_name in ("ce", "hinge")
    arch = args.arch
    if arch is None:
        out = _n_classes(d.y, d.classes) if classify and d.y.dtype.kind in "iu" else (
            1 if d.y.ndim == 1 else d.y.shape[1])
        arch = "128-bn-relu,64-relu,%d" % out
    input_shape = _input_shape(arch, d)
    model_probe = build_model(arch, input_shape)
    out_size = model_probe[len(model_probe) - 1].out_features
    y = _check_targets(loss_name, d, out_size)
    Xtr, Xva, ytr, yva = data.train_val_split(d.X, y, args.val_fraction, stratify=classify,
                                              rng=args.seed)
    scaler = pixel_std = None
    if args.no_standardize:
        pass
    elif len(input_shape) == 1:
        scaler = data.Standardize().fit(Xtr)
        Xtr, Xva = scaler.transform(Xtr), scaler.transform(Xva)
    elif isinstance(model_probe[0], Conv2d):      # images: one scale, folded at the end
        pixel_std = float(Xtr.std()) or 1.0
        Xtr, Xva = Xtr / pixel_std, Xva / pixel_std
    Xtr, Xva = (a.reshape((len(a),) + input_shape) for a in (Xtr, Xva))
    return dict(X=Xtr, y=ytr, Xv=Xva, yv=yva, arch=arch, loss_name=loss_name, scaler=scaler,
                pixel_std=pixel_std, desc=d.desc, in_features=d.X.shape[1],
                input_shape=input_shape, classes=d.classes)


def _input_shape(spec, d):
    """A sample's shape for the model of `spec`: (C, H, W) when its first layer takes
    images (the data must be images), else (features,)."""
    try:
        images = arch.takes_images(spec)
    except arch.ArchError as exc:
        raise CLIError(str(exc)) from None
    if not images:
        return (d.X.shape[1],)
    if d.image_shape is None:
        raise CLIError("--arch %r starts with an image layer but %s holds %d features per "
                       "sample, not images (use IDX images, 'digits', or an .npz whose X is "
                       "(N, H, W) or (N, C, H, W))" % (spec, d.desc, d.X.shape[1]))
    return d.image_shape


def _check_writable(path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError("%s %r: the folder %r does not exist" % (option, path, folder))
    if os.path.isdir(path):
        raise CLIError("%s %r is a directory" % (option, path))


def cmd_train(args):
    from ..core import rng as _random
    from ..train.trainer import Trainer
    for path, option in ((args.out, "--out"), (args.plot, "--plot")):
        if path and _writes(args):
            _check_writable(path, option)
    d = _prepare_training(args)
    _random.seed(args.seed)
    model = build_model(d["arch"], d["input_shape"])
    _, loss = _loss_for(d["loss_name"], d["y"])
    opt = _optimizer(args.optimizer, model.parameters(), args.lr, args.momentum,
                     args.weight_decay)
    verbose = 0 if args.quiet else (2 if args.verbose else 1)
    if verbose:
        print("fastnn train: %s: %d train / %d validation samples, %d features; model %s, "
              "loss %s, optimizer %s lr %g" % (d["desc"], len(d["X"]), len(d["Xv"]),
                                               d["in_features"], d["arch"], type(loss).__name__,
                                               args.optimizer, opt.lr))
        if d["classes"]:
            print("classes: " + ", ".join("%d %s" % kv for kv in enumerate(d["classes"])))
    trainer = Trainer(model, loss, opt, diagnostics=args.diagnostics, verbose=verbose,
                      patience=args.patience, distributed=args.distributed,
                      sync_batchnorm=args.distributed)
    history = trainer.fit(d["X"], d["y"], validation_data=(d["Xv"], d["yv"]),
                          epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    res = trainer.evaluate(d["Xv"], d["yv"])
    print("validation: " + "  ".join("%s %.4f" % kv for kv in res.items())
          + "  (best epoch %s)" % history.best_epoch)
    if args.out and _writes(args):
        _save_model(model, args.out, d)
    if args.plot and _writes(args):
        _plot_curves(history, args.plot, "fastnn train: %s" % d["desc"], quiet=args.quiet)
    return 0


def _save_model(model, path, d):
    """Save the trained model in eval mode, with its loss and class names beside it."""
    from .. import io
    note = ""
    if d["scaler"] is not None:
        note = (" (standardization folded into the first layer: it takes raw inputs)"
                if _fold_standardize(model, d["scaler"]) else
                " (expects standardized inputs)")
    if d["pixel_std"] is not None:         # conv(x / s, w) = conv(x, w / s), padding too
        model[0].weight.data = model[0].weight.data / d["pixel_std"]
        note = " (the pixel scaling folded into the first layer: it takes raw images)"
    extra = {"loss": np.array(d["loss_name"])}
    if len(d["input_shape"]) == 3:
        extra["input_shape"] = np.array(d["input_shape"])
    if d["classes"]:
        extra["classes"] = np.array(d["classes"])
    try:
        io.save(model.eval(), path, extra=extra)
    except OSError as exc:
        raise CLIError("cannot write %r: %s" % (path, exc.strerror or exc)) from None
    print("model saved to %s%s" % (path, note))


def _saved_extras(path):
    """The "extra.<name>" entries the CLI saved beside a model: {name: array}."""
    from ..io import EXTRA_PREFIX
    with np.load(path, allow_pickle=False) as archive:
        return {k[len(EXTRA_PREFIX):]: archive[k] for k in archive.files
                if k.startswith(EXTRA_PREFIX)}


def cmd_predict(args):
    from .. import io
    from ..layers import Sequential
    _check_readable(args.model, "cannot read the model")
    if args.out:
        _check_writable(args.out, "--out")
    model = io.load(args.model).eval()
    extras = _saved_extras(args.model)
    first = model[0] if isinstance(model, Sequential) and len(model) else model
    image = tuple(int(v) for v in extras["input_shape"]) if "input_shape" in extras else None
    n_features = math.prod(image) if image else getattr(first, "in_features", None)
    d = _load_data(args, labels_optional=True, n_features=n_features)
    if n_features is not None and d.X.shape[1] != n_features:
        raise CLIError("%s has %d features per sample but the model %s takes %d%s"
                       % (d.desc, d.X.shape[1], args.model, n_features,
                          " (images %s)" % "x".join(map(str, image)) if image else ""))
    scores = model(d.X if image is None else d.X.reshape((len(d.X),) + image))
    loss = str(extras["loss"]) if "loss" in extras else (
        "ce" if scores.shape[1] > 1 else "mse")
    classes = [str(c) for c in extras["classes"]] if "classes" in extras else None
    if loss in ("ce", "hinge"):
        pred = scores.argmax(1)
        lines = [classes[k] if classes else str(k) for k in pred]
    else:
        pred = (scores > 0).astype(np.int64) if loss == "bce" else scores
        lines = [",".join("%.6g" % v for v in row) for row in pred]
    score = None if d.y is None else _score_line(loss, pred, scores, d, classes)
    if args.out:
        with open(args.out, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        print("%d predictions written to %s" % (len(lines), args.out))
    else:
        print("\n".join(lines))
    if score:
        print(score, file=sys.stderr)
    return 0


def _score_line(loss, pred, scores, d, classes):
    """How the predictions compare with the data file's labels: one line."""
    y = d.y
    if loss in ("ce", "hinge"):
        if d.classes is not None:                     # names in the data: map to the model's
            if classes is None:
                raise CLIError("%s labels its classes by name but the model has no class "
                               "names" % d.desc)
            unknown = sorted(set(d.classes) - set(classes))
            if unknown:
                raise CLIError("%s has classes the model does not know: %s"
                               % (d.desc, ", ".join(unknown[:5])))
            y = np.array([classes.index(d.classes[k]) for k in y])
        return "accuracy %.4f on %d samples" % (np.mean(pred == y), len(y))
    if loss == "bce":
        return "accuracy %.4f on %d samples" % (np.mean(pred == y.reshape(pred.shape)), len(y))
    target = y.reshape(scores.shape).astype(np.float64)
    return "mse %.6g on %d samples" % (np.mean((scores - target) ** 2), len(y))


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
        model = build_model(d["arch"], d["input_shape"])
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
                            halving=args.halving, verbose=0 if args.quiet else 1,
                            distributed=args.distributed)
    print(results)
    best = results.best
    print("best: lr %.3g, weight decay %.3g" % (best["lr"], best["weight_decay"]))
    return 0


# --------------------------------------------------------------------------- parser
def _add_label_args(p):
    """--labels and --target: where a data file's labels are."""
    p.add_argument("--labels", metavar="PATH", help="IDX labels file for IDX images (an error "
                   "for other data, which holds its own labels)")
    p.add_argument("--target", default="-1", metavar="COL",
                   help="CSV target column: index or header name (default: last); "
                   "integer labels or class names")


ARCH_HELP = (
    "architecture: comma-separated layers, the last one the output size. A layer is W "
    "(Dense of width W), cFkK[sS][pP][dD] (Conv2d: F filters, kernel K, stride S, padding "
    "P, dilation D; each an int or HxW), poolK / avgK[sS][pP] (max / average pooling), "
    "gap (global average pooling), flatten or res(LAYER,...) (a residual block), followed "
    "by -modifiers: bn (batch norm), dropoutP and the activations %s (one right after a "
    "Dense or Conv2d is fused into it). Image layers need image data (IDX, 'digits', an "
    ".npz of (N, H, W) or (N, C, H, W)). E.g. '256-bn-relu,128-relu,10' or "
    "'c16k3p1-bn-relu,pool2,c32k3-relu,gap,10' (default 128-bn-relu,64-relu,<outputs>)"
    % ", ".join(arch.LAYER_NAMES))


def _add_training_args(p, optional=False):
    """The data and model options `train` and `search` share."""
    if optional:
        p.add_argument("data", nargs="?", default="digits",
                       help="data file (.csv, .tsv, .npz, IDX) or 'digits' (default)")
    else:
        p.add_argument("data", help="data file: .csv/.tsv (last column = target unless "
                       "--target), .npz (arrays X and y), IDX images (with --labels), or "
                       "'digits' for the bundled digits")
    _add_label_args(p)
    p.add_argument("--arch", metavar="SPEC", help=ARCH_HELP)
    p.add_argument("--loss", choices=["auto"] + list(_LOSSES), default="auto",
                   help="loss (default auto: ce for integer labels, mse otherwise)")
    p.add_argument("--optimizer", choices=list(_OPTIMIZERS), default="adam",
                   help="optimizer (default adam)")
    p.add_argument("--momentum", type=NONNEGATIVE_FLOAT, default=None,
                   help="SGD momentum (default 0.9 for momentum/nesterov)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="default 32")
    p.add_argument("--val-fraction", type=FRACTION, default=0.2,
                   help="fraction held out for validation (default 0.2)")
    p.add_argument("--no-standardize", action="store_true",
                   help="do not standardize the features")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="print only the results")


def _add_demo(sub):
    p = sub.add_parser("demo", help="train an MLP (or with --cnn a CNN) on the bundled 8x8 "
                       "digits",
                       description="Train a 64-128-64-10 MLP (BatchNorm, ReLU, dropout, "
                       "AdamW, cosine schedule; training images augmented with 1-pixel "
                       "shifts) on the bundled digits with per-epoch progress and "
                       "diagnostics; print the test accuracy and write learning curves. "
                       "--cnn trains a small convolutional network instead (%s)."
                       % DEMO_CNN_ARCH)
    p.add_argument("--cnn", action="store_true",
                   help="a convolutional network on the 1x8x8 images instead of the MLP")
    p.add_argument("--quick", action="store_true", help="short run (10 epochs) for CI")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="epochs (default 20, 10 with --quick)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    p.add_argument("--plot", metavar="PATH", default="fastnn-demo.png",
                   help="learning-curve PNG (default fastnn-demo.png; needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="train without the diagnostics monitor")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    p.set_defaults(func=cmd_demo)


def _add_train(sub):
    p = sub.add_parser("train", help="train an MLP on a data file",
                       description="Train an MLP on a CSV / NPZ / IDX data file with a "
                       "validation split; optionally save it (fastnn.load reads it back).")
    _add_training_args(p)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None,
                   help="learning rate (default per optimizer: adam 1e-3, sgd 0.05, ...)")
    p.add_argument("--weight-decay", type=NONNEGATIVE_FLOAT, default=0.0, help="default 0")
    p.add_argument("--epochs", type=POSITIVE_INT, default=10, help="default 10")
    p.add_argument("--patience", type=POSITIVE_INT, default=None,
                   help="early stopping patience in epochs")
    p.add_argument("--diagnostics", action="store_true",
                   help="babysitting diagnostics and warnings")
    p.add_argument("--verbose", action="store_true", help="also print diagnostics tables")
    p.add_argument("--out", metavar="PATH", help="save the trained model (.npz, eval mode)")
    p.add_argument("--plot", metavar="PATH", help="write a learning-curve PNG")
    _add_distributed_arg(p, "train data-parallel on the MPI ranks (mpiexec -n K fastnn "
                         "train ... --distributed; BatchNorm uses the global batch)")
    p.set_defaults(func=cmd_train)


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict with a saved model",
                       description="Print the predictions of a model saved by 'fastnn "
                       "train --out' (or fastnn.save) for a data file, one line per sample: "
                       "class names when the model was trained on named classes, else class "
                       "indices (or values, for regression). A CSV may hold the features "
                       "only, or the features and a target column; when the file has labels "
                       "the accuracy (or MSE) goes to stderr.")
    p.add_argument("model", help="model file (.npz)")
    p.add_argument("data", help="data file (.csv, .tsv, .npz with 'X' and optional 'y', "
                   "IDX images) or 'digits'")
    _add_label_args(p)
    p.add_argument("--out", metavar="PATH", help="write the predictions to a file")
    p.set_defaults(func=cmd_predict)


def _add_search(sub):
    p = sub.add_parser("search", help="random search over learning rate and weight decay",
                       description="Random search (log-uniform) over learning rate and "
                       "weight decay on a data file or the bundled digits.")
    _add_training_args(p, optional=True)
    p.add_argument("--trials", type=POSITIVE_INT, default=10, help="default 10")
    p.add_argument("--epochs", type=POSITIVE_INT, default=5,
                   help="epochs per trial (default 5)")
    p.add_argument("--lr-range", type=POSITIVE_FLOAT, nargs=2, default=(1e-4, 1e-1),
                   metavar=("LOW", "HIGH"), help="default 1e-4 1e-1")
    p.add_argument("--wd-range", type=POSITIVE_FLOAT, nargs=2, default=(1e-6, 1e-2),
                   metavar=("LOW", "HIGH"), help="default 1e-6 1e-2")
    p.add_argument("--halving", action="store_true", help="successive halving")
    _add_distributed_arg(p, "spread the trials over the MPI ranks (mpiexec -n K fastnn "
                         "search ... --distributed)")
    p.set_defaults(func=cmd_search)


def _add_plugins(sub):
    for name in PLUGINS:
        try:
            mod = __import__(name, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)


def build_parser():
    parser = _Parser(prog="fastnn", description="fastnn: a fast, trustworthy CPU "
                     "deep-learning engine. Run 'fastnn COMMAND --help' for details.")
    parser.add_argument("--version", action="version", version="fastnn %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("info", help="show the build and runtime configuration").set_defaults(
        func=cmd_info)
    for add in (_add_demo, _add_train, _add_predict, _add_search, _add_plugins):
        add(sub)
    return parser


# ----------------------------------------------------------------- distributed
def _add_distributed_arg(p, text):
    p.add_argument("--distributed", action="store_true", help=text + "; needs mpi4py")


def _writes(args):
    """Whether this process prints and writes files: yes, except on the ranks other than
    0 of a --distributed run."""
    if not getattr(args, "distributed", False):
        return True
    from ..distributed import rank
    return rank() == 0


def _abort_ranks(status):
    """A --distributed command failed on this rank: end every rank with `status` (the
    others may be waiting for this one in a collective call)."""
    from ..distributed import world_size
    if world_size() > 1:
        from mpi4py import MPI
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(status)


def _one_line(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        text = "cannot read %r: %s" % (exc.filename, exc.strerror or exc)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv=None):
    """Entry point of ``fastnn`` / ``python -m fastnn``; returns the exit status. A closed
    stdout (``fastnn ... | head -1``) ends the command quietly with status 0."""
    try:
        status = _main(argv)
        sys.stdout.flush()            # a closed pipe shows here, not at the exit's flush
    except BrokenPipeError:           # the reader (e.g. `| head`) stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        print("fastnn: error: missing COMMAND, one of %s (see --help)"
              % ", ".join(sub.choices), file=sys.stderr)
        return 2
    status = _run(args)
    if status and getattr(args, "distributed", False):
        _abort_ranks(status)
    return status


def _run(args):
    """Run the parsed command; returns the exit status (errors printed as one line)."""
    from ..train.trainer import NonFiniteError
    prog = "fastnn %s" % args.command
    try:
        if not _writes(args):               # ranks other than 0 print nothing
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                return int(args.func(args) or 0)
        return int(args.func(args) or 0)
    except BrokenPipeError:               # an OSError, but not an error: main() ends quietly
        raise
    except CLIError as exc:
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, ImportError) as exc:
        if os.environ.get("FASTNN_DEBUG"):
            raise
        print("%s: error: %s" % (prog, _one_line(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The command line, end to end in subprocesses (python -m fastnn ...)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.tools import cli
from fastnn import data, io

from conftest import FASTNN_PATH as SRC, write_idx_digits  # noqa: E402  (fastnn's path)


def run(*args, cwd=None, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FASTNN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fastnn", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(res, *fragments):
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "error:" in lines[0] and "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    X, y = data.make_spirals(100, 3, rng=0)
    X = X * np.array([10.0, 1.0]) + np.array([5.0, 0.0])      # unstandardized features
    with open(d / "spirals.csv", "w") as f:
        f.write("x0,x1,label\n")
        for (a, b), c in zip(X, y):
            f.write("%r,%r,%d\n" % (float(a), float(b), c))
    np.savez(d / "spirals.npz", X=X.astype(np.float32), y=y)
    with open(d / "ragged.csv", "w") as f:
        f.write("a,b,c\n1,2,0\n4,5\n")
    (d / "garbage.npz").write_bytes(b"this is not a zip archive")
    names = np.array(["setosa", "versicolor", "virginica"])
    with open(d / "named.csv", "w") as f:                   # class names as labels
        f.write("x0,x1,species\n")
        for (a, b), c in zip(X, y):
            f.write("%r,%r,%s\n" % (float(a), float(b), names[c]))
    np.savez(d / "named.npz", X=X.astype(np.float32), y=names[y])
    np.savez(d / "objects.npz", X=X, y=np.ones((len(X), 2), "datetime64[s]"))
    np.savez(d / "text-features.npz", X=np.full((len(X), 2), "a"), y=y)
    with open(d / "features.csv", "w") as f:                # no target column
        f.write("x0,x1\n")
        for a, b in X[:7]:
            f.write("%r,%r\n" % (float(a), float(b)))
    # IDX: 8x8 digits as uint8 images (gzip) and labels
    write_idx_digits(d, 400, "digits-images-idx3-ubyte.gz", "digits-labels-idx1-ubyte")
    return d


def test_info():
    res = run("info")
    assert res.returncode == 0, res.stderr
    assert "version" in res.stdout and "backend" in res.stdout and "num_threads" in res.stdout


def test_help_for_every_command():
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("info", "demo", "train", "predict", "search"):
        assert cmd in res.stdout
    for cmd in ("demo", "train", "predict", "search"):
        res = run(cmd, "--help")
        assert res.returncode == 0 and "usage: fastnn " + cmd in res.stdout


def test_demo_quick(tmp_path):
    res = run("demo", "--quick", "--plot", "curves.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "epoch  1/10" in out and "epoch 10/10" in out and "val_acc" in out
    acc = float(out.split("test accuracy ")[1].split()[0])
    assert acc >= 0.95
    try:
        import matplotlib
    except ImportError:
        matplotlib = None
    if matplotlib is None:
        assert "pip install" in res.stderr and not (tmp_path / "curves.png").exists()
    else:
        png = (tmp_path / "curves.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_train_csv_saves_a_model_that_takes_raw_inputs(files, tmp_path):
    out = tmp_path / "model.npz"
    res = run("train", files / "spirals.csv", "--arch", "64-relu,64-relu,3", "--epochs", "30",
              "--lr", "0.01", "--out", out, "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "epoch 30/30" in res.stdout and "model saved to" in res.stdout
    val_acc = float(res.stdout.split("validation: loss ")[1].split("accuracy ")[1].split()[0])
    assert val_acc >= 0.9
    model = io.load(str(out)).eval()
    X, y = data.load_csv(str(files / "spirals.csv"))
    assert np.mean(model(X).argmax(1) == y) >= 0.9        # raw, unstandardized inputs


def test_train_npz_and_idx(files, tmp_path):
    res = run("train", files / "spirals.npz", "--arch", "32-bn-relu-dropout0.1,16-tanh,3",
              "--epochs", "2", "--optimizer", "momentum", "--diagnostics", "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("validation: loss")
    res = run("train", files / "digits-images-idx3-ubyte.gz", "--labels",
              files / "digits-labels-idx1-ubyte", "--epochs", "3", "--plot",
              tmp_path / "c.png")
    assert res.returncode == 0, res.stderr
    assert "320 train / 80 validation samples, 64 features; model 128-bn-relu,64-relu,10" \
        in res.stdout


def test_search_digits():
    res = run("search", "--trials", "3", "--epochs", "1", "--halving", "--seed", "2")
    assert res.returncode == 0, res.stderr
    assert "rank" in res.stdout and "best: lr " in res.stdout
    assert "successive halving" in res.stdout


def run_inprocess(args, capsys):
    """cli.main in this process (same code path as the console script, faster)."""
    try:
        code = cli.main(args)
    except SystemExit as exc:                       # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


BAD = [
    (["train", "missing.csv"], ["fastnn train: error:", "missing.csv", "no such file"]),
    (["train", "{d}/ragged.csv"], ["line 3", "expected 3 fields"]),
    (["train", "{d}/garbage.npz"], ["could not be read as an .npz archive"]),
    (["train", "{d}/spirals.csv", "--arch", "64-foo,3"], ["--arch", "unknown modifier 'foo'"]),
    (["train", "{d}/spirals.csv", "--arch", "64-relu,2"],
     ["output size is 2", "has 3 classes (labels 0-2)", "end --arch with 3"]),
    (["train", "{d}/spirals.csv", "--arch", "64-relu,10"],
     ["output size is 10", "has 3 classes", "end --arch with 3"]),
    (["train", "{d}/spirals.csv", "--labels", "nosuch.gz"],
     ["--labels is for IDX images only", "spirals.csv", "target column"]),
    (["train", "{d}/spirals.npz", "--labels", "{d}/digits-labels-idx1-ubyte"],
     ["--labels is for IDX images only", "array 'y'"]),
    (["search", "--labels", "nosuch.gz"], ["--labels is for IDX images only", "digits"]),
    (["train", "{d}/digits-images-idx3-ubyte.gz", "--labels", "nosuch.gz"],
     ["cannot read --labels 'nosuch.gz': no such file"]),
    (["train", "{d}/objects.npz"], ["objects.npz", "array 'y'", "numbers or class names"]),
    (["train", "{d}/text-features.npz"], ["text-features.npz", "array 'X'", "must be numbers"]),
    (["train", "{d}/spirals.csv", "--arch", "64-dropout1.5,3"],
     ["--arch", "'dropout1.5'", "Dropout: p must be", "[0, 1]"]),
    (["predict", "{d}/nosuch.npz", "{d}/spirals.csv"], ["cannot read the model", "no such file"]),
    (["predict", "{d}/spirals.csv", "{d}/spirals.csv"], ["not a valid fastnn model file"]),
    (["train", "{d}/spirals.csv", "--arch", "relu,3"], ["must start with a layer width"]),
    (["train", "{d}/spirals.csv", "--lr", "-1"], ["--lr", "must be a finite number in (0, inf)"]),
    (["train", "{d}/spirals.csv", "--epochs", "x"], ["--epochs", "expected an int >= 1"]),
    (["train", "{d}/spirals.csv", "--target", "nope"], ["unknown target column 'nope'"]),
    (["train", "{d}/spirals.csv", "--out", "/no/such/dir/m.npz"], ["--out", "does not exist"]),
    (["train", "{d}/digits-images-idx3-ubyte.gz"], ["need their labels file: --labels"]),
    (["train"], ["required: data"]),
    (["demo", "--seed", "-3"], ["--seed", "must be an int >= 0"]),
    (["search", "--lr-range", "1", "0.1"], ["--lr-range", "0 < LOW < HIGH"]),
    (["frobnicate"], ["invalid choice"]),
]


@pytest.mark.parametrize("args, fragments", [BAD[i] for i in (0, 1, 3, 7, 14)])
def test_bad_arguments_give_one_line_and_status_2(files, args, fragments):
    res = run(*[a.format(d=files) for a in args], cwd=files)
    assert_one_line_error(res, *fragments)


@pytest.mark.parametrize("args, fragments", BAD)
def test_bad_arguments_in_process(files, args, fragments, capsys, monkeypatch):
    monkeypatch.chdir(files)
    res = run_inprocess([a.format(d=files) for a in args], capsys)
    assert_one_line_error(res, *fragments)


def test_diverging_training_exits_1(files):
    res = run("train", files / "spirals.csv", "--optimizer", "sgd", "--lr", "1e30",
              "--epochs", "3", "--quiet")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite" in lines[0] and "Traceback" not in res.stderr


def test_build_mlp_spec():
    m = cli.build_mlp("32-bn-relu,16-tanh-dropout0.25,8-leaky_relu,3", 5)
    names = [type(layer).__name__ for layer in m]
    assert names == ["Dense", "BatchNorm1d", "ReLU", "Dense", "Dropout", "Dense", "Dense"]
    assert m[3].activation == "tanh" and m[3].init == "xavier_normal"
    assert m[0].init == "he_normal" and m[5].activation == "leaky_relu"
    assert m[4].p == 0.25 and m[6].out_features == 3
    assert cli.build_mlp("4-dropout1.0,3", 5)[1].p == 1.0       # the layer's rule: p in [0, 1]
    for bad in ("", "32-relu", "32,3-relu", "0,3", "32-dropout2,3", "32-dropoutx,3",
                "32-dropout-0.1,3", "32-dropoutnan,3"):
        with pytest.raises(cli.CLIError):
            cli.build_mlp(bad, 5)


def test_plugin_subcommands_are_added():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    expected = {"info", "demo", "train", "predict", "search"}
    try:
        import importlib
        importlib.import_module("fastnn.tools.bench")
        expected.add("bench")
    except ImportError:
        pass
    assert set(sub.choices) == expected


def test_version():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == "fastnn " + fastnn.__version__


def test_named_classes_are_printed_saved_and_predicted(files, tmp_path):
    """Class names in a CSV: numbered in sorted order, printed, saved with the model (in
    eval mode) and given back by `fastnn predict`; the same labels in an .npz train too."""
    out = tmp_path / "model.npz"
    res = run("train", files / "named.csv", "--arch", "64-relu,64-relu-dropout0.2,3",
              "--epochs", "30", "--lr", "0.01", "--out", out, "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "classes: 0 setosa, 1 versicolor, 2 virginica" in res.stdout
    with np.load(out, allow_pickle=False) as archive:
        assert list(archive["extra.classes"]) == ["setosa", "versicolor", "virginica"]
        assert str(archive["extra.loss"]) == "ce"
    model = io.load(str(out))
    X, y = data.load_csv(str(files / "named.csv"), target="species")
    res = run("predict", out, files / "named.csv")
    assert res.returncode == 0, res.stderr
    predicted = res.stdout.split()
    assert len(predicted) == len(X) and set(predicted) <= {"setosa", "versicolor", "virginica"}
    names = np.array(["setosa", "versicolor", "virginica"])
    expected = names[model.eval()(X).argmax(1)]
    assert predicted == list(expected)
    acc = float(res.stderr.split("accuracy ")[1].split()[0])
    assert acc == pytest.approx(np.mean(expected == names[y]), abs=1e-4) and acc >= 0.9
    res = run("predict", out, files / "features.csv", "--out", tmp_path / "p.txt")
    assert res.returncode == 0, res.stderr
    assert "7 predictions written to" in res.stdout and res.stderr == ""
    assert (tmp_path / "p.txt").read_text().split() == predicted[:7]
    res = run("train", files / "named.npz", "--epochs", "1", "--quiet")
    assert res.returncode == 0, res.stderr


def test_predict_without_saved_names_prints_indices_and_checks_features(files, tmp_path):
    out = tmp_path / "model.npz"
    res = run("train", files / "spirals.npz", "--epochs", "1", "--quiet", "--out", out)
    assert res.returncode == 0, res.stderr
    res = run("predict", out, files / "spirals.npz")
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.split()) <= {"0", "1", "2"} and "accuracy" in res.stderr
    res = run("predict", out, files / "digits-images-idx3-ubyte.gz")
    assert_one_line_error(res, "64 features per sample", "takes 2")


def test_bench_prints_the_paths_it_wrote(monkeypatch, tmp_path, capsys):
    from fastnn.tools import bench
    res = {"threads": 1, "date": "today"}
    monkeypatch.setattr(bench, "run", lambda **kw: res)
    monkeypatch.setattr(bench, "table", lambda r: "TABLE")
    monkeypatch.setattr(bench, "plot", lambda r, path: open(path, "wb").close())
    args = cli.build_parser().parse_args(["bench", "--quick", "--json", str(tmp_path / "b.json"),
                                          "--plot", str(tmp_path / "b.png")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "results written to %s" % (tmp_path / "b.json") in out
    assert "plot written to %s" % (tmp_path / "b.png") in out


def test_out_saves_the_model_in_eval_mode(files, tmp_path, capsys, monkeypatch):
    saved = []
    real_save = io.save
    monkeypatch.setattr(io, "save", lambda model, path, **kw: (
        saved.append([m.training for m in model]), real_save(model, path, **kw)))
    res = run_inprocess(["train", str(files / "spirals.csv"), "--arch", "8-bn-relu-dropout0.5,3",
                         "--epochs", "1", "--quiet", "--out", str(tmp_path / "m.npz")], capsys)
    assert res.returncode == 0, res.stderr
    assert saved == [[False] * 5]


def test_predict_regression_prints_values_and_the_mse(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3)).astype(np.float32)
    np.savez(tmp_path / "reg.npz", X=X, y=(X @ np.array([1.0, 2.0, 3.0])).astype(np.float32))
    res = run("train", tmp_path / "reg.npz", "--epochs", "2", "--quiet", "--out",
              tmp_path / "m.npz")
    assert res.returncode == 0, res.stderr
    res = run("predict", tmp_path / "m.npz", tmp_path / "reg.npz")
    assert res.returncode == 0, res.stderr
    values = np.array(res.stdout.split(), dtype=np.float32)
    expected = io.load(str(tmp_path / "m.npz")).eval()(X)[:, 0]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)     # printed %.6g
    assert res.stderr.startswith("mse ") and "on 60 samples" in res.stderr

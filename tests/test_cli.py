"""The command line, end to end in subprocesses (python -m fastnn ...)."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from fastnn.tools import cli
from fastnn import data, io

from conftest import FASTNN_PATH as SRC  # noqa: E402  (the imported fastnn's path)


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
    # IDX: 8x8 digits as uint8 images (gzip) and labels
    Xd, yd = data.load_digits()
    imgs = Xd[:400].reshape(-1, 8, 8).astype(np.uint8)
    with gzip.open(d / "digits-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">III", *imgs.shape) + imgs.tobytes())
    with open(d / "digits-labels-idx1-ubyte", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 400) + yd[:400].astype(np.uint8).tobytes())
    return d


def test_info():
    res = run("info")
    assert res.returncode == 0, res.stderr
    assert "version" in res.stdout and "backend" in res.stdout and "num_threads" in res.stdout


def test_help_for_every_command():
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("info", "demo", "train", "search"):
        assert cmd in res.stdout
    for cmd in ("demo", "train", "search"):
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
     ["output size is 2", "end --arch with 3"]),
    (["train", "{d}/spirals.csv", "--arch", "relu,3"], ["must start with a layer width"]),
    (["train", "{d}/spirals.csv", "--lr", "-1"], ["--lr", "must be > 0"]),
    (["train", "{d}/spirals.csv", "--epochs", "x"], ["--epochs", "expected a whole number"]),
    (["train", "{d}/spirals.csv", "--target", "nope"], ["unknown target column 'nope'"]),
    (["train", "{d}/spirals.csv", "--out", "/no/such/dir/m.npz"], ["--out", "does not exist"]),
    (["train", "{d}/digits-images-idx3-ubyte.gz"], ["need their labels file: --labels"]),
    (["train"], ["required: data"]),
    (["demo", "--seed", "-3"], ["--seed", "must be >= 0"]),
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
    for bad in ("", "32-relu", "32,3-relu", "0,3", "32-dropout2,3", "32-dropoutx,3"):
        with pytest.raises(cli.CLIError):
            cli.build_mlp(bad, 5)


def test_plugin_subcommands_are_added():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    expected = {"info", "demo", "train", "search"}
    try:
        import importlib
        importlib.import_module("fastnn.tools.bench")
        expected.add("bench")
    except ImportError:
        pass
    assert set(sub.choices) == expected

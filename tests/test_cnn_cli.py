"""The command line for convolutional networks: the --arch syntax for image layers,
training on IDX images and predicting with the saved CNN, `demo --cnn`, the help text
(every activation of the table) and a closed stdout."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import data, io
from fastnn.kernels.activation_table import LAYER_NAMES
from fastnn.tools import arch, cli

from conftest import FASTNN_PATH as SRC, write_idx_digits  # noqa: E402


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FASTNN_DEBUG", None)
    return env


def run_inprocess(args, capsys):
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    """The first 300 digits as uint8 IDX images (N, 8, 8), gzip, and their labels."""
    d = tmp_path_factory.mktemp("cnn-cli")
    write_idx_digits(d, 300, "images-idx3-ubyte.gz", "labels-idx1-ubyte")
    return d


def test_arch_builds_image_layers():
    m = arch.build_model("c8k3p1-bn-relu,res(c8k3p1-bn-relu,c8k3p1-bn)-relu,pool3s2p1,"
                         "c4k3x1p1x0d2-tanh,avg2,c6k1s1,gap,16-dropout0.1,5", (1, 12, 12))
    names = [type(layer).__name__ for layer in m]
    assert names == ["Conv2d", "BatchNorm2d", "ReLU", "Residual", "ReLU", "MaxPool2d",
                     "Conv2d", "AvgPool2d", "Conv2d", "GlobalAvgPool2d", "Dense", "Dropout",
                     "Dense"]
    assert m[0].activation is None and m[0].padding == (1, 1)      # bn comes first
    assert [type(x).__name__ for x in m[3].module] == ["Conv2d", "BatchNorm2d", "ReLU",
                                                        "Conv2d", "BatchNorm2d"]
    assert (m[5].kernel_size, m[5].stride, m[5].padding) == ((3, 3), (2, 2), (1, 1))
    conv = m[6]
    assert (conv.kernel_size, conv.padding, conv.dilation, conv.activation) == (
        (3, 1), (1, 0), (2, 2), "tanh")
    assert conv.init == "xavier_normal" and m[0].init == "he_normal"
    assert m.output_shape((2, 1, 12, 12)) == (2, 5)
    flat = arch.build_model("c4k3-relu,pool2,7", (2, 6, 6))        # Flatten inserted
    assert [type(x).__name__ for x in flat] == ["Conv2d", "MaxPool2d", "Flatten", "Dense"]
    assert flat[0].activation == "relu" and flat[3].in_features == 4 * 2 * 2
    assert arch.takes_images("res(c4k3p1),3") and not arch.takes_images("64-relu,3")


@pytest.mark.parametrize("spec,shape,fragments", [
    ("c8k3,3", (4,), ["'c8k3' needs images", "4 features"]),
    ("8,pool2,3", (4,), ["'pool2' needs images"]),
    ("c8s2,3", (1, 8, 8), ["kernel size", "c16k3"]),
    ("c8k9,3", (1, 8, 8), ["larger than the padded input"]),
    ("c8k3s0,3", (1, 8, 8), ["stride must be"]),
    ("res(c8k3)-relu,3", (8, 8, 8), ["Residual", "keep"]),
    ("res(c8k3p1,3", (8, 8, 8), ["unbalanced"]),
    ("c8k3p1-bogus,3", (1, 8, 8), ["unknown modifier 'bogus'", "swish"]),
    ("pool2,3-relu", (1, 8, 8), ["last entry", "output size"]),
    ("pool3p2,3", (1, 8, 8), ["padding must be at most half"]),
])
def test_arch_errors_name_the_entry(spec, shape, fragments):
    with pytest.raises(arch.ArchError) as info:
        arch.build_model(spec, shape)
    assert str(info.value).startswith("--arch")
    for f in fragments:
        assert f in str(info.value)


def test_help_lists_every_activation_of_the_table(capsys):
    for command in ("train", "search"):
        code, out, _ = run_inprocess([command, "--help"], capsys)
        assert code == 0
        text = " ".join(out.split())
        for name in LAYER_NAMES:
            assert name in text, (command, name)
        assert "cFkK" in text and "res(" in text


def test_train_a_cnn_on_idx_images_and_predict(idx, tmp_path, capsys):
    out = tmp_path / "cnn.npz"
    code, text, err = run_inprocess(
        ["train", idx / "images-idx3-ubyte.gz", "--labels", idx / "labels-idx1-ubyte",
         "--arch", "c8k3p1-bn-relu,pool2,res(c8k3p1-bn-relu)-relu,gap,10", "--epochs", "3",
         "--quiet", "--out", out], capsys)
    assert code == 0, err
    assert "pixel scaling folded into the first layer" in text
    model = io.load(str(out))
    assert type(model[0]).__name__ == "Conv2d" and not model.training
    with np.load(out) as archive:
        assert archive["extra.input_shape"].tolist() == [1, 8, 8]
    code, text, err = run_inprocess(["predict", out, idx / "images-idx3-ubyte.gz",
                                     "--labels", idx / "labels-idx1-ubyte"], capsys)
    assert code == 0, err
    raw = data.load_idx(str(idx / "images-idx3-ubyte.gz"))[:, None].astype(np.float32)
    assert text.split() == [str(k) for k in model(raw).argmax(1)]    # raw images in
    assert err.startswith("accuracy ") and "on 300 samples" in err


def test_image_arch_on_feature_data_is_a_clear_error(tmp_path, capsys):
    np.savez(tmp_path / "f.npz", X=np.ones((20, 5), np.float32), y=np.arange(20) % 2)
    code, _, err = run_inprocess(["train", tmp_path / "f.npz", "--arch", "c4k3,2"], capsys)
    assert code == 2
    assert "starts with an image layer" in err and "5 features per sample" in err


def test_demo_cnn_runs(capsys):
    code, out, err = run_inprocess(["demo", "--cnn", "--epochs", "1", "--no-plot"], capsys)
    assert code == 0, err
    assert "CNN on 8x8 digits" in out and cli.DEMO_CNN_ARCH in out
    assert "test accuracy" in out


@pytest.mark.parametrize("args", [["info"], ["demo", "--help"], ["predict", "{m}", "digits"]])
def test_a_closed_stdout_ends_quietly(args, tmp_path):
    """`fastnn ... | head -1` when the reader has gone: status 0 and nothing on stderr
    (a BrokenPipeError used to be reported as an error, status 2)."""
    model = fastnn.Sequential(fastnn.Dense(64, 10, rng=0)).eval()
    io.save(model, str(tmp_path / "m.npz"))
    args = [a.format(m=tmp_path / "m.npz") for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                 # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""

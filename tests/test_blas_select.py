"""fastnn.kernels.blas_select: one BLAS library per process for the compiled kernels'
products (SciPy's OpenBLAS, or MKL when the optional `mkl` package is installed), chosen
by FASTNN_GEMM or measured; results deterministic for any thread count with either."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastnn.kernels._blas")
import fastnn  # noqa: E402
from fastnn.kernels import _blas, blas_select  # noqa: E402

HAVE_MKL = "mkl" in blas_select.available()


@pytest.fixture
def restore_library():
    """Put the process's GEMM routing back as it was (per shape class: an auto choice
    may route classes to different libraries, which no single setting restores)."""
    before = dict(blas_select._choice)
    yield
    blas_select._use(before["libraries"])
    blas_select._choice.update(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 9, 4), (6, 9, 1), (4, 0, 3), (64, 80, 40)])
def test_matmul_matches_numpy(dtype, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    got = _blas.matmul(a, b)
    assert got.dtype == dtype and got.shape == (m, n)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_matmul_and_use_library_reject_bad_input():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="matmul"):
        _blas.matmul(a, np.ones((3, 2), np.float64))
    with pytest.raises(ValueError, match="do not chain"):
        _blas.matmul(a, a)
    with pytest.raises(ValueError, match="use_library: addresses"):
        _blas.use_library("x", {"sgemm": 1})
    with pytest.raises(ValueError, match="use_library: addresses"):
        _blas.use_library("x", {"sgemm": 0, "dgemm": 1, "sgemv": 1, "dgemv": 1})
    with pytest.raises(ValueError, match="use_library: classes"):
        _blas.use_library("openblas", None, ("square",))
    assert _blas.library() == blas_select.choice()["libraries"]      # left unchanged


def test_select_validates_the_setting(restore_library, monkeypatch):
    with pytest.raises(ValueError, match="FASTNN_GEMM must be one of auto, openblas, mkl, "
                                         "got 'blis'"):
        blas_select.select("blis")
    monkeypatch.setattr(blas_select, "available", lambda: ["openblas"])
    with pytest.raises(RuntimeError, match="FASTNN_GEMM=mkl but libmkl_rt"):
        blas_select.select("mkl")
    got = blas_select.select("auto")
    assert got["library"] == "openblas" and got["reason"] == "the only library found"
    assert _blas.library() == dict.fromkeys(_blas.CLASSES, "openblas")


def _env_run(code, gemm):
    env = dict(os.environ, FASTNN_GEMM=gemm,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_environment_variable_picks_the_library_and_show_config_reports_it():
    code = "import fastnn; print(fastnn.show_config(print_=False)['gemm'])"
    out = _env_run(code, "openblas")
    assert out.returncode == 0 and out.stdout.strip() == "openblas (FASTNN_GEMM=openblas)"
    bad = _env_run(code, "fast")
    assert bad.returncode != 0 and "FASTNN_GEMM must be one of" in bad.stderr


@pytest.mark.skipif(not HAVE_MKL, reason="the mkl package is not installed")
def test_mkl_results_are_close_to_openblas_and_independent_of_threads(restore_library):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((130, 300), np.float32)
    b = rng.standard_normal((300, 70), np.float32)
    blas_select.select("openblas")
    ref = _blas.matmul(a, b)
    assert blas_select.select("mkl")["library"] == "mkl"
    assert _blas.library() == dict.fromkeys(_blas.CLASSES, "mkl")
    np.testing.assert_allclose(_blas.matmul(a, b), ref, rtol=1e-4, atol=1e-4)
    x = rng.standard_normal((257, 64), np.float32)
    outs = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        try:
            model = fastnn.Sequential(fastnn.Dense(64, 96, activation="relu", rng=0),
                                      fastnn.Dense(96, 10, rng=0))
            outs.append(model(x))
        finally:
            fastnn.set_num_threads(2)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_seconds_measures_each_library_and_keeps_the_choice():
    before = _blas.library()
    for lib in blas_select.available():
        t = blas_select.seconds(lib, shapes=[(8, 16, 4)], reps=1)
        assert len(t) == 1 and t[0] > 0
        assert _blas.library() == before


def test_auto_measures_each_shape_class_once_per_machine(restore_library, monkeypatch,
                                                        tmp_path):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(blas_select, "available", lambda: ["openblas", "mkl"])
    routed = {}
    monkeypatch.setattr(blas_select, "_use", routed.update)
    thin = blas_select.SHAPES["thin"]
    monkeypatch.setattr(blas_select, "seconds", lambda lib, shapes, reps=3: [
        {"openblas": 2e-3, "mkl": 1e-3}[lib] if shapes is thin else
        {"openblas": 1e-3, "mkl": 3e-3}[lib]])
    got = blas_select.select("auto")
    assert got["libraries"] == {"vector": "openblas", "thin": "mkl", "wide": "openblas"}
    assert routed == got["libraries"]
    assert got["library"] == "vector: openblas, thin: mkl, wide: openblas"
    assert "thin: openblas 2.00 ms, mkl 1.00 ms" in got["reason"]
    assert (tmp_path / "cache" / "gemm.json").exists()

    def measure_again(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(blas_select, "seconds", measure_again)
    again = blas_select.select("auto")
    assert again["libraries"] == got["libraries"]
    assert again["reason"].startswith("measured earlier")
    (tmp_path / "cache" / "gemm.json").write_text("not json")
    with pytest.raises(AssertionError, match="measured again"):  # a broken cache: measure
        blas_select.select("auto")


@pytest.mark.skipif(not HAVE_MKL, reason="the mkl package is not installed")
def test_a_product_takes_the_library_of_its_shape_class(restore_library):
    rng = np.random.default_rng(2)
    thin = rng.standard_normal((40, 300), np.float32), rng.standard_normal((300, 200), np.float32)
    wide = rng.standard_normal((200, 300), np.float32), rng.standard_normal((300, 200), np.float32)
    blas_select.select("openblas")
    ref = [_blas.matmul(*thin), _blas.matmul(*wide)]
    blas_select.select("mkl")
    on_mkl = [_blas.matmul(*thin), _blas.matmul(*wide)]
    # the two libraries round differently here, so the routing shows in the bits
    assert not any(np.array_equal(x, y) for x, y in zip(ref, on_mkl))
    _blas.use_library("openblas", None, ("wide",))            # thin stays on MKL
    assert _blas.library() == {"vector": "mkl", "thin": "mkl", "wide": "openblas"}
    got = [_blas.matmul(*thin), _blas.matmul(*wide)]
    np.testing.assert_array_equal(got[0], on_mkl[0])
    np.testing.assert_array_equal(got[1], ref[1])

"""Data-parallel training on MPI (fastnn.distributed; issue 15).

The MPI tests start this very file under ``mpiexec -n 2`` (in a subprocess, with a
timeout, every socket on loopback and one OpenMP thread per rank): each rank runs one of
the scenarios at the bottom and saves what it ended with, and the test compares that
with a one-process run made here. They skip, loudly, when mpi4py or mpiexec is missing
(``pip install "fastnn[mpi]" mpich``).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dense, GlobalAvgPool2d, ReLU,
                           Sequential)
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, Adam, StepLR
from fastnn.train.trainer import NonFiniteError, Trainer

HERE = os.path.abspath(__file__)
FASTNN_PATH = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


def _find_mpiexec():
    """mpiexec next to this Python first (the mpich wheel's), then on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.access(local, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason="!!! DISTRIBUTED TRAINING NOT TESTED: %s missing; pip install \"fastnn[mpi]\" mpich"
           % " and ".join(n for n, ok in (("mpi4py", HAVE_MPI4PY), ("mpiexec", MPIEXEC))
                          if not ok))

RANKS = 2
TIMEOUT = 180
F64 = np.float64
#: the training runs: 163 rows in batches of 23 (ranks take 11 and 12 rows; the last
#: batch of 2 rows, one each), validation on 40 rows
EPOCHS, BATCH, SEED = 3, 23, 5
#: the variants of the `train` scenario: name -> (model keywords, fit keywords, bucket
#: bytes, sync_batchnorm). Batches of 27 end with one row, so rank 0 has none of it
#: (batches of 22 end with 9: local BatchNorm needs 2 rows a rank); buckets of 256 bytes
#: cut the models in two (three with BatchNorm), of 64 bytes the CNN in three: the last
#: layers' gradients are reduced during the backward; sparse row weights leave whole
#: parts (and batches) weightless
VARIANTS = {"adam": ({}, {}, None, False),
            "sgd": ({"sgd": True}, {"batch_size": 27}, None, False),
            "buckets": ({}, {"batch_size": 27}, 256, False),
            "sync_bn": ({"bn": True, "sgd": True}, {}, 256, True),
            "local_bn": ({"bn": True, "sgd": True}, {"batch_size": 22}, None, False),
            "sync_bn2d": ({"cnn": True, "sgd": True}, {"images": True}, 64, True),
            "local_bn2d": ({"cnn": True, "sgd": True}, {"images": True}, None, False),
            "diagnostics": ({"diagnostics": True}, {}, 256, False),
            "weighted": ({"class_weight": [1.0, 2.0, 0.5]}, {"weighted": True}, 256, False)}
BUCKETS = {"buckets": 2, "sync_bn": 3, "sync_bn2d": 3, "diagnostics": 2, "weighted": 2}
#: the variants whose BatchNorm uses each rank's rows: not the one-process computation
LOCAL_BN = ("local_bn", "local_bn2d")


def mpi_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = FASTNN_PATH + (os.pathsep + env["PYTHONPATH"]
                                       if env.get("PYTHONPATH") else "")
    env.update(MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp", FI_TCP_IFACE="lo",
               FASTNN_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("FASTNN_DEBUG", None)
    return env


def mpirun(*command, n=RANKS, cwd=None, check=True):
    """`mpiexec -n n <command>` (loopback only); the CompletedProcess."""
    net = ["-iface", "lo"] if "hydra" in os.path.realpath(MPIEXEC) or _is_hydra() else \
        ["--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
    proc = subprocess.run([MPIEXEC, *net, "-n", str(n), *map(str, command)], cwd=cwd,
                          env=mpi_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError("mpiexec failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout,
                                                               proc.stderr))
    return proc


def _is_hydra():
    out = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30)
    return "HYDRA" in out.stdout.upper()


def scenario(name, outdir, *args):
    """Run scenario `name` of this file on every rank."""
    return mpirun(sys.executable, HERE, name, outdir, *args)


# ------------------------------------------------------------------ shared set-up
def data(images=False):
    """Rows of 6 features, or (images) 1 x 6 x 6 images labelled by their halves' means."""
    rng = np.random.default_rng(0)
    if images:
        X = rng.normal(size=(203, 1, 6, 6))
        y = ((X[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64)
             + (X[:, 0, :, :3].mean(axis=(1, 2)) > 0))
    else:
        X = rng.normal(size=(203, 6))
        y = ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] + X[:, 2] > 0.5)).astype(np.int64)
    return X[:163], y[:163], X[163:], y[163:]


def build(seed, bn=False, sgd=False, class_weight=None, cnn=False, **kw):
    """A float64 MLP trainer (cnn: a CNN with BatchNorm2d for data(images=True)); its
    weights drawn from fastnn.seed(seed)."""
    fastnn.seed(seed)
    if cnn:
        model = Sequential(Conv2d(1, 4, 3, padding=1, bias=False, dtype=F64),
                           BatchNorm2d(4, dtype=F64), ReLU(), GlobalAvgPool2d(),
                           Dense(4, 3, dtype=F64))
    else:
        model = Sequential(Dense(6, 16, dtype=F64),
                           *([BatchNorm1d(16, dtype=F64)] if bn else []), ReLU(),
                           Dense(16, 3, dtype=F64))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9) if sgd else \
        Adam(model.parameters(), lr=0.02)
    return Trainer(model, SoftmaxCrossEntropy(class_weight), opt,
                   scheduler=StepLR(opt, 2, gamma=0.5), verbose=0, **kw)


def fit(trainer, epochs=EPOCHS, batch_size=BATCH, weighted=False, images=False, **kw):
    """Fit on data(images); weighted: with sparse row weights (85% zeros)."""
    X, y, Xv, yv = data(images)
    if weighted:
        rng = np.random.default_rng(2)
        kw["sample_weight"] = np.where(rng.random(len(X)) < 0.15, rng.uniform(0.5, 2, len(X)),
                                       0.0)
    return trainer.fit(X, y, validation_data=(Xv, yv), epochs=epochs, batch_size=batch_size,
                       seed=SEED, **kw)


def outcome(trainer, history):
    """What a run ended with: the model's state and the history's columns."""
    out = {"state/" + k: v for k, v in trainer.model.state_dict().items()}
    out.update(("history/" + k, np.asarray(history[k], F64))
               for k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    return out


def assert_same_run(got, want, exact=False):
    """Two outcomes equal: bit for bit (exact) or to float64 tolerance."""
    assert sorted(got) == sorted(want)
    for k in want:
        if exact:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        else:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=k)


def load(path):
    with np.load(path) as f:
        return dict(f)


# -------------------------------------------------------------- without MPI running
def test_rank_and_world_size_without_mpi_do_not_start_it():
    assert (fastnn.distributed.rank(), fastnn.distributed.world_size()) == (0, 1)
    assert "mpi4py.MPI" not in sys.modules


def test_rows_split_every_batch_into_consecutive_nearly_equal_parts():
    from fastnn.distributed.data_parallel import DataParallel
    for size in (1, 2, 3, 5):
        for n in (1, 2, 7, 23, 64):
            parts = []
            for rank in range(size):
                dp = DataParallel.__new__(DataParallel)
                dp.rank, dp.size = rank, size
                parts.append(dp.rows(n))
            rows = np.concatenate([np.arange(n)[p] for p in parts])
            np.testing.assert_array_equal(rows, np.arange(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


def test_the_flat_gradient_buffer_is_found_and_separate_arrays_are_not():
    from fastnn.distributed.data_parallel import _tiled
    trainer = build(0)
    params = trainer.optimizer.params
    flat = _tiled([p.grad for p in params])
    assert flat is not None and flat.size == sum(p.size for p in params)
    flat[...] = np.arange(flat.size)
    np.testing.assert_array_equal(params[0].grad.reshape(-1), np.arange(params[0].size))
    assert _tiled([np.zeros(3), np.zeros(4)]) is None
    assert _tiled([p.grad for p in params[::-1]]) is None          # out of order


def test_distributed_without_mpi4py_is_a_clear_import_error(monkeypatch):
    from fastnn.distributed import mpi
    monkeypatch.setattr(mpi, "_comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # import mpi4py fails
    model = Sequential(Dense(2, 2))
    with pytest.raises(ImportError, match=r"Trainer: .*pip install \"fastnn\[mpi\]\""):
        Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters()), distributed=True)


def test_sync_batchnorm_needs_distributed():
    model = Sequential(Dense(2, 2))
    with pytest.raises(ValueError, match="sync_batchnorm=True needs distributed=True"):
        Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters()), sync_batchnorm=True)
    with pytest.raises(TypeError, match="distributed"):
        Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters()), distributed="yes")


def test_a_synchronised_batchnorm_is_never_replayed(backend):
    """While a BatchNorm has batch_stats, a Sequential runs it (and the layers around it)
    every time instead of replaying recorded kernel calls; without, it records again."""
    class Counting:                       # batch_stats computing local statistics
        calls = 0

        def forward(self, layer, x, gamma, beta):
            Counting.calls += 1
            mean, var = x.mean(axis=0), x.var(axis=0)
            return ((x - mean) / np.sqrt(var + layer.eps) * gamma + beta), None

    model = Sequential(Dense(4, 5, dtype=F64), BatchNorm1d(5, dtype=F64), ReLU())
    bn = model[1]
    x = np.random.default_rng(0).normal(size=(8, 4))
    plain = model(x)
    bn.batch_stats = Counting()
    assert not bn.recordable and BatchNorm1d.recordable
    for _ in range(3):
        np.testing.assert_allclose(model(x), plain, rtol=1e-12, atol=1e-12)
    assert Counting.calls == 3
    bn.batch_stats = None
    assert bn.recordable
    np.testing.assert_array_equal(model(x), plain)
    assert Counting.calls == 3


def test_evaluation_in_parts_weighs_each_part_by_its_class_weights():
    """What lets the ranks evaluate parts of the validation rows: the mean over parts
    (here eval batches) is weighted by each part's weight, not its row count."""
    trainer = build(0, class_weight=[1.0, 5.0, 0.2])
    X, y, _, _ = data()
    whole = trainer.evaluate(X, y, batch_size=len(X))
    parts = trainer.evaluate(X, y, batch_size=7)
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    assert parts["accuracy"] == whole["accuracy"]
    assert whole["loss"] == pytest.approx(trainer.loss(trainer.model(X), y), rel=1e-12)


@needs_mpi
def test_one_rank_under_plain_python_trains_as_one_process_with_a_warning(tmp_path):
    """A plain `python` (no mpiexec) is one rank: a warning, then ordinary training
    (in a subprocess: MPI is never started in the test process)."""
    env = mpi_env()
    for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-W", "always", HERE, "one_rank", tmp_path],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "distributed=True, but this process is the only MPI rank" in proc.stderr
    assert_same_run(load(tmp_path / "rank0.npz"), outcome_of_one_process(), exact=True)


def outcome_of_one_process(fit_kw=None, **kw):
    trainer = build(100, **kw)
    return outcome(trainer, fit(trainer, **(fit_kw or {})))


# ------------------------------------------------------------------- under mpiexec
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One mpiexec run per backend of the `train` scenario: {backend: outdir}."""
    if not (HAVE_MPI4PY and MPIEXEC):
        pytest.skip(needs_mpi.kwargs["reason"])
    runs = {}
    compiled = fastnn.show_config(print_=False)["cython"]
    for backend in ("cython", "numpy") if compiled else ("numpy",):
        out = tmp_path_factory.mktemp("train-" + backend)
        scenario("train", out, backend)
        runs[backend] = out
    return runs


@needs_mpi
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ranks_end_equal_to_rank_0s_one_process_run(trained, backend, variant):
    """Different initial seeds per rank, uneven splits (11 / 12 rows; a last batch of 2
    rows, or of 1 that rank 0 has no part of), with and without buckets, BatchNorm1d and
    (in a CNN) BatchNorm2d with synchronised statistics: both ranks end bit-identical
    (running statistics too), equal to the one-process run from rank 0's seed. BatchNorm
    with each rank's own statistics ends identical on both ranks, but is another
    computation. Row and class weights: the gradient is the weighted mean's, parts that
    weigh nothing count nothing."""
    kw, fit_kw, _, _ = VARIANTS[variant]
    with fastnn.use_backend(backend):
        want = outcome_of_one_process(fit_kw, **kw)
    ranks = [load(trained[backend] / ("%s-rank%d.npz" % (variant, r))) for r in range(RANKS)]
    buckets = [int(r.pop("buckets")) for r in ranks]
    assert buckets == [BUCKETS.get(variant, 0)] * RANKS
    assert_same_run(ranks[1], ranks[0], exact=True)
    if variant in LOCAL_BN:
        with pytest.raises(AssertionError):
            assert_same_run(ranks[0], want)
    else:
        assert_same_run(ranks[0], want)


@needs_mpi
def test_one_checkpoint_written_by_rank_0_and_resume_is_bit_identical(tmp_path):
    scenario("checkpoint", tmp_path)
    writes = json.loads((tmp_path / "writes.json").read_text())
    assert writes == {"0": 2, "1": 0}                  # one file, one writer, each epoch
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["run.ckpt.npz"]
    full = [load(tmp_path / ("full-rank%d.npz" % r)) for r in range(RANKS)]
    resumed = [load(tmp_path / ("resumed-rank%d.npz" % r)) for r in range(RANKS)]
    for r in range(RANKS):
        assert_same_run(resumed[r], full[0], exact=True)
    # the checkpoint holds rank 0's state: a one-process trainer resumes from it
    one = build(7)
    X, y, Xv, yv = data()
    one.fit(X, y, validation_data=(Xv, yv), epochs=4, batch_size=BATCH,
            resume=tmp_path / "ckpt" / "run.ckpt.npz")
    assert one.epochs_done == 4


@needs_mpi
def test_errors_are_raised_on_every_rank_and_nothing_hangs(tmp_path):
    scenario("errors", tmp_path)
    report = [json.loads((tmp_path / ("errors-rank%d.json" % r)).read_text())
              for r in range(RANKS)]
    for r in report:
        assert r["shapes"][0] == "ValueError"
        assert "every rank must be given the same X" in r["shapes"][1]
        assert "rank 0 has float64 (163, 6), rank 1 has float64 (162, 6)" in r["shapes"][1]
        assert r["values"][0] == "ValueError" and "training data values" in r["values"][1]
        assert r["label"][0] == "ValueError" and "labels must lie in [0, 3)" in r["label"][1]
        assert r["diverged"][0] == "NonFiniteError"
        assert r["one_row"][0] == "ValueError"
        assert "expected more than 1 value per channel" in r["one_row"][1]
        assert r["sync_rows"][0] == "ValueError"
        assert "sync_batchnorm needs every rank to get rows of every batch" in r["sync_rows"][1]
        assert "stepper: not available with distributed=True" in r["stepper"][1]
    assert "rank 1 of 2 failed" in report[0]["label"][1]
    assert "rank 0 of 2 failed" in report[1]["one_row"][1]
    assert report[0]["diverged"][1] == report[1]["diverged"][1]       # the same step


@needs_mpi
def test_distributed_search_table_equals_the_one_process_table(tmp_path):
    from fastnn.train.search import random_search
    scenario("search", tmp_path)
    got = json.loads((tmp_path / "search-rank0.json").read_text())
    assert got == json.loads((tmp_path / "search-rank1.json").read_text())
    want = random_search(*search_arguments(), **SEARCH_KW)
    assert got["rows"] == [{k: v for k, v in r.items() if k != "time"} for r in want]
    assert got["best"] == want.best_model[0].weight.data.tolist()


@needs_mpi
def test_cli_train_and_search_distributed(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    np.savetxt(tmp_path / "d.csv", np.c_[X, y], delimiter=",", fmt="%.6f")
    # BatchNorm: --distributed synchronises it, so the model equals a one-process run's
    common = ["d.csv", "--epochs", "2", "--arch", "12-bn-relu,3", "--optimizer", "momentum",
              "--quiet"]
    proc = mpirun(sys.executable, "-m", "fastnn", "train", *common, "--distributed",
                  "--out", "dist.npz", cwd=tmp_path)
    assert proc.stdout.count("validation: ") == 1           # rank 0 alone prints
    one = subprocess.run([sys.executable, "-m", "fastnn", "train", *common, "--out", "one.npz"],
                         cwd=tmp_path, env=mpi_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    dist, ref = fastnn.load(tmp_path / "dist.npz"), fastnn.load(tmp_path / "one.npz")
    for (k, a), (_, b) in zip(dist.state_dict().items(), ref.state_dict().items()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=k)

    proc = mpirun(sys.executable, "-m", "fastnn", "search", "d.csv", "--trials", "3",
                  "--epochs", "1", "--quiet", "--distributed", cwd=tmp_path)
    one = subprocess.run([sys.executable, "-m", "fastnn", "search", "d.csv", "--trials", "3",
                          "--epochs", "1", "--quiet"], cwd=tmp_path, env=mpi_env(),
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.stdout.count("best: ") == 1
    assert proc.stdout.splitlines()[-1] == one.stdout.splitlines()[-1]

    bad = mpirun(sys.executable, "-m", "fastnn", "train", "missing.csv", "--distributed",
                 cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "cannot read 'missing.csv'" in bad.stderr


# ------------------------------------------------------- scenarios (run by mpiexec)
SEARCH_KW = dict(n_trials=5, epochs=3, seed=3, halving=True)


def search_arguments():
    from fastnn.train.search import choice, loguniform
    X, y, Xv, yv = data()

    def build_fn(lr, width):
        model = Sequential(Dense(6, width, dtype=F64), ReLU(), Dense(width, 3, dtype=F64))
        return model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=lr)
    return build_fn, {"lr": loguniform(1e-3, 1e-1), "width": choice([4, 8])}, X, y, Xv, yv


def run_train(out, backend):
    from fastnn import distributed
    from fastnn.distributed.data_parallel import DataParallel
    fastnn.set_backend(backend)
    r = distributed.rank()
    for variant, (kw, fit_kw, bucket_bytes, sync) in VARIANTS.items():
        trainer = build(100 + r, distributed=True, sync_batchnorm=sync, **kw)
        DataParallel.bucket_bytes = bucket_bytes or 1 << 40
        result = outcome(trainer, fit(trainer, **fit_kw))
        buckets = trainer._sync._buckets
        result["buckets"] = 0 if buckets is None else len(buckets.segments)
        np.savez(os.path.join(out, "%s-rank%d.npz" % (variant, r)), **result)


def run_one_rank(out):
    trainer = build(100, distributed=True)
    np.savez(os.path.join(out, "rank0.npz"), **outcome(trainer, fit(trainer)))


def run_checkpoint(out):
    from fastnn import distributed
    from fastnn.train import checkpoint
    r = distributed.rank()
    full = build(7 + r, distributed=True)
    np.savez(os.path.join(out, "full-rank%d.npz" % r), **outcome(full, fit(full, epochs=4)))
    writes = []
    save = checkpoint.save_checkpoint

    def counted(*args, **kw):
        writes.append(1)
        return save(*args, **kw)
    checkpoint.save_checkpoint = counted
    path = os.path.join(out, "ckpt", "run.ckpt.npz")
    if r == 0:
        os.makedirs(os.path.dirname(path))
    part = build(7 + r, distributed=True)
    fit(part, epochs=2, checkpoint=path)
    checkpoint.save_checkpoint = save
    from mpi4py import MPI
    everyone = MPI.COMM_WORLD.allgather(len(writes))
    if r == 0:
        with open(os.path.join(out, "writes.json"), "w") as f:
            json.dump({str(i): n for i, n in enumerate(everyone)}, f)
    resumed = build(50 + r, distributed=True)
    history = fit(resumed, epochs=4, resume=path)
    np.savez(os.path.join(out, "resumed-rank%d.npz" % r), **outcome(resumed, history))


def run_errors(out):
    from fastnn import distributed
    r = distributed.rank()
    X, y, Xv, yv = data()
    trainer = build(0, distributed=True)
    report = {}

    def attempt(name, *args, batch_size=BATCH):
        try:
            trainer.fit(*args, epochs=2, batch_size=batch_size, seed=0)
        except Exception as exc:
            report[name] = [type(exc).__name__, str(exc)]
    attempt("shapes", X[:len(X) - r], y[:len(y) - r])
    attempt("values", X + r, y)
    bad = y.copy()
    bad[5] = 3 if r == 1 else bad[5]
    attempt("label", X, bad)
    trainer = build(0, sgd=True, distributed=True)
    trainer.optimizer.lr = 1e30
    attempt("diverged", X, y)
    trainer = build(0, bn=True, distributed=True)
    attempt("one_row", X, y, batch_size=3)      # rank 0 gets 1 row: BatchNorm refuses
    trainer = build(0, bn=True, distributed=True, sync_batchnorm=True)
    attempt("sync_rows", X, y, batch_size=27)   # the last batch of 1 row
    try:
        trainer.stepper(X[:BATCH], y[:BATCH])
    except ValueError as exc:
        report["stepper"] = ["ValueError", str(exc)]
    with open(os.path.join(out, "errors-rank%d.json" % r), "w") as f:
        json.dump(report, f)


def run_search(out):
    from fastnn import distributed
    from fastnn.train.search import random_search
    res = random_search(*search_arguments(), distributed=True, **SEARCH_KW)
    rows = [{k: v for k, v in row.items() if k != "time"} for row in res]
    with open(os.path.join(out, "search-rank%d.json" % distributed.rank()), "w") as f:
        json.dump({"rows": rows, "best": res.best_model[0].weight.data.tolist()}, f)


SCENARIOS = {"train": run_train, "one_rank": run_one_rank, "checkpoint": run_checkpoint,
             "errors": run_errors, "search": run_search}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])

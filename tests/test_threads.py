"""The kernels never start more threads than the process can create (issue 12, item 9):
a team beyond TEAM_PER_PROCESSOR per processor is capped, and a team the OS refuses is
shrunk, with a RuntimeWarning instead of libgomp's "Thread creation failed" and exit(1).
Each scenario runs in a fresh interpreter under an address-space limit."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn.core import threads
from conftest import BACKENDS
from conftest import FASTNN_PATH as SRC

SCRIPT = textwrap.dedent("""
    import sys, warnings
    import numpy as np, fastnn
    warnings.simplefilter("always")
    fastnn.set_num_threads(int(sys.argv[1]))
    x = np.ones((2048, 2048), np.float32)
    y, _ = fastnn.ops.activation_forward(x, "relu")
    print("ok", fastnn.get_num_threads(), float(y.sum()))
""")


def _limited(threads_wanted, **env):
    """Run SCRIPT under `ulimit -v 3000000` (3 GB of address space)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3_000_000 * 1024, resource.RLIM_INFINITY))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(threads_wanted)],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit,
                          env=dict(os.environ, PYTHONPATH=SRC, **env))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Thread creation failed" not in proc.stderr
    status, team, total = proc.stdout.split()
    assert status == "ok" and float(total) == 2048 * 2048
    return int(team), proc.stderr


pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
              pytest.mark.skipif("cython" not in BACKENDS,
                                 reason="needs the compiled kernels")]


def test_a_huge_team_is_capped():
    team, err = _limited(300)
    assert team == threads.max_team() and "capped at %d" % team in err


def test_a_team_the_system_cannot_create_shrinks():
    """1 GB thread stacks under a 3 GB limit: only a few threads fit."""
    want = min(8, threads.max_team())
    team, err = _limited(want, OMP_STACKSIZE="1G")
    assert 1 <= team < want and "cannot create" in err


def test_set_num_threads_checks_its_argument():
    before = fastnn.get_num_threads()
    try:
        for bad, exc in ((0, ValueError), (threads.MAX_THREADS + 1, ValueError),
                         (2.0, TypeError), (True, TypeError), ("2", TypeError)):
            with pytest.raises(exc, match="set_num_threads: n must be"):
                fastnn.set_num_threads(bad)
        with pytest.warns(RuntimeWarning, match="capped"):
            fastnn.set_num_threads(threads.max_team() + 1)
        assert fastnn.get_num_threads() == threads.max_team()
        fastnn.set_num_threads(np.int64(2))
        assert fastnn.get_num_threads() == 2
    finally:
        fastnn.set_num_threads(before)


@pytest.mark.parametrize("text,size", [("", 0), ("512", 512 << 10), ("16M", 16 << 20),
                                       (" 2g ", 2 << 30), ("100B", 100), ("x", 0)])
def test_openmp_stack_size_is_read_like_libgomp(text, size, monkeypatch):
    monkeypatch.setenv("OMP_STACKSIZE", text)
    monkeypatch.delenv("GOMP_STACKSIZE", raising=False)
    assert threads._omp_stack_size() == size


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")
def test_importing_fastnn_runs_the_kernels_blas_on_one_thread():
    """Right after `import fastnn` (no set_num_threads call), the BLAS under the kernels'
    OpenMP team is single-threaded: two nested pools made a step 50x slower."""
    code = textwrap.dedent("""
        import fastnn
        from threadpoolctl import threadpool_info
        from fastnn.core.threads import is_kernel_blas
        kernel = [i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas" and is_kernel_blas(i["filepath"])]
        print(kernel)
    """)
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    env.pop("FASTNN_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[1]", out

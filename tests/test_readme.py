"""The README's (and the API reference's) Python examples run as written.

Every ```python block of README.md and docs/api.md runs on its own, in a fresh interpreter, in an empty
temporary folder, with a time limit: a block may not use names from an earlier one. A
block in REPL form (lines starting with ">>> ") is run as a doctest, so its shown output
must match (``...`` stands for what differs between machines). A block whose first line
is a comment starting with "# illustrative" is not run (keep those rare, and say there
why). A block that needs an optional package which is not installed is skipped.
"""
import doctest
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import FASTNN_PATH as SRC

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "docs" / "api.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
ILLUSTRATIVE = "# illustrative"
#: what a block uses -> what it needs: an optional package, or the compiled kernels
NEEDS = {"plots": "matplotlib", "fastnn.memory": "the compiled kernels",
         "fastnn.sklearn": "sklearn", "import onnxruntime": "onnxruntime",
         "import torch": "torch", "safetensors": "safetensors"}
TIMEOUT = 300
DOCTEST_RUNNER = textwrap.dedent("""
    import doctest, sys
    test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, "README", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    sys.exit(1 if runner.failures else 0)
""")


def python_blocks(doc):
    """[(line number of the block's first line, code)] in the order of the file."""
    text = doc.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def all_blocks():
    return [pytest.param(line, code, id="%s:%d" % (doc.name, line))
            for doc in DOCS for line, code in python_blocks(doc)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_docs_have_python_blocks_and_no_link_outside_the_repository(doc):
    assert len(python_blocks(doc)) >= 8
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_the_block_finder_sees_every_fence(doc):
    """A fence the pattern missed would silently go untested."""
    text = doc.read_text(encoding="utf-8")
    assert len(python_blocks(doc)) == text.count("```python\n")


def _available(need):
    if need == "the compiled kernels":
        import fastnn
        return fastnn.show_config(print_=False)["cython"]
    try:
        __import__(need)
    except ImportError:
        return False
    return True


def _missing(code):
    """What `code` needs that this environment lacks, or None."""
    return next((need for use, need in NEEDS.items() if use in code and not _available(need)),
                None)


@pytest.mark.parametrize("line, code", all_blocks())
def test_block_runs_as_written(line, code, tmp_path):
    if code.startswith(ILLUSTRATIVE):
        pytest.skip("line %d: marked illustrative" % line)
    missing = _missing(code)
    if missing:
        pytest.skip("line %d needs %s" % (line, missing))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg", PYTHONWARNINGS="error")
    doctest_form = code.lstrip().startswith(">>> ")
    args = [sys.executable, "-c", DOCTEST_RUNNER] if doctest_form else [sys.executable, "-"]
    res = subprocess.run(args, input=code, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, "line %d:\n%s\n%s" % (line, res.stdout, res.stderr)


def test_a_failing_block_is_reported(tmp_path):
    """The runner really fails: a wrong doctest output and an exception both do."""
    env = dict(os.environ, PYTHONPATH=SRC)
    wrong = ">>> 1 + 1\n3\n"
    assert doctest.DocTestParser().get_examples(wrong)
    res = subprocess.run([sys.executable, "-c", DOCTEST_RUNNER], input=wrong, cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    res = subprocess.run([sys.executable, "-"], input="raise SystemExit(3)\n", cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 3


MPI_SCRIPT = "# illustrative: this is train_mpi.py"


def test_the_mpi_example_runs_under_mpiexec(tmp_path):
    """The README's MPI script (illustrative for the plain runner above) runs on 2 ranks,
    and only rank 0 prints and writes its files."""
    import test_distributed as dist
    if not (dist.HAVE_MPI4PY and dist.MPIEXEC):
        pytest.skip("MPI EXAMPLE NOT RUN: mpi4py or mpiexec is missing "
                    "(pip install mpi4py mpich)")
    code = next(c for _, c in python_blocks(README) if c.startswith(MPI_SCRIPT))
    (tmp_path / "train_mpi.py").write_text(code)
    proc = dist.mpirun(sys.executable, "-m", "mpi4py", "train_mpi.py", n=2, cwd=tmp_path)
    assert proc.stdout.startswith("2 ranks, loss") and proc.stdout.count("\n") == 1, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mpi-model.npz", "mpi.ckpt.npz",
                                                          "train_mpi.py"]

"""How many threads the compiled kernels use: the team size, its bound, fork safety, and
the BLAS thread pools.

Rules (documented in the README's Guarantees):
- `set_num_threads(n)` accepts 1 <= n <= MAX_THREADS; the kernels' OpenMP team is at most
  TEAM_PER_PROCESSOR threads per processor (more never helps a compute kernel), and
  never more threads than the process can create: before a kernel first starts a team
  larger than any it started before, fastnn creates (and joins) that many threads
  itself; where the OS refuses, the team shrinks with a RuntimeWarning (GNU libgomp
  would print "Thread creation failed" and exit the process).
- A child made by fork() runs its kernels on one thread. GNU libgomp is not fork-safe:
  once any library in the parent (fastnn, PyTorch, scikit-learn, ...) has run an OpenMP
  parallel region, the child inherits the pool's bookkeeping but not its threads, and
  its next multi-threaded region waits forever. No library can see from outside whether
  another one ran a region, so fastnn assumes one did, unless the parent had a single
  thread at the fork (then no pool can exist) or the user opts in with the environment
  variable FASTNN_FORK_THREADS=1 ("nothing in the parent used OpenMP threads"); even then
  a child of a parent where fastnn itself ran multi-threaded kernels stays on one
  thread. "spawn" and "forkserver" children are fresh processes: they are unaffected.
"""
import os
import threading
import warnings

from . import generation as _generation
from .validation import Integer, check

try:
    from ..kernels import _runtime as _RUNTIME
except ImportError:       # no compiled kernels: the NumPy backend only
    _RUNTIME = None

#: work (elements touched) below which a kernel runs on one thread: waking a second
#: thread costs more than it saves on small arrays
PARALLEL_MIN_WORK = 1 << 15
#: set_num_threads' upper bound (ValueError above it)
MAX_THREADS = 1024
#: the OpenMP team is at most this many threads per processor
TEAM_PER_PROCESSOR = 4


def max_team():
    """The largest team the kernels use: TEAM_PER_PROCESSOR per processor (8 at least)."""
    return max(8, TEAM_PER_PROCESSOR * (os.cpu_count() or 1))


def _default_threads():
    for var in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "")
        if val.isdigit() and int(val) > 0:
            return min(int(val), max_team())
    if _RUNTIME is not None:
        return min(_RUNTIME.max_threads(), max_team())
    return os.cpu_count() or 1


class _Verified(threading.local):
    """Per thread (each thread that starts OpenMP regions owns its own pool of workers):
    the largest team known to be creatable. A class attribute, so reading it in a new
    thread never raises."""
    team = 1


_verified = _Verified()
_requested = _default_threads()      # what set_num_threads asked for (capped)
_team = _requested                   # what kernels use: 1 in a forked child (see above)
_pool_started = False                # fastnn started a multi-threaded team


def set_num_threads(n):
    """Use n threads (1 <= n <= MAX_THREADS) in the compiled kernels (OpenMP; their GEMMs
    are split across these threads over a single-threaded BLAS) and in NumPy's BLAS. The
    team is capped at `max_team()` (with a RuntimeWarning) and, in a forked child, at 1
    (see this module's docstring)."""
    global _requested, _team
    n = check("set_num_threads", "n", n, Integer(1, MAX_THREADS))
    if n > max_team():
        warnings.warn("set_num_threads: %d threads capped at %d (%d per processor)"
                      % (n, max_team(), TEAM_PER_PROCESSOR), RuntimeWarning, stacklevel=2)
        n = max_team()
    _requested = n
    _team = 1 if _forked_child else n
    _generation.bump()
    apply_blas_limits()


def get_num_threads():
    """Number of threads the compiled kernels use (after the caps above)."""
    return _team


def threads_for(work):
    """Team size for a kernel touching `work` elements: 1 for small work, else the team
    (verified creatable the first time this thread asks for a team that large)."""
    if work < PARALLEL_MIN_WORK or _team == 1:
        return 1
    if _team > _verified.team:
        return _grow_team()
    return _team


def _grow_team():
    """The team for this thread after checking that its extra threads can be created."""
    global _team, _requested, _pool_started
    want = _team
    if _RUNTIME is not None:
        made = _RUNTIME.creatable_threads(want - 1, _omp_stack_size())
        if made < want - 1:
            warnings.warn("fastnn: the system cannot create %d more threads; the kernels "
                          "use %d" % (want - 1, made + 1), RuntimeWarning, stacklevel=3)
            want = _team = _requested = made + 1
            _generation.bump()
    _verified.team = want
    _pool_started = _pool_started or want > 1
    return want


def _omp_stack_size():
    """The stack size the OpenMP runtime gives its threads (OMP_STACKSIZE /
    GOMP_STACKSIZE: a number with an optional B, K, M or G suffix, K by default), in
    bytes; 0 for the system default."""
    for var in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):
        val = os.environ.get(var, "").strip().upper()
        if not val:
            continue
        unit = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(val[-1])
        digits = val[:-1].strip() if unit else val
        if digits.isdigit():
            return int(digits) * (unit or 1 << 10)
    return 0


# ------------------------------------------------------------------------ fork
_forked_child = False       # this process is a fork()ed child held to one thread
_parent_threads = 1         # the parent's thread count at the last fork


def _count_threads():
    """Threads of this process (Linux /proc; elsewhere assume more than one)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2


def _before_fork():
    global _parent_threads
    _parent_threads = _count_threads()


def _after_fork_in_child():
    global _forked_child, _team
    opted_in = os.environ.get("FASTNN_FORK_THREADS", "") == "1" and not _pool_started
    if _parent_threads > 1 and not opted_in:
        _forked_child = True
        if _team != 1:
            _team = 1
            _generation.bump()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------ BLAS
def apply_blas_limits(all_libraries=True):
    """One thread pool per backend. The compiled kernels split their GEMMs across their
    own OpenMP team, so the BLAS they call runs single-threaded (two pools spinning on
    each other's cores made steps up to 10x slower); other BLAS libraries (NumPy's, which
    the NumPy backend uses) get the configured thread count once the user sets one."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        if is_kernel_blas(lib.filepath):
            lib.set_num_threads(1)
        elif all_libraries:
            lib.set_num_threads(_team)


def is_kernel_blas(path):
    """True for the BLAS the compiled kernels' GEMMs call (scipy.linalg.cython_blas): the
    one shipped inside SciPy's distribution (scipy.libs/, scipy/.dylibs,
    scipy_openblas32/). A system BLAS shared with NumPy is left multi-threaded."""
    return _RUNTIME is not None and os.path.realpath(path).startswith(_SCIPY_ROOT)


def _scipy_root():
    import scipy
    return os.path.dirname(os.path.realpath(scipy.__file__))   # .../site-packages/scipy


_SCIPY_ROOT = _scipy_root()

"""fastnn's view of MPI: whether it runs, this process's rank, a communicator of its own,
and errors that every rank raises together.

MPI is reached through mpi4py only (the optional extra ``fastnn[mpi]``); importing this
module does not import mpi4py, and `rank()` / `world_size()` start MPI only when the
process was started by an MPI launcher (mpiexec / mpirun / srun) or MPI already runs.
"""
import importlib.util
import os
import sys
import warnings

__all__ = ["available", "launched", "rank", "world_size", "communicator", "several_ranks",
           "together", "raise_failures", "INSTALL"]

INSTALL = 'distributed training needs mpi4py and an MPI library: pip install "fastnn[mpi]" ' \
          "mpich (or Open MPI's mpi4py build)"

#: environment variables an MPI launcher sets in every process it starts (MPICH / Intel
#: MPI's hydra, Open MPI, PMIx launchers such as Slurm's srun)
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")

#: built-in exceptions a rank re-raises by name when another rank failed
_SHARED_ERRORS = {cls.__name__: cls for cls in (ValueError, TypeError, OSError,
                                                FileNotFoundError, PermissionError,
                                                RuntimeError, MemoryError)}

_comm = None     # fastnn's duplicate of MPI.COMM_WORLD, made on first use


def available():
    """True when mpi4py is installed (MPI may still not be started)."""
    return "mpi4py" in sys.modules or importlib.util.find_spec("mpi4py") is not None


def launched():
    """True when an MPI launcher started this process."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def _running_mpi():
    """mpi4py's MPI module when MPI runs or should (started by a launcher), else None."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi
    if mpi is None and launched() and available():
        from mpi4py import MPI        # starts MPI (mpi4py's default)
        return MPI
    return None


def rank():
    """This process's rank in MPI_COMM_WORLD: 0 without MPI.

    >>> from fastnn import distributed
    >>> distributed.rank(), distributed.world_size()      # a plain `python` process
    (0, 1)
    """
    mpi = _running_mpi()
    return 0 if mpi is None else mpi.COMM_WORLD.Get_rank()


def world_size():
    """The number of processes in MPI_COMM_WORLD: 1 without MPI."""
    mpi = _running_mpi()
    return 1 if mpi is None else mpi.COMM_WORLD.Get_size()


def communicator(fn):
    """fastnn's own communicator (a duplicate of MPI_COMM_WORLD, so its messages never
    mix with the program's), starting MPI if needed. Collective on first use: every
    rank must call it. ImportError naming `fn` when mpi4py is missing."""
    global _comm
    if _comm is None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise ImportError("%s: %s (%s)" % (fn, INSTALL, exc)) from None
        _comm = MPI.COMM_WORLD.Dup()
    return _comm


def several_ranks(fn, alone, stacklevel):
    """fastnn's communicator when the program runs on several ranks; None, with a
    warning from `fn` saying what it does `alone` instead, when this process is the
    only one (a plain `python`, or mpiexec -n 1). Collective."""
    comm = communicator(fn)
    if comm.Get_size() > 1:
        return comm
    warnings.warn("%s: distributed=True, but this process is the only MPI rank (start K "
                  "of them with mpiexec -n K); %s" % (fn, alone), stacklevel=stacklevel + 1)
    return None


def together(comm, fn, *args, root_only=False):
    """``fn(*args)`` as one step of every rank: when it raises on any rank, every rank
    raises (the failing rank its own exception, the others the same built-in type, or
    RuntimeError, naming that rank), so no rank is left waiting in a collective call.
    root_only: run `fn` on rank 0 only (the others get None). Returns fn's result."""
    result, failure = None, None
    if not root_only or comm.Get_rank() == 0:
        try:
            result = fn(*args)
        except Exception as exc:        # reported to the other ranks, then re-raised
            failure = exc
    raise_failures(comm, failure)
    return result


def raise_failures(comm, failure):
    """Collective: `failure` is this rank's exception or None; when any rank has one,
    every rank raises -- the failing rank its own exception, the others the same
    built-in type (or RuntimeError) naming that rank and its message."""
    reports = comm.allgather(None if failure is None
                             else (type(failure).__name__, str(failure)))
    if failure is not None:
        raise failure
    for r, report in enumerate(reports):
        if report is not None:
            cls = _SHARED_ERRORS.get(report[0], RuntimeError)
            raise cls("rank %d of %d failed: %s" % (r, comm.Get_size(), report[1]))

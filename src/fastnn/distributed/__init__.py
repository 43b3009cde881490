"""Data-parallel training on MPI: ``Trainer(..., distributed=True)`` under ``mpiexec``.

Start K copies of a training script with ``mpiexec -n K python train.py`` (several
machines: ``mpiexec -f hostfile -n K ...``). Every copy builds the same model and
trainer with ``distributed=True`` and calls ``fit`` with the same data; each global
batch is split across the K ranks, the gradients are averaged with one Allreduce per
step, and the result equals a one-process run with the same batch size (to float
tolerance; see `fastnn.distributed.data_parallel`). Needs mpi4py (``pip install
"fastnn[mpi]"`` plus an MPI, e.g. ``pip install mpich``).

`rank()` is this process's rank (0 without MPI), `world_size()` the number of ranks
(1 without MPI): guard what only one process should do with ``if rank() == 0``.

>>> from fastnn import distributed
>>> distributed.rank(), distributed.world_size()
(0, 1)
"""
from .mpi import available, rank, world_size

__all__ = ["rank", "world_size", "available"]

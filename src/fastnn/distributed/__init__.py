"""Data-parallel training on MPI: ``Trainer(..., distributed=True)`` under ``mpiexec``.

Start K copies of a training script with ``mpiexec -n K python -m mpi4py train.py``
(several machines: ``mpiexec -f hostfile -n K ...``; ``-m mpi4py`` makes an uncaught
exception on one rank end them all). Every copy builds the same model and a trainer
with ``distributed=True`` and calls ``fit`` with the same data (a memory-mapped array
keeps that cheap). Each global batch (the same shuffle on every rank) is split across
the K ranks and the gradients are averaged, weighted by rows, with one Allreduce per
step (in buckets that overlap the backward when the model is large enough), so the
parameters after training equal a one-process run with the same batch size, to float
tolerance, when the model has no dropout and no BatchNorm -- or BatchNorm with
``sync_batchnorm=True``, which normalises with the global batch's statistics.

What to know:

* Collective calls: `Trainer` construction, ``fit`` and ``evaluate`` (every rank calls
  them, with the same arguments); ``predict`` and friends are local. The ranks check up
  front that they were given the same data (shapes and sampled rows), arguments, model
  and optimizer, and take rank 0's parameters, buffers and shuffling generator; an
  error on any rank (bad input, a failing forward, a non-finite loss, a callback)
  raises on every rank at the same point, so none is left waiting.
* Only rank 0 prints and writes checkpoints; ``fit(..., resume=path)`` reads the file
  on every rank (a shared file system, or a copy on each machine). Write your own files
  under ``if fastnn.distributed.rank() == 0``.
* Validation metrics are computed on a part of the validation rows per rank and summed.
  Without sync_batchnorm, BatchNorm uses each rank's rows in training and rank 0's
  running statistics are given to every rank after each epoch.
* Dropout masks come from each rank's own generators: seed them differently per rank
  (e.g. ``fastnn.seed(base + rank())`` before building the model) for independent masks.
* A plain ``python`` (or ``mpiexec -n 1``) is one rank: ``distributed=True`` then warns
  and trains as one process. Without mpi4py it raises ImportError.

`rank()` is this process's rank (0 without MPI), `world_size()` the number of ranks
(1 without MPI). Needs mpi4py (``pip install "fastnn[mpi]"``) and an MPI library (e.g.
``pip install mpich``, or the system's Open MPI).

>>> from fastnn import distributed
>>> distributed.rank(), distributed.world_size()
(0, 1)
"""
from .mpi import available, rank, world_size

__all__ = ["rank", "world_size", "available"]

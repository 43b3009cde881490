"""`TrialSpread`: the trials of ``random_search(..., distributed=True)`` spread over the
MPI ranks. Trial i trains on rank ``i % K`` (all of its rungs, since its trainer lives
there); after every rung the ranks exchange the trials' results, so every rank ranks
them, keeps the same survivors and returns the same table as a one-process search.
"""
from .mpi import several_ranks, together

__all__ = ["TrialSpread", "trial_spread"]


def trial_spread(fn):
    """The `TrialSpread` of a distributed search; None, with a warning, when this
    process is the only rank. Collective: every rank must call it."""
    comm = several_ranks(fn, "running every trial here", stacklevel=3)
    if comm is None:
        return None
    return TrialSpread(comm)


class TrialSpread:
    """Which rank trains which trial, and the exchange of their results."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()

    def owner(self, index):
        """The rank that trains trial `index`."""
        return index % self.size

    def owns(self, index):
        return self.owner(index) == self.rank

    def together(self, fn, *args):
        """fn(*args) on every rank; if it fails on any, every rank raises."""
        return together(self.comm, fn, *args)

    def share(self, results):
        """{trial index: result} of this rank's trials -> the union over all ranks
        (on every rank)."""
        merged = {}
        for part in self.comm.allgather(results):
            merged.update(part)
        return merged

    def from_owner(self, index, value):
        """`value` as trial `index`'s owner has it, on every rank."""
        return self.comm.bcast(value, root=self.owner(index))

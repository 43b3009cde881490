"""Data-parallel training on MPI: measurements on this machine and a scaling model.

    python bench/distributed_scaling.py measure [--case L XL] [--seconds 2] [--rounds 3]
        On this machine: a training step of the reference cases (fastnn.tools.bench.CASES,
        float32, Dense-BatchNorm-ReLU, Adam; sync BatchNorm when distributed), timed over
        epochs of `Trainer.fit`, with 2 ranks x 1 thread (mpiexec -n 2) against 1 rank x
        2 threads, the Allreduce of the gradient buffer against the compute of a
        step, and how much of the Allreduce the overlap hides. The launches alternate
        round by round (the machine may be shared); medians are printed.
    python bench/distributed_scaling.py model [--per-sample L=SECONDS XL=SECONDS] [--cores N]
        On paper: efficiency of K = 2..64 ranks at 10 and 100 Gbit/s from the compute time
        per sample (measured here by default, one thread; --cores N divides it by N, for
        ranks that each use N cores as well as one uses one) and the ring Allreduce's
        cost, and the global batch each needs for more than 80 % efficiency.

The model: a step of global batch B on K ranks takes t_sample * B / K of compute plus
one ring Allreduce of the G gradient bytes, 2 (K - 1) / K * G / bandwidth + 2 (K - 1) *
latency, not overlapped (a lower bound on the efficiency the overlap can raise).
Efficiency = one rank's time / (K x the K-rank time) = C / (C + K * A), with C = t_sample
* B and A the Allreduce time; it exceeds 80 % when B > 4 K A / t_sample.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)
SRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")
sys.path.insert(0, SRC)

#: link speeds (bit/s) and the per-message latency assumed for each (TCP over 10 GbE;
#: RDMA, e.g. InfiniBand / RoCE, at 100 Gbit/s)
NETWORKS = [("10 Gbit/s", 10e9, 30e-6), ("100 Gbit/s", 100e9, 3e-6)]
RANKS = [2, 4, 8, 16, 32, 64]
TARGET = 0.8


# --------------------------------------------------------------------------- model
def allreduce_seconds(nbytes, k, bandwidth, latency):
    """Ring Allreduce of `nbytes` over k ranks: 2 (k-1)/k * bytes / (bandwidth / 8)
    seconds of transfer plus 2 (k-1) latencies."""
    return 2 * (k - 1) / k * nbytes / (bandwidth / 8) + 2 * (k - 1) * latency


def efficiency(per_sample, batch, nbytes, k, bandwidth, latency):
    compute = per_sample * batch
    return compute / (compute + k * allreduce_seconds(nbytes, k, bandwidth, latency))


def batch_for(per_sample, nbytes, k, bandwidth, latency, target=TARGET):
    """The smallest global batch with efficiency above `target`."""
    a = allreduce_seconds(nbytes, k, bandwidth, latency)
    return int(np.floor(target / (1 - target) * k * a / per_sample)) + 1


def model_table(cases, per_sample, cores=1):
    """The scaling table as text: per case and network, efficiency at the case's batch
    and the global batch (and per-rank batch) needed for > 80 %."""
    from fastnn.tools.bench import fastnn_model
    lines = []
    for name, widths, batch in cases:
        nbytes = sum(p.data.nbytes for p in fastnn_model(widths).parameters())
        t = per_sample[name] / cores
        lines.append("%s %s, gradient %.2f MB, compute %.1f us/sample (a rank of %d "
                     "core%s), batch %d" % (name, "-".join(map(str, widths)), nbytes / 1e6,
                                            t * 1e6, cores, "s" if cores > 1 else "", batch))
        lines.append("  %-11s %3s  %11s  %10s  %18s" % ("network", "K", "Allreduce",
                                                        "efficiency", "batch for >80%"))
        for net, bw, lat in NETWORKS:
            for k in RANKS:
                a = allreduce_seconds(nbytes, k, bw, lat)
                e = efficiency(t, batch, nbytes, k, bw, lat)
                need = batch_for(t, nbytes, k, bw, lat)
                lines.append("  %-11s %3d  %8.2f ms  %9.0f%%  %8d (%d/rank)"
                             % (net, k, a * 1e3, 100 * e, need, -(-need // k)))
        lines.append("")
    return "\n".join(lines)


def measure_per_sample(cases, seconds=1.0):
    """Compute seconds per sample of a training step on one thread, per case."""
    import fastnn
    from fastnn.tools.bench import fastnn_step_fn, median_time
    fastnn.set_num_threads(1)
    return {name: median_time(fastnn_step_fn(widths, batch, fastnn.get_backend()),
                              seconds) / batch
            for name, widths, batch in cases}


# ------------------------------------------------------------------ measurements
#: steps per timed epoch in the measurements; samples per launch
STEPS, SAMPLES = 16, 5


def worker(case, seconds):
    """Under mpiexec: per rank, time epochs of STEPS steps of this case with
    `Trainer.fit` (distributed when K > 1: sync BatchNorm with overlap, without
    overlap, and local BatchNorm, interleaved sample by sample) and, with K > 1, a
    rank's compute alone and the Allreduce of the gradient buffer alone. Rank 0 prints
    one JSON line of medians, seconds per step."""
    import fastnn
    from fastnn import distributed
    from fastnn.distributed.data_parallel import DataParallel
    from fastnn.tools.reference_nets import CASES, data, fastnn_model
    from mpi4py import MPI
    name, widths, batch = next(c for c in CASES if c[0] == case)
    comm, k = MPI.COMM_WORLD, distributed.world_size()
    x, y = data(widths, batch, STEPS)

    def trainer(distributed, sync_bn=False):
        model = fastnn_model(widths)
        return fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
                              fastnn.optim.Adam(model.parameters(), lr=1e-3), verbose=0,
                              distributed=distributed, sync_batchnorm=sync_bn)

    def epoch(t, overlap):
        def run():
            DataParallel.overlap = overlap
            t.fit(x, y, epochs=1, batch_size=batch, shuffle=False)
        return run
    if k == 1:
        variants = {"step": epoch(trainer(False), True)}
    else:
        synced = trainer(True, True)
        variants = {"step": epoch(synced, True), "no overlap": epoch(synced, False),
                    "local BatchNorm": epoch(trainer(True), True)}
    samples = {v: [] for v in variants}
    for _ in range(SAMPLES):
        for v, fn in variants.items():
            samples[v].append(_timed(comm, fn, seconds / SAMPLES) / STEPS)
    result = {v: float(np.median(t)) for v, t in samples.items()}
    if k > 1:
        rank = distributed.rank()
        part = slice(rank * batch // k, (rank + 1) * batch // k)
        result["compute alone"] = _timed(comm, trainer(False).stepper(x[part], y[part]),
                                         seconds / 2)
        grads = np.zeros(sum(p.size for p in synced.model.parameters()), np.float32)
        result["Allreduce alone"] = _timed(comm, lambda: comm.Allreduce(MPI.IN_PLACE, grads),
                                           seconds / 2)
    if comm.Get_rank() == 0:
        print(json.dumps(result), flush=True)


def _timed(comm, fn, seconds):
    """Median seconds per call of fn on every rank together (the slowest rank's); the
    ranks agree on the number of calls (fn may be a collective step)."""
    for _ in range(3):
        fn()
    comm.Barrier()
    t0 = time.perf_counter()
    fn()
    one = comm.allreduce(time.perf_counter() - t0, op=_max())
    times = []
    for _ in range(max(5, int(seconds / max(one, 1e-6)))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    comm.Barrier()
    return comm.allreduce(float(np.median(times)), op=_max())


def _max():
    from mpi4py import MPI
    return MPI.MAX


def launch(case, ranks, threads, seconds):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = dict(os.environ, FASTNN_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               PYTHONPATH=SRC, MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp",
               FI_TCP_IFACE="lo")
    out = subprocess.run([mpiexec, "-iface", "lo", "-n", str(ranks), sys.executable, HERE,
                          "worker", case, str(seconds)], env=env, capture_output=True,
                         text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(cases, seconds, rounds):
    """Alternate the one-rank and two-rank launches round by round; print the medians
    per case (milliseconds per step)."""
    for case in cases:
        one, two = [], []
        for _ in range(rounds):
            one.append(launch(case, 1, 2, seconds))
            two.append(launch(case, 2, 1, seconds))
        one = float(np.median([r["step"] for r in one]))
        med = {k: float(np.median([r[k] for r in two])) for k in two[0]}
        print("%s, ms per step (medians of %d rounds):" % (case, rounds))
        print("  1 rank x 2 threads      %7.2f" % (one * 1e3))
        print("  2 ranks x 1 thread      %7.2f  (%.2fx), sync BatchNorm, overlap"
              % (med["step"] * 1e3, med["step"] / one))
        print("    without overlap       %7.2f  (the overlap hides %.2f)"
              % (med["no overlap"] * 1e3, (med["no overlap"] - med["step"]) * 1e3))
        print("    local BatchNorm       %7.2f" % (med["local BatchNorm"] * 1e3))
        print("    a rank's compute alone %6.2f, the gradient Allreduce alone %.2f (%.0f%%)"
              % (med["compute alone"] * 1e3, med["Allreduce alone"] * 1e3,
                 100 * med["Allreduce alone"] / med["compute alone"]), flush=True)


def main(argv=None):
    from fastnn.tools.bench import CASES
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "worker":
        return worker(argv[1], float(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("measure")
    p.add_argument("--case", nargs="+", default=["L", "XL"])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("model")
    p.add_argument("--per-sample", nargs="+", metavar="CASE=SECONDS",
                   help="compute seconds per sample (default: measured, one thread)")
    p.add_argument("--cores", type=int, default=1,
                   help="cores per rank: the per-sample time is divided by it (default 1)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if c[0] in ("L", "XL")]
    if args.command == "measure":
        return measure(args.case, args.seconds, args.rounds)
    if args.per_sample:
        per_sample = {k: float(v) for k, v in (a.split("=") for a in args.per_sample)}
    else:
        per_sample = measure_per_sample(cases)
    print(model_table(cases, per_sample, args.cores))


if __name__ == "__main__":
    main()

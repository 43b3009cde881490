"""The PyTorch peer of `python -m fastnn bench`, run as a child process (`bench.Remote`
starts ``python torch_peer.py``): it builds contenders there and times their calls.

The child never imports fastnn. Both link an OpenMP runtime named libgomp.so.1, which
the loader maps once per process: with fastnn imported first, torch ran on fastnn's
system libgomp instead of the one in its wheel, and the benchmark would time a torch
that no user runs. Here torch loads exactly as in a plain script.

Protocol, one line each way: a JSON list [factory, args] builds ``factory(*args)`` (a
name in this module, or "module:name" for a module importable without fastnn; the tools
directory is on the child's path) and answers "ready" or the error on one line;
"i k" times k back-to-back calls of contender i and answers the seconds; "info" answers
a JSON object describing the runtime (`runtime_info`).
"""
import importlib
import json
import sys
import time
import traceback

if __package__:
    from .reference_nets import data, torch_model
else:                                   # run as a script: the tools directory is on sys.path
    from reference_nets import data, torch_model


def torch_step_fn(widths, batch, threads):
    """A callable making one training step (zero_grad, forward, cross-entropy, backward,
    Adam) of the reference network with `threads` intra-op threads."""
    import torch
    model = torch_model(widths, threads)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in data(widths, batch))

    def step():
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    return step


def torch_infer_fn(widths, threads):
    """A callable running the eval-mode forward of the reference network at batch 1."""
    import torch
    model = torch_model(widths, threads).eval()
    x = torch.from_numpy(data(widths, 1)[0])

    def infer():
        with torch.no_grad():
            model(x)
    return infer


def torch_sgemm_fn(n):
    """A callable multiplying two n x n float32 matrices on one thread (torch's GEMM:
    MKL in the PyPI wheels), into a preallocated output."""
    import torch
    torch.set_num_threads(1)
    a = torch.randn(n, n)
    c = torch.empty(n, n)
    return lambda: torch.mm(a, a, out=c)


def runtime_info():
    """What the peer runs on: torch's version and thread settings, the OpenMP runtime
    mapped into this process, and whether fastnn was loaded here (it must not be)."""
    import torch
    with open("/proc/self/maps") as f:
        omp = sorted({line.split()[-1] for line in f if "gomp" in line or "libiomp" in line})
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "openmp": omp,
            "fastnn_loaded": "fastnn" in sys.modules}


def _factory(name):
    module, _, fn = name.rpartition(":")
    return getattr(importlib.import_module(module), fn) if module else globals()[name]


def serve(lines=sys.stdin):
    """The child's loop (see the module docstring); ends when stdin closes."""
    fns = []
    for line in lines:
        if line.startswith("["):
            try:
                name, args = json.loads(line)
                fns.append(_factory(name)(*args))
            except Exception:                          # report it on one line
                print(traceback.format_exc().replace("\n", " | "), flush=True)
                continue
            print("ready", flush=True)
        elif line.strip() == "info":
            print(json.dumps(runtime_info()), flush=True)
        else:
            i, k = map(int, line.split())
            fn = fns[i]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            print(repr(time.perf_counter() - t0), flush=True)


if __name__ == "__main__":
    serve()

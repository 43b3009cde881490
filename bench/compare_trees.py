"""Two checkouts of fastnn timed side by side: is a change faster or slower?

    python bench/compare_trees.py OLD_SRC NEW_SRC [--rounds 15] [--threads 2]

OLD_SRC and NEW_SRC are the `src` folders of two checkouts, each built in place
(`python setup.py build_ext --inplace`). One child process per checkout (the same
package cannot be imported twice into one process) builds the reference training steps
(fastnn.tools.bench's S/M/L/XL shapes: Dense-BatchNorm1d-ReLU hidden layers, softmax
cross-entropy, Adam, float32) and batch-1 inference, through the public API both
checkouts share (``model(x)``, the loss, ``model.backward``, ``opt.step()``). The
children are timed in alternating rounds, the order flipping each round, and each
ratio is the median of the per-round ratios new / old, with its middle half: the
same method as ``fastnn bench``, so machine drift cancels out of the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

#: (name, widths, batch): the reference cases of fastnn.tools.bench
CASES = [("S", (64, 128, 10), 32), ("M", (784, 256, 10), 64),
         ("L", (784, 512, 512, 10), 128), ("XL", (784, 1024, 1024, 10), 512)]
SAMPLE = 0.05      # seconds of back-to-back calls per contender per round
PAUSE = 0.2        # seconds after each sample (spinning thread pools settle)

CHILD = r"""
import json, sys, time
import numpy as np
import fastnn

fastnn.set_num_threads(int(sys.argv[1]))
cases = json.loads(sys.argv[2])


def build(widths, seed=0):
    fastnn.seed(seed)
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [fastnn.Dense(a, b), fastnn.BatchNorm1d(b), fastnn.ReLU()]
    layers.append(fastnn.Dense(widths[-2], widths[-1]))
    return fastnn.Sequential(*layers)


def step_fn(widths, batch):
    model = build(widths)
    crit, opt = fastnn.SoftmaxCrossEntropy(), fastnn.optim.Adam(model.parameters())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, widths[0]), dtype=np.float32)
    y = rng.integers(0, widths[-1], batch)

    def step():
        crit(model(x), y)
        model.backward(crit.backward())
        opt.step()
    return step


def infer_fn(widths):
    model = build(widths).eval()
    x = np.random.default_rng(0).standard_normal((1, widths[0]), dtype=np.float32)
    return lambda: model(x)


fns = {}
for name, widths, batch in cases:
    fns[name] = step_fn(widths, batch)
fns["M infer b=1"] = infer_fn(cases[1][1])
for fn in fns.values():
    for _ in range(3):
        fn()
print(json.dumps(list(fns)), flush=True)
for line in sys.stdin:
    name, budget = line.rsplit(" ", 1)
    fn, budget = fns[name], float(budget)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= budget and n >= 3:
            break
    print(t / n, flush=True)
"""


class Tree:
    """A child process running one checkout's steps on request."""

    def __init__(self, src, threads):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(threads), json.dumps(CASES)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.names = json.loads(self.proc.stdout.readline())

    def time(self, name, budget=SAMPLE):
        """Seconds per call of `name`, over `budget` seconds of back-to-back calls."""
        self.proc.stdin.write("%s %r\n" % (name, budget))
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old"), p.add_argument("new")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    trees = {"old": Tree(args.old, args.threads), "new": Tree(args.new, args.threads)}
    names = trees["old"].names
    times = {(t, n): [] for t in trees for n in names}
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for name in names:
            for t in order:
                times[t, name].append(trees[t].time(name))
                time.sleep(PAUSE)
    for tree in trees.values():
        tree.close()
    print("| case | old | new | new / old (median of rounds) | middle half |")
    print("|---|---|---|---|---|")
    for name in names:
        old, new = np.array(times["old", name]), np.array(times["new", name])
        ratio = new / old
        print("| %s | %.0f us | %.0f us | %.3f | %.3f - %.3f |"
              % (name, np.median(old) * 1e6, np.median(new) * 1e6, np.median(ratio),
                 np.percentile(ratio, 25), np.percentile(ratio, 75)))


if __name__ == "__main__":
    main()

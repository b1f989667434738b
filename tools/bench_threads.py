"""Instances on several threads really run in parallel (ctypes releases the GIL while guest code
runs): N instances of a compute kernel on N threads, against the same N runs one after another
on one thread. The speedup is the sequential time over the threaded time (the ideal is N, on a
machine with at least N free cores)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylucet  # noqa: E402
from tools._workloads import FIB  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                    help="threads and instances (default: the number of cores)")
    ap.add_argument("--n", type=int, default=30, help="fib(n) per instance (default 30)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    args = ap.parse_args(argv)
    module = pylucet.load(pylucet.compile(FIB))
    with pylucet.MmapRegion(args.threads) as region:
        instances = [region.new_instance(module) for _ in range(args.threads)]
        expected = instances[0].run("fib", args.n)

        def sequential() -> None:
            for inst in instances:
                assert inst.run("fib", args.n) == expected

        # persistent workers, released together by a barrier: thread start-up (and each new
        # thread's first signal stack) is not what is measured
        start, done = threading.Barrier(len(instances) + 1), threading.Barrier(len(instances) + 1)
        results = [0] * len(instances)
        stop = False

        def worker(k: int) -> None:
            while True:
                start.wait()
                if stop:
                    return
                results[k] = instances[k].run("fib", args.n)
                done.wait()

        workers = [threading.Thread(target=worker, args=(k,), daemon=True)
                   for k in range(len(instances))]
        for w in workers:
            w.start()

        def threaded() -> None:
            start.wait()
            done.wait()
            assert results == [expected] * len(instances)

        seq, par = [], []
        threaded()   # warm up: each stack's first pages
        for _ in range(args.repeat):
            for fn, times in ((sequential, seq), (threaded, par)):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        stop = True
        start.wait()
        for w in workers:
            w.join()
        for inst in instances:
            inst.close()
    s, p = statistics.median(seq), statistics.median(par)
    print(f"{args.threads} x fib({args.n}): one thread {s * 1e3:.1f} ms, {args.threads} threads "
          f"{p * 1e3:.1f} ms: speedup {s / p:.2f}x (ideal {args.threads}x, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

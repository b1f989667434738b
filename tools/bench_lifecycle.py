"""Lifecycle costs, after Lucet's benchmarks: instantiate, a context-switch round trip (calling a
nop export), a call with arguments, fib(20), and teardown; pylucet beside wasmtime-py in one run.

Lucet's published figures (native Rust host): ~30 us instantiate, ~0.5 us round trip, ~23 us
teardown. Python's own call overhead (~0.3 us per ctypes call) bounds what pylucet can reach.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pylucet  # noqa: E402
from _workloads import FIB, NOP  # noqa: E402


def per_call(fn: Callable[[], object], n: int) -> float:
    """Median over 5 runs of the mean time per call, in microseconds."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


def _trapping(fn, *args) -> None:
    """Call ``fn`` and swallow the trap it must raise (wasmtime's or pylucet's)."""
    try:
        fn(*args)
    except Exception as e:   # noqa: BLE001 - both libraries' trap types
        if "trap" not in type(e).__name__.lower() and "unreachable" not in str(e) \
                and "out of bounds" not in str(e):
            raise
    else:
        raise AssertionError(f"{fn} did not trap")


def bench_pylucet() -> Dict[str, float]:
    nop = pylucet.load(pylucet.compile(NOP))
    fib = pylucet.load(pylucet.compile(FIB))
    out = {}
    region = pylucet.MmapRegion(2)
    inst_holder = []

    def instantiate():
        inst_holder.append(region.new_instance(nop))

    def teardown():
        inst_holder.pop().close()

    # instantiate and teardown measured separately, paired so the region never fills
    times_i, times_t = [], []
    for _ in range(5):
        ti = tt = 0.0
        for _ in range(500):
            t = time.perf_counter(); instantiate(); ti += time.perf_counter() - t
            t = time.perf_counter(); teardown(); tt += time.perf_counter() - t
        times_i.append(ti / 500 * 1e6)
        times_t.append(tt / 500 * 1e6)
    out["instantiate"] = statistics.median(times_i)
    out["teardown"] = statistics.median(times_t)
    inst = region.new_instance(nop)
    out["call nop (round trip)"] = per_call(lambda: inst.run("nop"), 20000)
    out["call add(i32, i32)"] = per_call(lambda: inst.run("add", 1, 2), 20000)
    out["trap: heap out of bounds"] = per_call(lambda: _trapping(inst.run, "oob"), 2000)
    out["trap: unreachable"] = per_call(lambda: _trapping(inst.run, "unreachable"), 2000)
    inst.close()
    f = region.new_instance(fib)
    out["fib(20)"] = per_call(lambda: f.run("fib", 20), 20)
    f.close()
    region.close()
    return out


def bench_wasmtime() -> Dict[str, float]:
    import wasmtime
    engine = wasmtime.Engine()
    nop = wasmtime.Module(engine, NOP)
    fib = wasmtime.Module(engine, FIB)
    out = {}

    def instantiate():
        store = wasmtime.Store(engine)
        wasmtime.Instance(store, nop, [])

    out["instantiate"] = per_call(instantiate, 500)
    out["teardown"] = float("nan")   # wasmtime-py frees on garbage collection; not separable
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, nop, [])
    f_nop = inst.exports(store)["nop"]
    f_add = inst.exports(store)["add"]
    out["call nop (round trip)"] = per_call(lambda: f_nop(store), 20000)
    out["call add(i32, i32)"] = per_call(lambda: f_add(store, 1, 2), 20000)
    f_oob, f_unreachable = inst.exports(store)["oob"], inst.exports(store)["unreachable"]
    out["trap: heap out of bounds"] = per_call(lambda: _trapping(f_oob, store), 2000)
    out["trap: unreachable"] = per_call(lambda: _trapping(f_unreachable, store), 2000)
    fstore = wasmtime.Store(engine)
    f_fib = wasmtime.Instance(fstore, fib, []).exports(fstore)["fib"]
    out["fib(20)"] = per_call(lambda: f_fib(fstore, 20), 20)
    return out


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    ours = bench_pylucet()
    try:
        theirs = bench_wasmtime()
    except ImportError:
        theirs = {}
        print("(wasmtime not installed: pip install wasmtime for the side-by-side column)")
    print(f"{'operation':<24}{'pylucet us':>12}{'wasmtime-py us':>16}{'ratio':>8}")
    for k, v in ours.items():
        w = theirs.get(k, float("nan"))
        ratio = v / w if w == w and w else float("nan")
        print(f"{k:<24}{v:>12.2f}{w:>16.2f}{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

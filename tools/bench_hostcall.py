"""The cost of crossing the host boundary, beside wasmtime-py, in one run:

* guest -> Python -> guest: a wasm loop calling an imported Python function N times, per call;
* guest -> guest across instances: the same loop calling an export of another instance.

Each figure is the median of several runs of the whole loop, divided by N."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylucet  # noqa: E402

CALLER = """(module
  (import "env" "inc" (func $inc (param i32) (result i32)))
  (import "env" "nop" (func $nop))
  (func (export "loop_inc") (param $n i32) (result i32) (local $i i32)
    (loop $l (local.set $i (call $inc (local.get $i)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i))
  (func (export "loop_nop") (param $n i32) (local $i i32)
    (loop $l (call $nop) (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1)))
                                             (local.get $n))))))"""

CALLEE = """(module
  (func (export "inc") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  (func (export "nop")))"""


def per_call_ns(fn, n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / n * 1e9


def pylucet_runs(n: int, repeat: int) -> dict:
    out = {}
    caller = pylucet.load(pylucet.compile(CALLER))
    with pylucet.MmapRegion(2) as region:
        host = pylucet.Linker()
        host.define_func("env", "inc", lambda x: x + 1, "(i32) -> i32")
        host.define_func("env", "nop", lambda: None, "() -> ()")
        with region.new_instance(caller, linker=host) as inst:
            assert inst.run("loop_inc", 100) == 100
            out["host inc(i32) -> i32"] = per_call_ns(lambda k: inst.run("loop_inc", k), n, repeat)
            out["host nop"] = per_call_ns(lambda k: inst.run("loop_nop", k), n, repeat)
        lib = region.new_instance(pylucet.load(pylucet.compile(CALLEE)))
        guests = pylucet.Linker()
        guests.define_instance("env", lib)
        with region.new_instance(caller, linker=guests) as inst:
            assert inst.run("loop_inc", 100) == 100
            m = n * 100
            out["instance inc(i32) -> i32"] = per_call_ns(lambda k: inst.run("loop_inc", k), m,
                                                         repeat)
            out["instance nop"] = per_call_ns(lambda k: inst.run("loop_nop", k), m, repeat)
        lib.close()
    return out


def wasmtime_runs(n: int, repeat: int) -> dict:
    import wasmtime
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    i32 = wasmtime.ValType.i32()
    inc = wasmtime.Func(store, wasmtime.FuncType([i32], [i32]), lambda x: x + 1)
    nop = wasmtime.Func(store, wasmtime.FuncType([], []), lambda: None)
    caller = wasmtime.Module(engine, CALLER)
    ex = wasmtime.Instance(store, caller, [inc, nop]).exports(store)
    out = {}
    assert ex["loop_inc"](store, 100) == 100
    out["host inc(i32) -> i32"] = per_call_ns(lambda k: ex["loop_inc"](store, k), n, repeat)
    out["host nop"] = per_call_ns(lambda k: ex["loop_nop"](store, k), n, repeat)
    lib = wasmtime.Instance(store, wasmtime.Module(engine, CALLEE), []).exports(store)
    ex2 = wasmtime.Instance(store, caller, [lib["inc"], lib["nop"]]).exports(store)
    m = n * 100
    out["instance inc(i32) -> i32"] = per_call_ns(lambda k: ex2["loop_inc"](store, k), m, repeat)
    out["instance nop"] = per_call_ns(lambda k: ex2["loop_nop"](store, k), m, repeat)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000, help="host calls per run (default 20000;"
                    " instance-to-instance calls run 100 times as many)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (default 7)")
    args = ap.parse_args(argv)
    ours = pylucet_runs(args.calls, args.repeat)
    try:
        theirs = wasmtime_runs(args.calls, args.repeat)
    except ImportError:
        theirs = {}
        print("(wasmtime not installed: pip install -e '.[bench]' for its column)")
    print(f"{'per call':<26}{'pylucet ns':>12}{'wasmtime-py ns':>16}{'speedup':>9}")
    for name, ns in ours.items():
        if name in theirs:
            print(f"{name:<26}{ns:>12.1f}{theirs[name]:>16.1f}{theirs[name] / ns:>8.1f}x")
        else:
            print(f"{name:<26}{ns:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generated-code speed: compute kernels, then the 35 Sightglass benchmark programs
(``tools/sightglass.py``, each checked against its expected output), compiled by pylucetc and by
wasmtime's Cranelift and run side by side in one process. Each kernel is one long call
(milliseconds), so call overhead is noise; the ratio is pylucet time / Cranelift time (lower is
better; the goal is a geometric mean <= 1.0 with none above 1.5)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylucet  # noqa: E402

KERNELS = r"""
(module
  (memory (export "memory") 32)
  ;; recursion and calls
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2)) (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  ;; byte loads and stores in nested loops: primes below n
  (func (export "sieve") (param $n i32) (result i32)
    (local $i i32) (local $j i32) (local $count i32)
    (local.set $i (i32.const 0))
    (loop $clear
      (i32.store8 (local.get $i) (i32.const 0))
      (br_if $clear (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
    (local.set $i (i32.const 2))
    (block $done (loop $outer
      (br_if $done (i32.ge_u (i32.mul (local.get $i) (local.get $i)) (local.get $n)))
      (if (i32.eqz (i32.load8_u (local.get $i))) (then
        (local.set $j (i32.mul (local.get $i) (local.get $i)))
        (block $d2 (loop $inner
          (br_if $d2 (i32.ge_u (local.get $j) (local.get $n)))
          (i32.store8 (local.get $j) (i32.const 1))
          (local.set $j (i32.add (local.get $j) (local.get $i)))
          (br $inner)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $outer)))
    (local.set $i (i32.const 2))
    (block $d3 (loop $cnt
      (br_if $d3 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $count (i32.add (local.get $count) (i32.eqz (i32.load8_u (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $cnt)))
    (local.get $count))
  ;; shifts and xors: bitwise CRC-32 of n bytes of memory
  (func (export "crc32") (param $n i32) (result i32)
    (local $crc i32) (local $i i32) (local $k i32)
    (local.set $crc (i32.const -1))
    (block $done (loop $bytes
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $crc (i32.xor (local.get $crc) (i32.load8_u (local.get $i))))
      (local.set $k (i32.const 8))
      (loop $bits
        (local.set $crc (i32.xor (i32.shr_u (local.get $crc) (i32.const 1))
          (i32.and (i32.const 0xEDB88320) (i32.sub (i32.const 0) (i32.and (local.get $crc) (i32.const 1))))))
        (br_if $bits (local.tee $k (i32.sub (local.get $k) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $bytes)))
    (i32.xor (local.get $crc) (i32.const -1)))
  ;; i64 multiply-accumulate over an n x n matrix product kept in memory
  (func (export "matmul") (param $n i32) (result i64)
    (local $i i32) (local $j i32) (local $k i32) (local $acc i64) (local $sum i64)
    (block $di (loop $li
      (br_if $di (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $j (i32.const 0))
      (block $dj (loop $lj
        (br_if $dj (i32.ge_u (local.get $j) (local.get $n)))
        (local.set $acc (i64.const 0))
        (local.set $k (i32.const 0))
        (block $dk (loop $lk
          (br_if $dk (i32.ge_u (local.get $k) (local.get $n)))
          (local.set $acc (i64.add (local.get $acc)
            (i64.mul (i64.load (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $k)) (i32.const 3)))
                     (i64.load offset=524288 (i32.shl (i32.add (i32.mul (local.get $k) (local.get $n)) (local.get $j)) (i32.const 3))))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $lk)))
        (local.set $sum (i64.add (local.get $sum) (local.get $acc)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $lj)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $li)))
    (local.get $sum))
  ;; f64 arithmetic and compares: Mandelbrot iteration count over a w x w grid
  (func (export "mandel") (param $w i32) (result i32)
    (local $px i32) (local $py i32) (local $it i32) (local $total i32)
    (local $cx f64) (local $cy f64) (local $x f64) (local $y f64) (local $t f64)
    (block $dy (loop $ly
      (br_if $dy (i32.ge_u (local.get $py) (local.get $w)))
      (local.set $px (i32.const 0))
      (block $dx (loop $lx
        (br_if $dx (i32.ge_u (local.get $px) (local.get $w)))
        (local.set $cx (f64.sub (f64.div (f64.mul (f64.convert_i32_u (local.get $px)) (f64.const 3))
                                         (f64.convert_i32_u (local.get $w))) (f64.const 2)))
        (local.set $cy (f64.sub (f64.div (f64.mul (f64.convert_i32_u (local.get $py)) (f64.const 2))
                                         (f64.convert_i32_u (local.get $w))) (f64.const 1)))
        (local.set $x (f64.const 0)) (local.set $y (f64.const 0)) (local.set $it (i32.const 0))
        (block $esc (loop $iter
          (br_if $esc (f64.gt (f64.add (f64.mul (local.get $x) (local.get $x))
                                       (f64.mul (local.get $y) (local.get $y))) (f64.const 4)))
          (br_if $esc (i32.ge_u (local.get $it) (i32.const 200)))
          (local.set $t (f64.add (f64.sub (f64.mul (local.get $x) (local.get $x))
                                          (f64.mul (local.get $y) (local.get $y))) (local.get $cx)))
          (local.set $y (f64.add (f64.mul (f64.mul (f64.const 2) (local.get $x)) (local.get $y)) (local.get $cy)))
          (local.set $x (local.get $t))
          (local.set $it (i32.add (local.get $it) (i32.const 1)))
          (br $iter)))
        (local.set $total (i32.add (local.get $total) (local.get $it)))
        (local.set $px (i32.add (local.get $px) (i32.const 1)))
        (br $lx)))
      (local.set $py (i32.add (local.get $py) (i32.const 1)))
      (br $ly)))
    (local.get $total))
)
"""

RUNS = [("fib", 27), ("sieve", 2_000_000), ("crc32", 1_000_000), ("matmul", 120), ("mandel", 200)]


def best_of(fn, n=5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernels-only", action="store_true",
                    help="only the compute kernels, not the Sightglass suite")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per Sightglass figure (median; default 3)")
    args = ap.parse_args(argv)
    status = kernels()
    if not args.kernels_only:
        # the suite wasmtime itself is tuned on, each program checked against its expected output
        print()
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import sightglass
        status |= sightglass.main(["--compare", "--repeat", str(args.repeat)])
    return status


def kernels() -> int:
    """The compute kernels above, results cross-checked; prints their table."""
    module = pylucet.load(pylucet.compile(KERNELS))
    region = pylucet.MmapRegion(1)
    inst = region.new_instance(module)
    try:
        import wasmtime
    except ImportError:
        wasmtime = None
        print("(wasmtime not installed: pip install wasmtime for the Cranelift column)")
    if wasmtime:
        store = wasmtime.Store(wasmtime.Engine())
        wt = wasmtime.Instance(store, wasmtime.Module(store.engine, KERNELS), []).exports(store)
    print(f"{'kernel':<18}{'pylucet ms':>12}{'cranelift ms':>14}{'ratio':>8}")
    ratios = []
    for name, arg in RUNS:
        ours, r1 = best_of(lambda: inst.run(name, arg))
        if wasmtime:
            theirs, r2 = best_of(lambda: wt[name](store, arg))
            assert r1 == r2, f"{name}: pylucet {r1} != wasmtime {r2}"
            ratios.append(ours / theirs)
            print(f"{name}({arg}){'':<{max(0, 16 - len(name) - len(str(arg)))}}{ours:>12.2f}{theirs:>14.2f}"
                  f"{ours / theirs:>8.2f}")
        else:
            print(f"{name}({arg}){'':<{max(0, 16 - len(name) - len(str(arg)))}}{ours:>12.2f}")
    if ratios:
        print(f"geometric mean ratio: {statistics.geometric_mean(ratios):.2f}")
    inst.close()
    region.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

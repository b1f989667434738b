"""What the compiled interrupt checks cost: the compute kernels of bench_code.py and a tight
call-free loop, compiled with and without checks, run side by side in one process. Each figure
is the median of several runs; the overhead is (with checks / without) - 1."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylucet  # noqa: E402
from pylucet.compiler.driver import compile_module  # noqa: E402
from tools.bench_code import KERNELS, RUNS  # noqa: E402

TIGHT = """(module (func (export "tight") (param $n i32) (result i32) (local $i i32) (local $s i32)
  (loop $l
    (local.set $s (i32.add (local.get $s) (i32.xor (local.get $i) (i32.const 0x55))))
    (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
  (local.get $s)))"""


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (default 7)")
    args = ap.parse_args(argv)
    workloads = [(KERNELS, RUNS), (TIGHT, [("tight", 50_000_000)])]
    print(f"{'kernel':<22}{'checks ms':>11}{'no checks ms':>14}{'overhead':>10}")
    ratios = []
    with pylucet.MmapRegion(2) as region:
        for source, runs in workloads:
            on = region.new_instance(pylucet.load(compile_module(source).to_elf()))
            off = region.new_instance(pylucet.load(
                compile_module(source, interrupt_checks=False).to_elf()))
            for name, arg in runs:
                assert on.run(name, arg) == off.run(name, arg)
                # interleave the two, so that machine noise hits both alike
                a, b = [], []
                for _ in range(args.repeat):
                    a.append(median_ms(lambda: on.run(name, arg), 1))
                    b.append(median_ms(lambda: off.run(name, arg), 1))
                t_on, t_off = statistics.median(a), statistics.median(b)
                ratios.append(t_on / t_off)
                label = f"{name}({arg})"
                print(f"{label:<22}{t_on:>11.2f}{t_off:>14.2f}{(t_on / t_off - 1) * 100:>9.1f}%")
            on.close()
            off.close()
    print(f"geometric mean overhead: {(statistics.geometric_mean(ratios) - 1) * 100:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

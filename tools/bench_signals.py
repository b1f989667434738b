"""What keeping our fault handler in front costs per guest run: signals.check_installed()
(one ctypes call into asm/sigcheck.s, one rt_sigaction query of SIGSEGV), beside the stub
asked about all four fault signals, the same queries through the glibc sigaction binding,
and a bare ctypes call of the smallest stub, in one run; medians of --repeat timings of --number
calls each, in ns per call."""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pylucet.runtime import libc, signals  # noqa: E402
from pylucet.runtime.stubs import STUBS  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--number", type=int, default=100_000, help="calls per timing")
    ap.add_argument("--repeat", type=int, default=7, help="timings (median)")
    args = ap.parse_args(argv)
    signals.install()
    assert signals.check_installed()

    def glibc_query() -> bool:
        return all(libc.sigaction(s, None).handler == STUBS.signal_handler
                   for s in signals.FAULT_SIGNALS)

    cases = {
        "signals.check_installed()": signals.check_installed,
        "check stub, all four fault signals": lambda: STUBS.check_handlers(signals.FAULT_MASK),
        "glibc sigaction() x4 via ctypes": glibc_query,
        "STUBS.xgetbv(0) (a bare stub call)": lambda: STUBS.xgetbv(0),
    }
    base = None
    for label, fn in cases.items():
        ns = statistics.median(timeit.repeat(fn, number=args.number, repeat=args.repeat))
        ns = ns / args.number * 1e9
        base = base or ns
        print(f"{label:<40}{ns:9.0f} ns  {ns / base:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

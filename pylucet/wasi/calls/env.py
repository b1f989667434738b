"""The process's world as a guest sees it: arguments, environment, clocks, randomness, exit and
signals (``args_*``, ``environ_*``, ``clock_*``, ``random_get``, ``proc_*``, ``sched_yield``)."""

from __future__ import annotations

import os
import time
from typing import List

from ...errors import Terminate
from ..errno import Errno
from ..memory import M32, check, put
from ..types import U32, U64, Clock
from . import Calls, wasi


def _ns(t: float) -> int:
    return int(t * 1_000_000_000)


CLOCKS = {Clock.REALTIME: time.CLOCK_REALTIME, Clock.MONOTONIC: time.CLOCK_MONOTONIC,
          Clock.PROCESS_CPUTIME_ID: time.CLOCK_PROCESS_CPUTIME_ID,
          Clock.THREAD_CPUTIME_ID: time.CLOCK_THREAD_CPUTIME_ID}
_IGNORED_SIGNALS = {0, 16, 17, 22, 27}        # none, chld, cont, urg, winch



class WasiExit:
    """What ``proc_exit`` terminates the instance with: ``run`` returns ``code``."""

    def __init__(self, code: int):
        self.code = code

    def __repr__(self) -> str:
        return f"WasiExit({self.code})"


class EnvCalls(Calls):
    """Args, environ, clocks, random, proc and sched."""

    def _strings(self, mem: memoryview, items: List[bytes], ptrs: int, buf: int) -> None:
        total = sum(len(s) + 1 for s in items)
        buf = check(mem, buf, total)
        ptrs = check(mem, ptrs, 4 * len(items))
        for k, s in enumerate(items):
            U32.pack_into(mem, ptrs + 4 * k, buf)
            mem[buf:buf + len(s)] = s
            mem[buf + len(s)] = 0
            buf += len(s) + 1

    @wasi("(i32, i32) -> i32")
    def args_get(self, mem: memoryview, argv: int, buf: int) -> int:
        self._strings(mem, self.argv, argv, buf)
        return 0

    @wasi("(i32, i32) -> i32")
    def args_sizes_get(self, mem: memoryview, argc: int, size: int) -> int:
        put(mem, U32, argc, len(self.argv))
        put(mem, U32, size, sum(len(a) + 1 for a in self.argv))
        return 0

    @wasi("(i32, i32) -> i32")
    def environ_get(self, mem: memoryview, environ: int, buf: int) -> int:
        self._strings(mem, self.env, environ, buf)
        return 0

    @wasi("(i32, i32) -> i32")
    def environ_sizes_get(self, mem: memoryview, count: int, size: int) -> int:
        put(mem, U32, count, len(self.env))
        put(mem, U32, size, sum(len(e) + 1 for e in self.env))
        return 0

    @wasi("(i32, i32) -> i32")
    def clock_res_get(self, mem: memoryview, clock: int, out: int) -> int:
        if clock not in CLOCKS:
            return Errno.INVAL
        put(mem, U64, out, max(1, _ns(time.clock_getres(CLOCKS[clock]))))
        return 0

    @wasi("(i32, i64, i32) -> i32")
    def clock_time_get(self, mem: memoryview, clock: int, precision: int, out: int) -> int:
        if clock not in CLOCKS:
            return Errno.INVAL
        put(mem, U64, out, time.clock_gettime_ns(CLOCKS[clock]))
        return 0

    @wasi("(i32, i32) -> i32")
    def random_get(self, mem: memoryview, buf: int, n: int) -> int:
        n &= M32
        buf = check(mem, buf, n)
        mem[buf:buf + n] = os.urandom(n)
        return 0


    @wasi("(i32) -> ()")
    def proc_exit(self, mem: memoryview, code: int) -> None:
        raise Terminate(WasiExit(code & M32))

    @wasi("(i32) -> i32")
    def proc_raise(self, mem: memoryview, sig: int) -> int:
        # Raising a signal in the host on the guest's behalf would let it kill the host: do
        # what the signal's default action would do to a process of its own. WASI's signal
        # numbers are Linux's (hup=1 ... sys=30); chld, cont, urg and winch are ignored by
        # default, and a stop (which cannot stop a guest alone) ends it like the rest.
        if not 0 <= sig <= 30:
            return Errno.INVAL
        if sig in _IGNORED_SIGNALS:
            return 0
        raise Terminate(WasiExit(128 + sig))

    @wasi("() -> i32")
    def sched_yield(self, mem: memoryview) -> int:
        os.sched_yield()
        return 0

"""Ctrl-C while a guest runs: SIGINT stops a guest spinning in compiled code through its interrupt
checks (pylucet_sigint_handler sets the flag, then Python's own handler runs), the run raises
KeyboardInterrupt, and the instance is usable again after reset(). Each case runs in a child
process, since it signals the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_PRELUDE = """
import os, signal, threading, time
import pylucet
m = pylucet.load(pylucet.compile('''(module
  (import "env" "nap" (func $nap))
  (func (export "spin") (loop $l (br $l)))
  (func (export "napping") (call $nap) (loop $l (br $l)))
  (func (export "one") (result i32) (i32.const 1)))'''))
linker = pylucet.Linker()
linker.define_func("env", "nap", lambda: time.sleep(5), "() -> ()")
def ctrl_c(after):
    threading.Timer(after, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
"""


def _child(body: str) -> subprocess.CompletedProcess:
    code = _PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("export", ["spin", "napping"])
def test_ctrl_c_stops_the_guest_and_reset_recovers(export):
    r = _child(f"""
        with pylucet.MmapRegion(1) as region, region.new_instance(m, linker=linker) as inst:
            ctrl_c(0.3)
            started = time.monotonic()
            try:
                inst.run({export!r})
            except KeyboardInterrupt:
                print("interrupted", round(time.monotonic() - started) < 3, inst.state.name)
            inst.reset()
            print("after reset", inst.run("one"))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["interrupted True TERMINATED", "after reset 1"]


def test_a_host_sigint_handler_still_runs_and_the_guest_can_carry_on():
    """If the host handles SIGINT itself without raising, the guest is not killed: the flag
    is cleared and the call goes on (here until its kill switch ends it)."""
    r = _child("""
        seen = []
        signal.signal(signal.SIGINT, lambda *a: seen.append(1))
        with pylucet.MmapRegion(1) as region, region.new_instance(m, linker=linker) as inst:
            ctrl_c(0.2)
            try:
                inst.run("spin", timeout=1.0)
            except pylucet.Terminated as e:
                print("handler ran", seen == [1], "then", e.reason.split(":")[0])
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "handler ran True then timeout"


def test_a_handled_ctrl_c_lets_the_call_finish_exactly():
    """With the host handling SIGINT, the interrupted call resumes at its poll and runs to its
    end with every local as it was: the poll page opens again although the SIGINT handler, not
    the host, revoked it (before, every later poll left for the host again), and the leaf
    function's locals, in the caller-saved registers of codegen.context.CALLER_SAVED_LOCAL_REGS (all
    four here) and FLOAT_LOCAL_REGS (which the SIGINT handler's own guest writes), are kept by
    pylucet_interrupt."""
    r = _child("""
        from pylucet.compiler.codegen.context import CALLER_SAVED_LOCAL_REGS
        assert len(CALLER_SAVED_LOCAL_REGS) == 4
        counter = pylucet.load(pylucet.compile('''(module
          (func (export "count") (param $n i32) (result i32)
                (local $a i32) (local $b i32) (local $c i32) (local $x f64)
            (loop $l
              (local.set $a (i32.add (local.get $a) (i32.const 1)))
              (local.set $b (i32.add (local.get $b) (i32.const 2)))
              (local.set $c (i32.add (local.get $c) (i32.const 3)))
              (local.set $x (f64.add (local.get $x) (f64.const 1)))
              (br_if $l (i32.ne (local.get $a) (local.get $n))))
            (i32.add (i32.add (local.get $b) (local.get $c)) (i32.trunc_f64_u (local.get $x)))))'''))
        # the handler runs a guest of its own whose float locals take every FLOAT_LOCAL_REGS
        clobber = pylucet.load(pylucet.compile('''(module (func (export "clobber") (result f64)
          (local f64) (local f64) (local f64) (local f64) (local f64) (local f64) (local f64)
          (local.set 0 (f64.const -1e300)) (local.set 1 (local.get 0)) (local.set 2 (local.get 1))
          (local.set 3 (local.get 2)) (local.set 4 (local.get 3)) (local.set 5 (local.get 4))
          (local.set 6 (local.get 5))
          (f64.add (local.get 6) (f64.add (local.get 5) (f64.add (local.get 4) (f64.add
            (local.get 3) (f64.add (local.get 2) (f64.add (local.get 1) (local.get 0)))))))))'''))
        other = pylucet.MmapRegion(1)
        clobberer = other.new_instance(clobber)
        seen = []
        signal.signal(signal.SIGINT, lambda *a: seen.append(clobberer.run("clobber")))
        n, x = 1 << 30, -1e300
        with pylucet.MmapRegion(1) as region, region.new_instance(counter) as inst:
            ctrl_c(0.1)
            got = inst.run("count", n, timeout=30)
            print("handler ran", seen == [x + (x + (x + (x + (x + (x + x)))))], "result", got & 0xFFFF_FFFF == 6 * n % (1 << 32))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "handler ran True result True"

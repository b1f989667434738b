"""Guest traps survive handlers installed after ours: faulthandler.enable(), signal.signal() and a
native sigaction. Each case runs in a fresh interpreter, where faulthandler starts off (pytest
enables it here) and where a host crash may end the process on purpose."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pylucet.runtime import libc, signals
from pylucet.runtime.stubs import STUBS

from .conftest import ROOT

PRELUDE = '''
import ctypes, faulthandler, os, signal, sys
import pylucet
from pylucet.runtime import libc, signals
from pylucet.runtime.stubs import STUBS
assert not faulthandler.is_enabled()
module = pylucet.load(pylucet.compile("""(module (memory 1)
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "oob") (result i32) (i32.load (i32.const 70000)))
  (func (export "spin") (loop (br 0))))"""))
region = pylucet.MmapRegion(1)
inst = region.new_instance(module)

def traps():
    """Both kinds of guest fault, SIGFPE and SIGSEGV, come back as traps."""
    for name, args, code in (("div", (1, 0), "IntegerDivByZero"), ("oob", (), "HeapOutOfBounds")):
        try:
            inst.run(name, *args)
        except pylucet.Trap as trap:
            assert trap.code.name == code, trap
        else:
            raise AssertionError(f"{name} did not trap")
    assert inst.run("div", 7, 2) == 3

def ours(signo):
    return libc.sigaction(signo, None).handler == STUBS.signal_handler

traps()   # the first run installs our handler
print("installed", flush=True)
'''


def run_case(body: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONFAULTHANDLER", None)
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "installed" in result.stdout
    return result.stdout


HOST_CRASH = "print('crashing', flush=True); ctypes.string_at(0)"


def test_faulthandler_enabled_after_install_still_reports_host_crashes_once():
    r = run_case(f"""
        faulthandler.enable()
        assert all(map(ours, signals.FAULT_SIGNALS))
        assert signals.previous_handler(signal.SIGSEGV) > libc.SIG_IGN   # faulthandler's
        traps()
        traps()
        {HOST_CRASH}
        """)
    assert "crashing" in r.stdout, r.stderr
    assert r.returncode == -signal.SIGSEGV
    # exactly one report: faulthandler must not find ours behind it and loop back to us
    assert r.stderr.count("Fatal Python error: Segmentation fault") == 1, r.stderr
    assert "string_at" in r.stderr   # the traceback of the crashing line


def test_faulthandler_disabled_after_install_gives_the_default_action_back():
    r = run_case(f"""
        faulthandler.enable()
        faulthandler.disable()
        assert all(map(ours, signals.FAULT_SIGNALS))
        assert signals.previous_handler(signal.SIGSEGV) == libc.SIG_DFL
        traps()
        {HOST_CRASH}
        """)
    assert "crashing" in r.stdout, r.stderr
    assert r.returncode == -signal.SIGSEGV
    assert "Fatal Python error" not in r.stderr


def test_faulthandler_enabled_twice_and_through_pytest_style_order():
    r = run_case("""
        faulthandler.enable()
        first = signals.previous_handler(signal.SIGSEGV)
        faulthandler.enable()          # already enabled: nothing moves
        assert signals.previous_handler(signal.SIGSEGV) == first
        faulthandler.disable(); faulthandler.enable()
        traps()
        assert signals.check_installed()
        print("done")
        """)
    assert "done" in ok(r)


def test_signal_signal_after_install():
    r = run_case(f"""
        seen = []
        old = signal.signal(signal.SIGSEGV, lambda s, f: seen.append(s))
        assert old == signal.SIG_DFL            # Python's own view is untouched
        assert signal.getsignal(signal.SIGSEGV) is not signal.SIG_DFL
        assert all(map(ours, signals.FAULT_SIGNALS))
        traps()
        signal.signal(signal.SIGFPE, signal.SIG_DFL)
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        assert all(map(ours, signals.FAULT_SIGNALS))
        traps()
        assert seen == []                       # guest traps never reached the Python handler
        {HOST_CRASH}
        """)
    assert "crashing" in r.stdout, r.stderr
    assert r.returncode == -signal.SIGSEGV


def test_a_native_handler_is_found_by_check_installed():
    r = run_case("""
        assert signals.check_installed()
        dfl = libc.Sigaction()                  # what a C extension could do behind our back
        libc.sigaction(signal.SIGSEGV, dfl)
        libc.sigaction(signal.SIGILL, dfl)
        assert not ours(signal.SIGSEGV)
        assert signals.check_installed() is False
        assert all(map(ours, signals.FAULT_SIGNALS))
        assert signals.check_installed() is True
        traps()
        print("done")
        """)
    assert "done" in ok(r)


def test_sigint_stays_in_front_of_python_handlers():
    r = run_case("""
        def sigint_ours():
            return libc.sigaction(signal.SIGINT, None).handler == STUBS.sigint_handler
        assert sigint_ours()
        got = []
        signal.signal(signal.SIGINT, lambda s, f: got.append(s))
        assert sigint_ours()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            if got:
                break
        assert got == [signal.SIGINT]           # chained to Python, which ran the new handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert libc.sigaction(signal.SIGINT, None).handler == libc.SIG_IGN   # the host's choice
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert sigint_ours()
        faulthandler.register(signal.SIGINT, chain=True)
        assert sigint_ours()
        faulthandler.unregister(signal.SIGINT)
        assert sigint_ours()
        print("done")
        """)
    assert "done" in ok(r)


def test_check_installed_is_true_when_nothing_changed():
    signals.install()
    assert signals.check_installed() is True
    assert all(libc.sigaction(s, None).handler == STUBS.signal_handler
               for s in signals.FAULT_SIGNALS)


def test_the_python_apis_are_wrapped_once():
    import faulthandler
    signals.install()
    signals.install()
    for fn in (signal.signal, faulthandler.enable, faulthandler.disable):
        assert fn._pylucet_guarded
        assert not getattr(fn.__wrapped__, "_pylucet_guarded", False)


@pytest.mark.parametrize("mask", [0, 1 << signal.SIGSEGV])
def test_the_check_stub_reports_what_it_found(mask):
    signals.install()
    assert STUBS.check_handlers(mask) == 0
    assert STUBS.check_handlers(mask | 1 << signal.SIGTERM) == signal.SIGTERM

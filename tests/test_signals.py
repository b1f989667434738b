"""The fault signal handler: guest faults come back as status 1, host faults are not ours.

Guests are keystone-assembled fake functions and instances are hand-made
(:class:`tests.test_stubs.FakeInstance`), so these tests need neither the compiler nor the region.
Whatever must crash the process runs in a subprocess.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pylucet.errors import LimitsExceeded
from pylucet.module.abi import WASM_PAGE_SIZE
from pylucet.runtime import libc, signals
from pylucet.runtime.stubs import ENTER_FAULTED, ENTER_RETURNED, MAX_CODE_RANGES, STUBS

from .test_stubs import FakeInstance, Guest, inst  # noqa: F401  (inst is a fixture)

ROOT = Path(__file__).resolve().parent.parent

# si_code values (asm-generic/siginfo.h)
ILL_ILLOPN = 2
SEGV_MAPERR = 1
SEGV_ACCERR = 2
FPE_INTDIV = 1
BUS_ADRERR = 2

_FAULTY = """
.globl ok
ok:                                      # the guest that works: returns 7
    mov eax, 7
    ret
.globl trap_ud2
trap_ud2:                                # wasm `unreachable`
    nop
.globl at_ud2
at_ud2:
    ud2
.globl load
load:                                    # an i32.load at offset rdi (u32) of the heap
    mov edi, edi
.globl at_load
at_load:
    mov eax, dword ptr [r14 + rdi]
    ret
.globl divide
divide:                                  # i32.div_s rdi / rsi
    mov eax, edi
    cdq
.globl at_idiv
at_idiv:
    idiv esi
    ret
.globl read_at
read_at:                                 # read 8 bytes at the absolute address rdi
.globl at_read
at_read:
    mov rax, qword ptr [rdi]
    ret
.globl recurse
recurse:                                 # unbounded recursion: runs into the stack guard page
    sub rsp, 120
    call recurse
    add rsp, 120
    ret
"""


@pytest.fixture(scope="module")
def faulty():
    signals.install()
    guest = Guest(_FAULTY)
    yield guest
    guest.close()


def _assert_usable(inst: FakeInstance, faulty: Guest) -> None:
    assert inst.call(faulty["ok"]) == ENTER_RETURNED
    assert inst["ret_rax"] == 7


def _assert_guest_rsp(inst: FakeInstance) -> None:
    assert inst.stack <= inst.fault["rsp"] <= inst.stack_base + inst.STACK_SIZE


def test_handler_is_installed_in_front_of_the_previous_one():
    signals.install()
    signals.install()                     # idempotent: the saved handlers stay the first ones
    for signo in signals.FAULT_SIGNALS:
        act = libc.sigaction(signo, None)
        assert act.handler == STUBS.signal_handler
        assert act.flags & signals.HANDLER_FLAGS == signals.HANDLER_FLAGS
        assert signals.previous_handler(signo) != STUBS.signal_handler
    stack = signals.altstack()
    assert stack is not None and stack.size >= signals.MIN_ALTSTACK_SIZE


def test_ud2_is_sigill(inst, faulty):
    assert inst.call(faulty["trap_ud2"]) == ENTER_FAULTED
    f = inst.fault
    assert (f["signo"], f["code"], f["rip"]) == (signal.SIGILL, ILL_ILLOPN, faulty["at_ud2"])
    _assert_guest_rsp(inst)
    _assert_usable(inst, faulty)


def test_heap_out_of_bounds_is_sigsegv(inst, faulty):
    assert inst.call(faulty["load"], [WASM_PAGE_SIZE - 4]) == ENTER_RETURNED
    assert inst.call(faulty["load"], [WASM_PAGE_SIZE + 8]) == ENTER_FAULTED
    f = inst.fault
    assert (f["signo"], f["code"]) == (signal.SIGSEGV, SEGV_ACCERR)
    assert (f["addr"], f["rip"]) == (inst.vmctx + WASM_PAGE_SIZE + 8, faulty["at_load"])
    _assert_guest_rsp(inst)
    _assert_usable(inst, faulty)


def test_division_by_zero_is_sigfpe(inst, faulty):
    assert inst.call(faulty["divide"], [-12, 4]) == ENTER_RETURNED
    assert ctypes.c_int32(inst["ret_rax"]).value == -3
    assert inst.call(faulty["divide"], [1, 0]) == ENTER_FAULTED
    f = inst.fault
    assert (f["signo"], f["code"], f["rip"]) == (signal.SIGFPE, FPE_INTDIV, faulty["at_idiv"])
    _assert_usable(inst, faulty)


def test_truncated_file_mapping_is_sigbus(inst, faulty):
    fd = libc.memfd_create("pylucet-test")
    try:
        libc.ftruncate(fd, 0)
        addr = libc.mmap(0, 4096, libc.PROT_READ, libc.MAP_SHARED, fd, 0)
        try:
            assert inst.call(faulty["read_at"], [addr]) == ENTER_FAULTED
            f = inst.fault
            assert (f["signo"], f["code"], f["addr"]) == (signal.SIGBUS, BUS_ADRERR, addr)
            assert f["rip"] == faulty["at_read"]
        finally:
            libc.munmap(addr, 4096)
    finally:
        libc.close(fd)
    _assert_usable(inst, faulty)


def test_stack_overflow_is_caught_on_the_signal_stack(inst, faulty):
    assert inst.call(faulty["recurse"]) == ENTER_FAULTED
    f = inst.fault
    assert f["signo"] == signal.SIGSEGV
    assert inst.stack <= f["addr"] < inst.stack_base          # the guard page
    _assert_usable(inst, faulty)


def test_faults_on_other_threads(faulty):
    """Each thread needs its own signal stack; with one, threads fault independently."""
    errors = []

    def worker() -> None:
        try:
            signals.ensure_altstack()
            inst = FakeInstance()
            try:
                for i in range(300):
                    assert inst.call(faulty["divide"], [i, 0]) == ENTER_FAULTED
                    assert inst.fault["signo"] == signal.SIGFPE
                    assert inst.call(faulty["recurse"]) == ENTER_FAULTED
                    _assert_usable(inst, faulty)
            finally:
                inst.close()
        except BaseException as e:  # reported below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_fault_round_trip_is_fast(inst, faulty):
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        inst.call(faulty["trap_ud2"])
    per_fault = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        inst.call(faulty["ok"])
    per_call = (time.perf_counter() - start) / n
    print(f"\nfault round trip {per_fault * 1e6:.2f} us, plain enter {per_call * 1e6:.2f} us")
    assert per_fault < 200e-6


# --- the code range table -----------------------------------------------------------------------------

def test_code_ranges_are_reused_and_checked():
    a = signals.register_code(0x1000, 0x2000)
    b = signals.register_code(0x3000, 0x4000)
    signals.unregister_code(a)
    assert signals.register_code(0x5000, 0x6000) == a
    for handle in (a, b):
        signals.unregister_code(handle)
    with pytest.raises(ValueError):
        signals.unregister_code(a)
    with pytest.raises(ValueError):
        signals.register_code(0x2000, 0x2000)
    handles = []
    with pytest.raises(LimitsExceeded, match="code ranges"):
        for i in range(MAX_CODE_RANGES + 1):
            handles.append(signals.register_code(0x1000 + i, 0x1001 + i))
    for handle in handles:
        signals.unregister_code(handle)


# --- what is not ours goes to the handler that was there before ------------------------------------

_CHILD_PRELUDE = """
import ctypes, faulthandler, signal, sys
from pylucet.runtime import libc, signals
from tests.test_stubs import FakeInstance, Guest
from tests.test_signals import _FAULTY
"""


def _run_child(body: str) -> subprocess.CompletedProcess:
    code = _CHILD_PRELUDE + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONFAULTHANDLER", None)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_host_segfault_reaches_faulthandler():
    r = _run_child("""
        faulthandler.enable()
        signals.install()
        print("installed", flush=True)
        ctypes.string_at(0)
    """)
    assert "installed" in r.stdout
    assert "Fatal Python error: Segmentation fault" in r.stderr
    assert r.returncode == -signal.SIGSEGV


def test_host_segfault_without_previous_handler_kills_as_default():
    r = _run_child("""
        signals.install()
        assert signals.previous_handler(signal.SIGSEGV) == 0
        print("installed", flush=True)
        ctypes.string_at(0)
    """)
    assert "installed" in r.stdout
    assert "Fatal Python error" not in r.stderr
    assert r.returncode == -signal.SIGSEGV


def test_ignored_fault_signal_still_kills():
    r = _run_child("""
        signal.signal(signal.SIGFPE, signal.SIG_IGN)
        signals.install()
        inst, guest = FakeInstance(), Guest(_FAULTY, register=False)
        print("installed", flush=True)
        inst.call(guest["divide"], [1, 0])
    """)
    assert "installed" in r.stdout
    assert r.returncode == -signal.SIGFPE


def test_guest_fault_does_not_reach_faulthandler(tmp_path):
    log = tmp_path / "faulthandler.log"
    r = _run_child(f"""
        log = open({str(log)!r}, "w")
        faulthandler.enable(file=log)
        signals.install()
        inst, guest = FakeInstance(), Guest(_FAULTY)
        print(inst.call(guest["trap_ud2"]), inst.call(guest["load"], [1 << 20]),
              inst.call(guest["divide"], [1, 0]), inst.call(guest["ok"]))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1", "1", "0"]
    assert log.read_text() == ""


@pytest.mark.parametrize("case", ["unregistered", "r14_unmapped", "r14_prot_none", "r14_no_magic"])
def test_untrusted_faults_are_chained(case):
    """A fault counts as the guest's only in registered code with r14 leading to a live
    instance page; anything else, even a corrupt r14, is the host's and must not be swallowed."""
    r = _run_child(f"""
        faulthandler.enable()
        signals.install()
        case = {case!r}
        inst = FakeInstance()
        guest = Guest(_FAULTY, register=case != "unregistered")
        # a guest that points r14 at rdi + INSTANCE_PAGE_SIZE, then traps
        bad_r14 = Guest(".globl f\\nf:\\n    lea r14, [rdi + INSTANCE_PAGE_SIZE]\\n    ud2\\n")
        none = libc.mmap(0, 8192, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS)
        if case == "r14_no_magic":
            inst["magic"] = 0
        print("ready", flush=True)
        if case == "r14_unmapped":
            inst.call(bad_r14["f"], [0])
        elif case == "r14_prot_none":
            inst.call(bad_r14["f"], [none])
        else:
            inst.call(guest["trap_ud2"])
        print("survived", flush=True)
    """)
    assert "ready" in r.stdout and "survived" not in r.stdout
    assert "Fatal Python error: Illegal instruction" in r.stderr
    assert r.returncode == -signal.SIGILL

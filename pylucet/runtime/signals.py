"""Owning the fault signals: installing the handler in ``asm/trap.s`` and feeding it its tables.

A guest's traps arrive as SIGSEGV (heap out of bounds, stack overflow), SIGFPE (division by
zero) and SIGILL (``ud2`` for unreachable and explicit checks), and occasionally SIGBUS. The
handler must decide, with no Python running, whether a fault is a guest's (then it becomes a
return from ``enter``) or the host's (then the handler that was there before us gets it). It
decides from two tables in the stubs' data page, kept here:

* the previous handler of each signal, saved once by :func:`install`;
* the registered guest code ranges, kept by :func:`register_code` / :func:`unregister_code`
  (the loader registers each module's text; the libcall stubs are registered at import).

Threads: signal dispositions are per process, so :func:`install` runs once per process and is
never undone (Lucet's reference count bought nothing but races). The alternate signal stack,
which the handler needs when a guest overflows its stack, is per *thread*: :func:`install`
gives the calling thread one, and every other thread that runs guests must call
:func:`ensure_altstack` first (cheap after the first time; the instance layer calls it per run).

Install the handler *after* enabling Python's ``faulthandler``: faulthandler, when enabled later,
puts itself in front of us and would report guest traps as fatal errors.
"""

from __future__ import annotations

import ctypes
import threading
from typing import List, Optional

from . import libc
from .stubs import DATA_PREV_HANDLER, DATA_RANGE_COUNT, DATA_RANGES, MAX_CODE_RANGES, STUBS

FAULT_SIGNALS = (libc.SIGSEGV, libc.SIGBUS, libc.SIGFPE, libc.SIGILL)

HANDLER_FLAGS = libc.SA_SIGINFO | libc.SA_ONSTACK
"""No SA_NODEFER: our handler never faults, and a guest fault ends in sigreturn, which unblocks
the signal again. Keeping it blocked means a bug in the handler kills the process at once instead
of recursing. (A previous handler we chain to that longjmps out is on its own, as it would be
if it had been the only handler.)"""

ALTSTACK_SIZE = 64 * 1024
"""Size of the alternate signal stacks we create: the kernel's frame with AVX-512 state takes
several KiB, and a chained handler (faulthandler dumping tracebacks) needs room too."""
MIN_ALTSTACK_SIZE = 16 * 1024
"""A thread's existing alternate stack at least this big is kept (faulthandler's is 16 KiB)."""

_W = 8  # bytes per data-page word
_lock = threading.Lock()
_installed = False
_used: List[bool] = [False] * MAX_CODE_RANGES
_thread = threading.local()


def install() -> None:
    """Take over the fault signals (once per process) and give this thread a signal stack."""
    global _installed
    if not _installed:
        with _lock:
            if not _installed:
                for signo in FAULT_SIGNALS:
                    _take_over(signo)
                _installed = True
    ensure_altstack()


def installed() -> bool:
    return _installed


def _take_over(signo: int) -> None:
    # Record the current handler before ours goes in, so the first fault after the switch can
    # already be chained. (Another thread changing it in between would go unnoticed.)
    current = libc.sigaction(signo, None)
    if current.handler == STUBS.signal_handler:
        return
    _set_previous(signo, current.handler or libc.SIG_DFL, current.flags)
    act = libc.Sigaction()
    act.handler = STUBS.signal_handler
    act.flags = HANDLER_FLAGS
    libc.sigaction(signo, act)


def _set_previous(signo: int, handler: int, flags: int) -> None:
    entry = (DATA_PREV_HANDLER // _W) + 2 * signo
    STUBS.data[entry] = handler
    STUBS.data[entry + 1] = flags & 0xFFFFFFFF


def previous_handler(signo: int) -> int:
    """The handler a non-guest ``signo`` is chained to (SIG_DFL = 0, SIG_IGN = 1, or an address)."""
    return STUBS.data[(DATA_PREV_HANDLER // _W) + 2 * signo]


# --- code ranges --------------------------------------------------------------------------------------

def register_code(start: int, end: int) -> int:
    """Declare ``[start, end)`` guest code: faults there (with a live instance in r14) are traps.
    Returns a handle for :func:`unregister_code`."""
    if not 0 < start < end:
        raise ValueError(f"bad code range [{start:#x}, {end:#x})")
    data = STUBS.data
    with _lock:
        try:
            index = _used.index(False)
        except ValueError:
            raise RuntimeError(f"more than {MAX_CODE_RANGES} code ranges registered") from None
        _used[index] = True
        word = DATA_RANGES // _W + 2 * index
        # The handler may read the table at any moment: an entry counts once its end is set,
        # so write the start first.
        data[word] = start
        data[word + 1] = end
        count = DATA_RANGE_COUNT // _W
        data[count] = max(data[count], index + 1)
    return index


def unregister_code(handle: int) -> None:
    """Forget a range from :func:`register_code`; faults there go to the previous handler again."""
    data = STUBS.data
    with _lock:
        if not (0 <= handle < MAX_CODE_RANGES and _used[handle]):
            raise ValueError(f"unknown code range handle {handle!r}")
        word = DATA_RANGES // _W + 2 * handle
        data[word + 1] = 0       # end first: the entry stops matching at once
        data[word] = 0
        _used[handle] = False
        count = DATA_RANGE_COUNT // _W
        while data[count] and not _used[data[count] - 1]:
            data[count] -= 1


_LIBCALLS = register_code(*STUBS.libcall_range)
"""Libcalls run on the guest's behalf with the guest's r14: a fault there is the guest's."""


# --- alternate signal stacks --------------------------------------------------------------------------

class _AltStack:
    """A signal stack this module mapped for a thread, released with the thread's locals.

    CPython clears a thread's ``threading.local`` data on that thread as it exits, so the
    release happens on the owner: it switches the stack off first, so that no signal can land
    on freed memory. Released from any other thread (interpreter shutdown), the stack is
    left mapped: its thread may still be running.
    """

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.size = ALTSTACK_SIZE + libc.getpagesize()
        # one PROT_NONE page below, so a handler that overflows it faults instead of scribbling
        self.base = libc.mmap(0, self.size, libc.PROT_NONE,
                              libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
        self.sp = self.base + libc.getpagesize()
        libc.mprotect(self.sp, ALTSTACK_SIZE, libc.PROT_READ | libc.PROT_WRITE)

    def __del__(self) -> None:
        if threading.get_ident() != self.owner:
            return
        current = libc.sigaltstack(None)
        if current.sp == self.sp:
            if current.flags & libc.SS_ONSTACK:
                return
            off = libc.StackT()
            off.flags = libc.SS_DISABLE
            libc.sigaltstack(off)
        libc.munmap(self.base, self.size)


def ensure_altstack() -> None:
    """Make sure the calling thread has an alternate signal stack big enough for the handler."""
    if getattr(_thread, "ready", False):
        return
    current = libc.sigaltstack(None)
    if current.flags & libc.SS_DISABLE or current.size < MIN_ALTSTACK_SIZE:
        if current.flags & libc.SS_ONSTACK:
            raise RuntimeError("cannot replace the signal stack from inside a signal handler")
        stack = _AltStack()
        new = libc.StackT()
        new.sp = stack.sp
        new.size = ALTSTACK_SIZE
        new.flags = 0
        libc.sigaltstack(new)
        _thread.stack = stack
    _thread.ready = True


def altstack() -> Optional[libc.StackT]:
    """The calling thread's alternate signal stack, or None (for tests and diagnostics)."""
    current = libc.sigaltstack(None)
    return None if current.flags & libc.SS_DISABLE else current


# --- Ctrl-C -------------------------------------------------------------------------------------------

def install_sigint() -> bool:
    """Put ``pylucet_sigint_handler`` (asm/trap.s) in front of Python's SIGINT handler, so that
    Ctrl-C stops a guest spinning in compiled code (through its interrupt checks) instead of
    waiting for it to return. Only when the current handler is a real one (Python's, usually):
    SIG_IGN and SIG_DFL stay as the host chose. Returns whether ours is installed."""
    with _lock:
        current = libc.sigaction(libc.SIGINT, None)
        if current.handler == STUBS.sigint_handler:
            return True
        if (current.handler or libc.SIG_DFL) <= libc.SIG_IGN:
            return False
        _set_previous(libc.SIGINT, current.handler, current.flags)
        act = libc.Sigaction()
        act.handler = STUBS.sigint_handler
        act.flags = HANDLER_FLAGS | libc.SA_RESTART
        libc.sigaction(libc.SIGINT, act)
        return True

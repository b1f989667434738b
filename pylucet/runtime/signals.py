"""Owning the fault signals: installing the handler in ``asm/trap.s`` and feeding it its tables.

A guest's traps arrive as SIGSEGV (heap out of bounds, stack overflow), SIGFPE (division by
zero) and SIGILL (``ud2`` for unreachable and explicit checks), and occasionally SIGBUS. The
handler must decide, with no Python running, whether a fault is a guest's (then it becomes a
return from ``enter``) or the host's (then the handler that was there before us gets it). It
decides from two tables in the stubs' data page, kept here:

* the previous handler of each signal, saved by :func:`install` (and again whenever someone
  installs a handler in front of ours, see below);
* the registered guest code ranges, kept by :func:`register_code` / :func:`unregister_code`
  (the loader registers each module's text; the libcall stubs are registered at import).

Threads: signal dispositions are per process, so :func:`install` runs once per process and is
never undone (Lucet's reference count bought nothing but races). The alternate signal stack,
which the handler needs when a guest overflows its stack, is per *thread*: :func:`install`
gives the calling thread one, and every other thread that runs guests must call
:func:`ensure_altstack` first (cheap after the first time; the instance layer calls it per run).

Staying in front. A handler installed after ours gets guest traps first, and they become fatal
(faulthandler reports a "Fatal Python error" and kills the process). So ours goes back in front,
chaining to the newcomer, which then still sees every fault that is not a guest's:

* Python-level changes are caught as they happen, at no cost per run: :func:`install` wraps
  ``signal.signal`` and ``faulthandler.enable/disable/register/unregister``, and each wrapped call
  re-installs ours afterwards. faulthandler chains to the handler it found when enabled (it
  restores it and re-raises), so it must never find ours, or a host crash would go round
  ours -> faulthandler -> ours forever: for the faulthandler calls we first step aside (put back
  what we chain to) and take over again after. (A guest trap on another thread in those few
  microseconds reaches that handler instead of us.) Code that bound the originals before
  :func:`install` (``from signal import signal``) is not covered; :func:`check_installed` is.
* Native changes (a C extension calling ``sigaction``) are found by :func:`check_installed`,
  which the instance layer calls before each guest run: one call into asm/sigcheck.s, which asks
  the kernel for the SIGSEGV handler (a change to SIGSEGV puts all four back in front). A
  native newcomer that chains back to the handler it replaced (ours) would loop on a host crash
  as described; nothing can tell that from outside.
"""

from __future__ import annotations

import faulthandler
import functools
import signal
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import LimitsExceeded, StateError
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

FAULT_MASK = sum(1 << signo for signo in FAULT_SIGNALS)
CHECK_MASK = 1 << libc.SIGSEGV
"""What :func:`check_installed` asks the kernel about: SIGSEGV alone. Each query is a system call
(about 0.3 us here); whoever takes over fault signals (faulthandler, crash reporters) takes
SIGSEGV with the others, and most guest traps are SIGSEGVs."""

_W = 8  # bytes per data-page word
_lock = threading.Lock()            # the code-range table
_dispositions = threading.RLock()   # what is installed for each signal, and _previous
_installed = False
_used: List[bool] = [False] * MAX_CODE_RANGES
_thread = threading.local()

_OURS: Dict[int, Tuple[int, int, bool]] = {
    signo: (STUBS.signal_handler, HANDLER_FLAGS, False) for signo in FAULT_SIGNALS}
"""Per signal: our handler, its flags, and whether it goes only in front of a real handler."""
_OURS[libc.SIGINT] = (STUBS.sigint_handler, HANDLER_FLAGS | libc.SA_RESTART, True)
_owned: Dict[int, bool] = {}
"""The signals we keep in front: each maps to whether ours is installed for it right now."""
_previous: Dict[int, libc.Sigaction] = {}
"""The whole action ours replaced, per signal, for stepping aside."""


def install() -> None:
    """Take over the fault signals (once per process) and give this thread a signal stack."""
    global _installed
    if not _installed:
        with _dispositions:
            if not _installed:
                for signo in FAULT_SIGNALS:
                    _take_over(signo)
                _guard_python_apis()
                _installed = True
    ensure_altstack()


def installed() -> bool:
    return _installed


def check_installed() -> bool:
    """Make sure our fault handler is the one installed, before a guest runs.

    True when it was (the cost is one ctypes call, measured by ``tools/bench_signals.py``);
    otherwise something native replaced it: ours goes back in front, chaining to the newcomer,
    and the result is False. Installs the handler if :func:`install` never ran."""
    status = STUBS.check_handlers(CHECK_MASK) if _installed else -1
    if status == 0:
        return True
    if status < -1:
        raise OSError(-status, f"rt_sigaction query failed: errno {-status}")
    if not _installed:
        install()
    else:
        _retake()
    return False


def _take_over(signo: int) -> bool:
    """Put our handler for ``signo`` in front of whatever is installed now (unless it is ours
    already, or the signal is one we take only over a real handler and there is none); returns
    whether ours is installed. Call with ``_dispositions`` held."""
    handler, flags, only_over_a_handler = _OURS[signo]
    current = libc.sigaction(signo, None)
    _owned[signo] = True
    if current.handler == handler:
        return True
    if only_over_a_handler and (current.handler or libc.SIG_DFL) <= libc.SIG_IGN:
        _owned[signo] = False
        return False
    # Record the current handler before ours goes in, so the first fault after the switch can
    # already be chained. (Another thread changing it in between would go unnoticed.)
    _previous[signo] = current
    _set_previous(signo, current.handler or libc.SIG_DFL, current.flags)
    act = libc.Sigaction()
    act.handler = handler
    act.flags = flags
    libc.sigaction(signo, act)
    return True


def _retake() -> None:
    with _dispositions:
        for signo in _owned:
            _take_over(signo)


def _step_aside() -> None:
    """Put back, for each signal where ours is installed, the action ours replaced."""
    for signo, ours in _owned.items():
        if ours and signo in _previous:
            current = libc.sigaction(signo, None)
            if current.handler == _OURS[signo][0]:
                libc.sigaction(signo, _previous[signo])


def _guarded(fn: Callable[..., Any], step_aside: bool) -> Callable[..., Any]:
    """``fn`` (a function that may install signal handlers), followed by putting ours back in
    front of whatever it installed; with ``step_aside``, ours is out of the way while it runs."""
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with _dispositions:
            if step_aside:
                _step_aside()
            try:
                return fn(*args, **kwargs)
            finally:
                _retake()
                if step_aside:   # faulthandler.enable may have given this thread its own stack
                    _thread.ready = False
                    ensure_altstack()
    guarded._pylucet_guarded = True  # type: ignore[attr-defined]
    return guarded


def _guard_python_apis() -> None:
    if not getattr(signal.signal, "_pylucet_guarded", False):
        signal.signal = _guarded(signal.signal, step_aside=False)
    for name in ("enable", "disable", "register", "unregister"):
        fn = getattr(faulthandler, name)
        if not getattr(fn, "_pylucet_guarded", False):
            setattr(faulthandler, name, _guarded(fn, step_aside=True))


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
            raise LimitsExceeded(f"more than {MAX_CODE_RANGES} code ranges registered: each "
                                 "loaded module holds one until it is dropped") from None
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
            raise StateError("cannot run a guest from inside a signal handler on this thread's "
                             "alternate stack: its stack is too small to replace")
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
    SIG_IGN and SIG_DFL stay as the host chose. Returns whether ours is installed. From then on
    ``signal.signal(SIGINT, ...)`` keeps ours in front of the new Python handler, as for the
    fault signals."""
    with _dispositions:
        _guard_python_apis()
        return _take_over(libc.SIGINT)

"""The one place where pylucet talks to libc: prototypes, constants and errno checks.

Everything native the runtime does (reserving address space, flipping page protections, taking
over fault signals) goes through the handful of functions here, so each prototype is declared
once and every failure becomes an ``OSError`` that names the call, instead of a silent ``-1``.

The second half holds the Linux x86-64 kernel ABI numbers the assembly stubs need (syscall
numbers, ``ucontext_t`` and ``siginfo_t`` offsets); :func:`asm_equates` hands them to the
assembler, exactly as :func:`pylucet.module.abi.asm_equates` does for pylucet's own layout.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Optional

_libc = ctypes.CDLL(None, use_errno=True)

# --- constants ------------------------------------------------------------------------------------

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_FIXED_NOREPLACE = 0x100000

MADV_NORMAL = 0
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9

MFD_CLOEXEC = 0x1

SIGINT = 2
SIGILL = 4
SIGBUS = 7
SIGFPE = 8
SIGSEGV = 11

SIG_DFL = 0
SIG_IGN = 1

SA_SIGINFO = 0x00000004
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000

SS_ONSTACK = 1
SS_DISABLE = 2

MAP_FAILED = ctypes.c_void_p(-1).value

# --- structures -------------------------------------------------------------------------------------


class Sigaction(ctypes.Structure):
    """glibc's ``struct sigaction`` (152 bytes). ``handler`` is the union of ``sa_handler`` and
    ``sa_sigaction``: which one the kernel calls depends on ``SA_SIGINFO`` in ``flags``."""

    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", ctypes.c_uint64 * 16),     # sigset_t: 1024 bits
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),      # glibc fills in its own; leave it NULL
    ]


class StackT(ctypes.Structure):
    """``stack_t``, the description of a signal stack given to ``sigaltstack``."""

    _fields_ = [
        ("sp", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("size", ctypes.c_size_t),
    ]


assert ctypes.sizeof(Sigaction) == 152 and Sigaction.flags.offset == 136
assert ctypes.sizeof(StackT) == 24

# --- prototypes -------------------------------------------------------------------------------------


def _proto(name: str, restype, *argtypes):
    fn = getattr(_libc, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_mmap = _proto("mmap", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
               ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _proto("munmap", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
_mprotect = _proto("mprotect", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_madvise = _proto("madvise", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_sigaction = _proto("sigaction", ctypes.c_int, ctypes.c_int, ctypes.POINTER(Sigaction),
                    ctypes.POINTER(Sigaction))
_sigaltstack = _proto("sigaltstack", ctypes.c_int, ctypes.POINTER(StackT), ctypes.POINTER(StackT))
_memfd_create = _proto("memfd_create", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_ftruncate = _proto("ftruncate", ctypes.c_int, ctypes.c_int, ctypes.c_long)
_close = _proto("close", ctypes.c_int, ctypes.c_int)
_getpagesize = _proto("getpagesize", ctypes.c_int)


def function_address(name: str) -> int:
    """The address of libc's ``name``, for compiled code to call directly (the libcall slots
    of ``module.abi.Libcall`` that libc implements). dlsym resolves an IFUNC such as
    ``memmove`` to the variant chosen for this CPU, so the call costs no PLT hop."""
    return ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value


def _fail(call: str, detail: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)} ({detail})")


def mmap(addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """Map memory; returns the address. ``addr`` 0 lets the kernel choose."""
    res = _mmap(addr or None, length, prot, flags, fd, offset)
    if res == MAP_FAILED or res is None:
        raise _fail("mmap", f"addr={addr:#x} length={length:#x} prot={prot:#x} flags={flags:#x}")
    return res


def munmap(addr: int, length: int) -> None:
    if _munmap(addr, length) != 0:
        raise _fail("munmap", f"addr={addr:#x} length={length:#x}")


def mprotect(addr: int, length: int, prot: int) -> None:
    if _mprotect(addr, length, prot) != 0:
        raise _fail("mprotect", f"addr={addr:#x} length={length:#x} prot={prot:#x}")


def madvise(addr: int, length: int, advice: int) -> None:
    if _madvise(addr, length, advice) != 0:
        raise _fail("madvise", f"addr={addr:#x} length={length:#x} advice={advice}")


def sigaction(signo: int, act: Optional[Sigaction]) -> Sigaction:
    """Install ``act`` (or only query, when None) and return the action it replaced."""
    old = Sigaction()
    if _sigaction(signo, ctypes.byref(act) if act is not None else None, ctypes.byref(old)) != 0:
        raise _fail("sigaction", f"signo={signo}")
    return old


def sigaltstack(new: Optional[StackT]) -> StackT:
    """Set the calling thread's signal stack (or only query, when None); returns the old one."""
    old = StackT()
    if _sigaltstack(ctypes.byref(new) if new is not None else None, ctypes.byref(old)) != 0:
        raise _fail("sigaltstack", "")
    return old


def memfd_create(name: str, flags: int = MFD_CLOEXEC) -> int:
    fd = _memfd_create(name.encode(), flags)
    if fd < 0:
        raise _fail("memfd_create", f"name={name!r}")
    return fd


def ftruncate(fd: int, length: int) -> None:
    if _ftruncate(fd, length) != 0:
        raise _fail("ftruncate", f"fd={fd} length={length:#x}")


def close(fd: int) -> None:
    if _close(fd) != 0:
        raise _fail("close", f"fd={fd}")


def getpagesize() -> int:
    return _getpagesize()


# openat2(2) (Linux 5.6+), which glibc does not wrap: WASI resolves a guest's paths with it
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08


class OpenHow(ctypes.Structure):
    """``struct open_how`` of ``openat2``."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_syscall = _libc.syscall          # variadic: no argtypes, each argument passed typed
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """A new descriptor, as ``os.open`` would give, or an ``OSError`` carrying the errno
    (``ENOSYS`` where the kernel lacks the call) and the path."""
    how = OpenHow(flags, mode, resolve)
    raw = os.fsencode(path)
    fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(raw),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


# --- kernel ABI for the assembly stubs --------------------------------------------------------------
# Linux x86-64; the layouts are in /usr/include/x86_64-linux-gnu/sys/ucontext.h and bits/siginfo.

SYS_MPROTECT = 10
SYS_RT_SIGACTION = 13
SYS_GETPID = 39
SYS_PROCESS_VM_READV = 310

KERNEL_SIGACTION_SIZE = 32   # the kernel's struct: handler, flags, restorer, 8-byte mask
KERNEL_SIGSET_SIZE = 8

SIGINFO_SIGNO = 0
SIGINFO_CODE = 8             # int si_code
SIGINFO_ADDR = 16            # void *si_addr, for SIGSEGV/SIGBUS/SIGFPE/SIGILL

UC_GREGS = 40                # uc_mcontext.gregs[], 8 bytes each
_GREGS = ("R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RDI", "RSI", "RBP", "RBX",
          "RDX", "RAX", "RCX", "RSP", "RIP", "EFL")
UC_REG = {name: UC_GREGS + 8 * i for i, name in enumerate(_GREGS)}
"""Offset in ``ucontext_t`` of each saved general register, by glibc's ``REG_*`` name."""


NEG_EFAULT = -errno.EFAULT
"""What a raw system call returns for EFAULT. Spelled as its own constant because keystone
0.9.2 assembles ``-SYMBOL`` as a memory operand (``[rip + SYMBOL]``), not as a negative number."""


def asm_equates() -> str:
    """``.equ`` lines for the kernel ABI numbers above (``UC_RIP``, ``SYS_MPROTECT``, ...)."""
    values = {f"UC_{name}": off for name, off in UC_REG.items()}
    for name in ("SYS_MPROTECT", "SYS_RT_SIGACTION", "SYS_GETPID", "SYS_PROCESS_VM_READV",
                 "KERNEL_SIGACTION_SIZE", "KERNEL_SIGSET_SIZE", "SIGINFO_SIGNO", "SIGINFO_CODE",
                 "SIGINFO_ADDR", "PROT_NONE", "PROT_READ", "PROT_WRITE", "SIG_DFL", "SIG_IGN",
                 "SA_SIGINFO"):
        values[name] = globals()[name]
    values["NEG_EFAULT"] = NEG_EFAULT
    return "".join(f".equ {n}, {v}\n" for n, v in values.items())

"""The native stubs: ``asm/*.s`` assembled by keystone into executable pages, once per process.

pylucet has no C build step, so the few things Python cannot do itself (switch stacks, catch a
fault and come back, grow memory from inside guest code, run ``cpuid``) are written in assembly
and assembled at import. Everything lands in one private mapping::

    +----------------------------- CODE_RESERVE (read+execute) ----+--- DATA_SIZE (read+write) --+
    | context.s | libcalls.s | cpuid.s | trap.s | sigcheck.s       | previous handlers, code     |
    +--------------------------------------------------------------+  ranges (see DATA_*)        |
                                                                   +-----------------------------+

Each source is assembled at its final address, in one keystone call per file, with ``.equ``
lines prepended for pylucet's ABI (:func:`pylucet.module.abi.asm_equates`), the kernel ABI
(:func:`pylucet.runtime.libc.asm_equates`), the data page's layout and the addresses exported by
the files before it. A source exports a label by declaring it ``.globl``; :func:`_assemble`
appends a ``.quad`` per export and reads the addresses back from the end of the output.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import importlib.util
import re
from pathlib import Path
from typing import Dict, Mapping, Tuple

from ..errors import StubError
from ..module.abi import ExitReason, Libcall, asm_equates
from . import libc

SOURCES = ("context.s", "libcalls.s", "cpuid.s", "trap.s", "sigcheck.s")
"""In assembly order: a file may use the exports of the files before it."""

CODE_RESERVE = 16 * 1024
ALIGN = 64                    # each file starts on a cache line

# --- the data page: read by the signal handler, written by pylucet.runtime.signals ----------------
DATA_SIZE = 8 * 1024
DATA_SIGNALS = 64              # signal numbers the previous-handler table covers (a power of two)
DATA_PREV_HANDLER_SHIFT = 4    # log2 of an entry's size: {handler address, sa_flags}
DATA_PREV_HANDLER = 0          # DATA_SIGNALS entries, indexed by signal number
DATA_RANGE_COUNT = DATA_SIGNALS << DATA_PREV_HANDLER_SHIFT
"""Entries of DATA_RANGES in use (free ones in between have end = 0)."""
DATA_RANGES = DATA_RANGE_COUNT + 8
MAX_CODE_RANGES = (DATA_SIZE - DATA_RANGES) // 16
"""Room for this many registered guest code ranges ({start, end} pairs, end exclusive)."""

GUEST_MXCSR = 0x1F80
"""MXCSR a guest starts with: round to nearest, all exceptions masked, no flush-to-zero or
denormals-are-zero. WebAssembly float semantics need exactly this, whatever the host (a numpy
extension, say) has set; the host's own MXCSR comes back when the guest returns or faults."""

ENTER_RETURNED = ExitReason.RETURNED
ENTER_FAULTED = ExitReason.FAULTED
ENTER_BAD_ENTRY = ExitReason.BAD_ENTRY

_LIBCALL_SYMBOLS = {Libcall.MEMORY_GROW: "pylucet_memory_grow", Libcall.BUILTIN: "pylucet_hostcall"}
LIBC_LIBCALLS = {Libcall.MEMMOVE: "memmove", Libcall.MEMSET: "memset"}
"""Libcalls that are libc's functions: glibc's are tuned per CPU (vector moves, ``rep movsb``
only where it is fast), which the bulk memory instructions could not match inline; they use a
few words of the guest's stack at most, well inside the reservation below its limit."""

_GLOBL = re.compile(r"^[ \t]*\.globl[ \t]+(\w+)", re.MULTILINE)


def asm_source(name: str) -> str:
    """The text of ``asm/<name>``: from the installed package when there is one (setup.cfg
    installs ``asm/`` as ``pylucet._asm``), else from the source checkout this file sits in."""
    if importlib.util.find_spec("pylucet._asm") is not None:
        return importlib.resources.files("pylucet._asm").joinpath(name).read_text()
    return (Path(__file__).resolve().parents[2] / "asm" / name).read_text()


def _assemble(ks, source: str, address: int, prelude: str) -> Tuple[bytes, Dict[str, int]]:
    """Assemble ``source`` at ``address``; returns its machine code and its exports' addresses."""
    from keystone import KsError

    exports = _GLOBL.findall(source)
    # keystone turns a .globl symbol into an external relocation and its .quad into 0, so the
    # declarations are blanked out once they have been read.
    body = _GLOBL.sub("", source)
    text = prelude + body + "\n" + "".join(f".quad {name}\n" for name in exports)
    try:
        encoding, _ = ks.asm(text, address)
    except KsError as e:
        raise ValueError(f"keystone: {e}{_first_bad_line(body, prelude)}") from None
    blob = bytes(encoding)
    code_len = len(blob) - 8 * len(exports)
    addresses = {name: int.from_bytes(blob[code_len + 8 * i:code_len + 8 * i + 8], "little")
                 for i, name in enumerate(exports)}
    return blob[:code_len], addresses


def _first_bad_line(body: str, prelude: str) -> str:
    """keystone names no line when it fails: find it by assembling line by line, with every
    label resolving to 0 so that forward references do not count as errors."""
    from keystone import KS_ARCH_X86, KS_MODE_64, Ks, KsError

    ks = Ks(KS_ARCH_X86, KS_MODE_64)

    def resolve(symbol, value):
        value[0] = 0
        return True

    ks.sym_resolver = resolve
    for number, line in enumerate(body.splitlines(), 1):
        statement = line.split("#", 1)[0].strip()
        if statement and not statement.endswith(":"):
            try:
                ks.asm(prelude + statement, 0)
            except KsError:
                return f" at line {number}: {line.strip()}"
    return ""


class Stubs:
    """The assembled stubs of this process (use the :data:`STUBS` singleton).

    Attributes are absolute addresses; ``enter`` and ``cpuid`` are ready ctypes callables.
    """

    def __init__(self) -> None:
        from keystone import KS_ARCH_X86, KS_MODE_64, Ks

        self._ks = Ks(KS_ARCH_X86, KS_MODE_64)
        self.base = libc.mmap(0, CODE_RESERVE + DATA_SIZE, libc.PROT_READ | libc.PROT_WRITE,
                              libc.MAP_PRIVATE | libc.MAP_ANONYMOUS)
        self.data_page = self.base + CODE_RESERVE
        self.data = (ctypes.c_uint64 * (DATA_SIZE // 8)).from_address(self.data_page)
        """The data page as u64 words, for pylucet.runtime.signals."""
        self.prelude = (asm_equates() + libc.asm_equates()
                        + f".equ DATA_PAGE, {self.data_page}\n"
                        + f".equ DATA_PREV_HANDLER, {DATA_PREV_HANDLER}\n"
                        + f".equ DATA_SIGNALS, {DATA_SIGNALS}\n"
                        + f".equ DATA_PREV_HANDLER_SHIFT, {DATA_PREV_HANDLER_SHIFT}\n"
                        + f".equ DATA_RANGE_COUNT, {DATA_RANGE_COUNT}\n"
                        + f".equ DATA_RANGES, {DATA_RANGES}\n"
                        + f".equ GUEST_MXCSR, {GUEST_MXCSR}\n")
        """The ``.equ`` lines every source gets, before the exports of earlier files."""
        self.symbols: Dict[str, int] = {}
        self.ranges: Dict[str, Tuple[int, int]] = {}
        """Each source file's code, as (start, end) addresses."""
        self.code: Dict[str, bytes] = {}
        """Each source file's machine code, as assembled (for the capstone check in the tests)."""
        offset = 0
        try:
            for name in SOURCES:
                address = self.base + offset
                try:
                    code, exports = self.assemble(asm_source(name), address)
                except ValueError as e:
                    raise StubError(f"asm/{name}: {e}") from None
                if offset + len(code) > CODE_RESERVE:
                    raise StubError(f"asm/{name} does not fit: raise CODE_RESERVE")
                ctypes.memmove(address, code, len(code))
                self.code[name] = code
                self.ranges[name] = (address, address + len(code))
                self.symbols.update(exports)
                offset = -(-(offset + len(code)) // ALIGN) * ALIGN
            libc.mprotect(self.base, CODE_RESERVE, libc.PROT_READ | libc.PROT_EXEC)
        except BaseException:
            libc.munmap(self.base, CODE_RESERVE + DATA_SIZE)
            raise

        self.enter_address = self.symbols["pylucet_enter"]
        self.fault_return = self.symbols["pylucet_fault_return"]
        self.signal_handler = self.symbols["pylucet_signal_handler"]
        self.sigint_handler = self.symbols["pylucet_sigint_handler"]
        self.libcalls: Mapping[Libcall, int] = {
            **{call: self.symbols[sym] for call, sym in _LIBCALL_SYMBOLS.items()},
            **{call: libc.function_address(sym) for call, sym in LIBC_LIBCALLS.items()}}
        self.libcall_range = self.ranges["libcalls.s"]

        self.hostcall = self.symbols["pylucet_hostcall"]
        """Where a host import's entry points: it leaves with ExitReason.HOSTCALL."""
        self.call_guest = self.symbols["pylucet_call_guest"]
        """Where an import of another instance's function points: a native call into it."""
        self.memory_grow_shared = self.symbols["pylucet_memory_grow_shared"]
        """The MEMORY_GROW libcall of an instance whose memory is shared: the host grows it."""
        self.enter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)(self.enter_address)
        """``enter(instance_page) -> ExitReason``: run INST_ENTRY_FUNC as the page says."""
        self.resume = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)(
            self.symbols["pylucet_resume"])
        """``resume(instance_page) -> ExitReason``: continue a guest that left mid-call, with
        INST_RET_RAX / INST_RET_XMM0 as the result of the call it made."""
        self._cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                                       ctypes.POINTER(ctypes.c_uint32 * 4))(
            self.symbols["pylucet_cpuid"])
        self.check_handlers = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)(
            self.symbols["pylucet_check_handlers"])
        """``check_handlers(signal mask) -> 0 | signo | -errno`` (asm/sigcheck.s)."""
        self.xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(
            self.symbols["pylucet_xgetbv"])
        """``xgetbv(xcr) -> u64``; only when cpuid reports OSXSAVE."""

    def assemble(self, source: str, address: int) -> Tuple[bytes, Dict[str, int]]:
        """Assemble ``source`` to run at ``address``, with the ABI equates and the addresses of
        the stubs assembled so far; returns the code and the addresses of its ``.globl`` labels
        (ValueError if keystone rejects it). Tests use it to build fake guests that call the
        libcalls or ``pylucet_enter``. Not thread-safe: one keystone engine serves all calls."""
        known = "".join(f".equ {s}, {a}\n" for s, a in self.symbols.items())
        return _assemble(self._ks, source, address, self.prelude + known)

    def libcall_address(self, call: Libcall) -> int:
        return self.libcalls[call]

    def cpuid(self, leaf: int, subleaf: int = 0) -> Tuple[int, int, int, int]:
        """(eax, ebx, ecx, edx) of ``cpuid`` for ``leaf``/``subleaf``."""
        out = (ctypes.c_uint32 * 4)()
        self._cpuid(leaf, subleaf, ctypes.byref(out))
        return tuple(out)  # type: ignore[return-value]


STUBS = Stubs()

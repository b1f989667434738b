"""The one exception hierarchy of pylucet.

Everything pylucet raises on purpose derives from :class:`Error`, so a host can wrap all of
guest-related failure in one ``except pylucet.Error``. Misuse of the Python API itself (a wrong
argument type, a closed instance) raises the built-in exception a Python user expects instead
(``TypeError``, ``ValueError``), as wasmtime-py does.

Errors carry data, not just a message: a trap knows its code and where it happened, a malformed
module knows the byte offset, so tools and tests can look at fields instead of parsing strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .module.traps import TrapCode


class Error(Exception):
    """Root of every error pylucet raises on purpose."""


# --- compile time --------------------------------------------------------------------------------

class CompileError(Error):
    """The module could not be turned into native code."""


class MalformedModule(CompileError):
    """The bytes (or text) are not a well-formed module.

    ``offset`` is the byte offset in the binary (or the character offset in WAT text) where
    decoding failed; ``reason`` is the spec-style message (e.g. "unexpected end").
    """

    def __init__(self, reason: str, offset: Optional[int] = None):
        self.reason = reason
        self.offset = offset
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"malformed module{where}: {reason}")


class InvalidModule(CompileError):
    """The module is well-formed but fails validation (type checking)."""

    def __init__(self, reason: str, func: Optional[str] = None, offset: Optional[int] = None):
        self.reason = reason
        self.func = func
        self.offset = offset
        where = ""
        if func is not None:
            where += f" in function {func}"
        if offset is not None:
            where += f" at offset {offset:#x}"
        super().__init__(f"invalid module{where}: {reason}")


class Unsupported(CompileError):
    """Valid WebAssembly that this version of the compiler does not translate yet."""


class UnsupportedProposal(Unsupported):
    """An instruction of a WebAssembly proposal beyond 2.0 that pylucet does not know yet (SIMD,
    tail calls, threads...), as opposed to a malformed opcode.

    ``instruction`` is its mnemonic (or, for a prefix family not listed one by one, the prefix
    and sub-opcode), ``proposal`` the proposal's name, ``offset`` where it was found (a byte
    offset in the binary, a character offset in WAT text), if known.
    """

    def __init__(self, instruction: str, proposal: str, offset: Optional[int] = None):
        self.instruction = instruction
        self.proposal = proposal
        self.offset = offset
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{instruction}{where}: the {proposal} proposal is not supported yet")


# --- load and link -------------------------------------------------------------------------------

class LoadError(Error):
    """A compiled artifact could not be loaded (not ours, wrong version, CPU lacks a feature)."""


class StubError(LoadError):
    """The runtime's own native stubs (``asm/``) could not be assembled or mapped: a broken
    install, or a keystone that assembles them differently. Raised by ``import pylucet.runtime``."""


class LinkError(Error):
    """The module's imports could not be satisfied. ``problems`` lists each missing or
    mistyped import, when there are several."""

    def __init__(self, message: str, problems: Optional[List[str]] = None):
        self.problems = list(problems) if problems else [message]
        super().__init__(message)


# --- runtime -------------------------------------------------------------------------------------

class UnknownExport(Error, LookupError):
    """No exported function has that name; ``available`` lists the names there are."""

    def __init__(self, name: str, available: Sequence[str]):
        self.name = name
        self.available = list(available)
        super().__init__(f"no exported function {name!r} (exported functions: "
                         f"{', '.join(self.available) or 'none'})")

    def __str__(self) -> str:  # LookupError would show the message's repr
        return str(self.args[0])


class LimitsExceeded(Error):
    """The module asks for more than the region's :class:`~pylucet.Limits` allow."""


class RegionFull(Error):
    """Every slot of the region is in use."""

    def __init__(self, capacity: int, held_by_views: int = 0):
        self.capacity = capacity
        self.held_by_views = held_by_views
        hint = (f" ({held_by_views} of them held back because a heap view of a closed instance "
                "is still alive: drop those memoryviews to free the slots)"
                if held_by_views else "")
        super().__init__(f"region is full: all {capacity} slots are in use{hint}")


class StateError(Error, RuntimeError):
    """The instance cannot do that in its current state (running, yielded, terminated...), or
    the calling thread cannot (it is inside a signal handler, on its alternate stack)."""


class InstantiationError(Error):
    """Instantiation failed after a slot was taken (e.g. a data segment out of bounds)."""


class Trap(Error):
    """A guest fault turned into a WebAssembly trap.

    The instance that trapped stays usable: its memory and globals keep the state they had at
    the fault, and the next ``run`` starts a fresh call.
    """

    def __init__(self, code: "TrapCode", func: Optional[str] = None,
                 wasm_offset: Optional[int] = None, code_offset: Optional[int] = None,
                 fault_address: Optional[int] = None, message: Optional[str] = None):
        self.code = code
        self.func = func
        self.wasm_offset = wasm_offset
        self.code_offset = code_offset
        self.fault_address = fault_address
        self._unwind: Optional[Callable[[], List[str]]] = None
        text = message or code.message
        where = []
        if func is not None:
            where.append(f"in {func}")
        if wasm_offset is not None:
            where.append(f"at wasm offset {wasm_offset:#x}")
        if code_offset is not None:
            where.append(f"(code offset {code_offset:#x})")
        super().__init__(f"{code.name}: {text}" + (" " + " ".join(where) if where else ""))


    @property
    def backtrace(self) -> List[str]:
        """The wasm functions on the guest's stack at the trap, innermost first (from a scan of
        the stack taken at the fault for return addresses into guest code, so a stale return
        address left in a frame's spill slots may show up as an extra entry)."""
        if self._unwind is not None:
            return self._unwind()
        return [self.func] if self.func is not None else []


class FatalFault(Error):
    """A fault in guest code that no trap table explains: a compiler or runtime bug.

    The instance is poisoned and refuses to run again; the host process carries on.
    """


class Terminated(Error):
    """The instance was terminated: by a hostcall that raised or called ``terminate``, by its
    kill switch, or by a timeout. ``details`` is what the hostcall passed to
    :class:`Terminate` (None otherwise); when a hostcall raised, ``__cause__`` is its exception.
    The instance refuses to run until ``reset()``.
    """

    def __init__(self, reason: str, details: object = None):
        self.reason = reason
        self.details = details
        super().__init__(f"instance terminated: {reason}")


class Terminate(Error):
    """Raised by a host function to end the guest at once; ``run`` then raises
    :class:`Terminated` carrying ``details`` (WASI's ``proc_exit`` passes its exit code so)."""

    def __init__(self, details: object = None):
        self.details = details
        super().__init__(f"terminate({details!r})")


class MemoryAccessError(Error, IndexError):
    """A host function asked for guest memory outside the instance's heap."""

"""Trap codes and trap tables: how a faulting machine instruction maps back to a wasm trap.

The compiler records, for every instruction that may fault on purpose (a heap access that can
land on a guard page, an ``idiv`` that can divide by zero, a ``ud2`` placed after an explicit
check), one :class:`TrapSite`. The runtime's signal handler only records the faulting RIP; the
lookup from RIP to trap code happens afterwards, in Python, with a binary search over these sites.
"""

from __future__ import annotations

import bisect
import enum
from typing import List, NamedTuple, Optional, Sequence


class TrapCode(enum.IntEnum):
    """Why a guest stopped. Numbering follows Lucet's ``TrapCode`` and is part of the artifact ABI."""

    StackOverflow = 0
    HeapOutOfBounds = 1
    HeapMisaligned = 2
    TableOutOfBounds = 3
    IndirectCallToNull = 4
    BadSignature = 5
    IntegerOverflow = 6
    IntegerDivByZero = 7
    BadConversionToInteger = 8
    Interrupt = 9
    Unreachable = 10
    TableAccessOutOfBounds = 11   # table.get/set/fill/copy/init, an element segment (not Lucet's)

    def __str__(self) -> str:
        # IntEnum prints as a bare number from Python 3.11 on; a trap code should read as itself
        return self.name

    @property
    def message(self) -> str:
        """The WebAssembly spec test suite's wording for this trap (used by ``assert_trap``)."""
        return _MESSAGES[self]


_MESSAGES = {
    TrapCode.StackOverflow: "call stack exhausted",
    TrapCode.HeapOutOfBounds: "out of bounds memory access",
    TrapCode.HeapMisaligned: "misaligned memory access",
    TrapCode.TableOutOfBounds: "undefined element",
    TrapCode.IndirectCallToNull: "uninitialized element",
    TrapCode.BadSignature: "indirect call type mismatch",
    TrapCode.IntegerOverflow: "integer overflow",
    TrapCode.IntegerDivByZero: "integer divide by zero",
    TrapCode.BadConversionToInteger: "invalid conversion to integer",
    TrapCode.Interrupt: "interrupted",
    TrapCode.Unreachable: "unreachable",
    TrapCode.TableAccessOutOfBounds: "out of bounds table access",
}


class TrapSite(NamedTuple):
    """One instruction that may fault on purpose.

    ``code_offset`` is relative to the start of its function's machine code; ``wasm_offset`` is
    the byte offset of the wasm instruction in the module binary, so a trap can name the exact
    source instruction.
    """

    code_offset: int
    code: TrapCode
    wasm_offset: int


class TrapTable:
    """The trap sites of one function, sorted by ``code_offset``.

    The compiler makes one from TrapSites; the loader makes a *view* of the module's site arrays
    as they were read (:meth:`view`), so that loading a module with half a million sites builds
    no Python object per site: a site becomes a TrapSite only when a fault looks it up.
    """

    __slots__ = ("_offsets", "_codes", "_wasm", "_lo", "_hi")

    def __init__(self, sites: Sequence[TrapSite] = ()):
        sites = list(sites)
        self._offsets: Sequence[int] = [s.code_offset for s in sites]
        self._codes: Sequence[int] = [int(s.code) for s in sites]
        self._wasm: Sequence[int] = [s.wasm_offset for s in sites]
        self._lo, self._hi = 0, len(sites)

    @classmethod
    def view(cls, offsets: Sequence[int], codes: Sequence[int], wasm_offsets: Sequence[int],
             lo: int, hi: int) -> "TrapTable":
        """Sites ``lo .. hi`` of parallel arrays (checked by the caller: codes valid, offsets
        sorted within the window)."""
        self = cls.__new__(cls)
        self._offsets, self._codes, self._wasm, self._lo, self._hi = (offsets, codes,
                                                                       wasm_offsets, lo, hi)
        return self

    def _site(self, i: int) -> TrapSite:
        return TrapSite(self._offsets[i], _CODES[self._codes[i]], self._wasm[i])

    @property
    def sites(self) -> List[TrapSite]:
        return [self._site(i) for i in range(self._lo, self._hi)]

    def lookup(self, code_offset: int) -> Optional[TrapSite]:
        """The site at exactly ``code_offset`` (the faulting RIP), or None if there is none."""
        i = bisect.bisect_left(self._offsets, code_offset, self._lo, self._hi)
        if i < self._hi and self._offsets[i] == code_offset:
            return self._site(i)
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrapTable) and self.sites == other.sites

    def __repr__(self) -> str:
        return f"TrapTable({self.sites!r})"

    def __len__(self) -> int:
        return self._hi - self._lo


_CODES = tuple(TrapCode)
assert all(int(c) == i for i, c in enumerate(_CODES))

"""Trap codes and trap tables: how a faulting machine instruction maps back to a wasm trap.

The compiler records, for every instruction that may fault on purpose (a heap access that can
land on a guard page, an ``idiv`` that can divide by zero, a ``ud2`` placed after an explicit
check), one :class:`TrapSite`. The runtime's signal handler only records the faulting RIP; the
lookup from RIP to trap code happens afterwards, in Python, with a binary search over these sites.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence


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


@dataclass
class TrapTable:
    """The trap sites of one function, sorted by ``code_offset``."""

    sites: Sequence[TrapSite]

    def __post_init__(self) -> None:
        self._offsets = [s.code_offset for s in self.sites]

    def lookup(self, code_offset: int) -> Optional[TrapSite]:
        """The site at exactly ``code_offset`` (the faulting RIP), or None if there is none."""
        i = bisect.bisect_left(self._offsets, code_offset)
        if i < len(self._offsets) and self._offsets[i] == code_offset:
            return self.sites[i]
        return None

    def __len__(self) -> int:
        return len(self.sites)

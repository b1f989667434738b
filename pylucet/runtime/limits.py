"""How big each part of a region slot is.

A :class:`Limits` fixes the size of every area of a slot once, when the region is created: the
region reserves all slots up front, so nothing here can change afterwards. Only *address space*
is reserved; memory is committed page by page as the guest touches it, which is why the defaults
can be generous (a default slot spans a little over 8 GiB of address space but costs a few
pages of memory).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..module.abi import FUNCREF_SIZE, PAGE_SIZE, TABLE_ENTRY_SIZE, WASM_MAX_PAGES, WASM_PAGE_SIZE

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

WASM32_MAX_MEMORY = WASM_MAX_PAGES * WASM_PAGE_SIZE
"""4 GiB: the largest linear memory a 32-bit address can name."""

MIN_SIGNAL_STACK_SIZE = 64 * KiB
"""Our handler chains to Python's faulthandler and to whatever handler was installed before it;
those run on the same alternate stack and need far more than the kernel's SIGSTKSZ (8 KiB)."""


@dataclass(frozen=True)
class Limits:
    """Sizes of the areas of one region slot, in bytes (see :class:`~pylucet.runtime.MmapRegion`
    for the picture).

    Defaults differ from Lucet's where Python or wasm semantics call for it: the heap may grow to
    the full 4 GiB wasm allows (it only costs address space), the stack is 1 MiB because
    single-pass compiled frames are larger than Cranelift's, and the signal stack has room for
    chained handlers.
    """

    heap_memory_size: int = WASM32_MAX_MEMORY
    """The most linear memory an instance may have (initial size and growth), a multiple of the
    64 KiB wasm page. Compiled code relies on the address space, not on this."""

    heap_address_space_size: int = 8 * GiB
    """Address space reserved for the heap. Compiled code does no bounds checks: a 32-bit
    address plus a 32-bit offset always lands inside it or on the guard page after it, so it must
    cover the module's ``HeapSpec.reserved_size + guard_size``."""

    stack_size: int = 1 * MiB
    """The guest stack, including the hostcall reservation."""

    hostcall_reservation: int = 32 * KiB
    """Bottom of the stack that guest code may not use, kept for hostcalls and the signal path;
    guest prologues trap with StackOverflow before reaching it."""

    globals_size: int = 4 * KiB
    """Room for globals, 8 bytes each."""

    signal_stack_size: int = MIN_SIGNAL_STACK_SIZE
    """The alternate stack signal handlers run on while the guest runs."""

    table_elements: int = 1 << 20
    """Room for table entries per slot, summed over the module's tables (address space only;
    only the pages the initial entries need are committed)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Limits.{f.name} must be a non-negative int, got {value!r}")
        for name in ("heap_address_space_size", "stack_size", "hostcall_reservation",
                     "globals_size", "signal_stack_size"):
            if getattr(self, name) % PAGE_SIZE:
                raise ValueError(f"Limits.{name} ({getattr(self, name)}) must be a multiple of the "
                                 f"{PAGE_SIZE}-byte page size")
        if self.heap_memory_size % WASM_PAGE_SIZE:
            raise ValueError(f"Limits.heap_memory_size ({self.heap_memory_size}) must be a "
                             f"multiple of the {WASM_PAGE_SIZE}-byte wasm page")
        if self.heap_memory_size > WASM32_MAX_MEMORY:
            raise ValueError(f"Limits.heap_memory_size ({self.heap_memory_size}) exceeds the "
                             f"{WASM32_MAX_MEMORY}-byte maximum of a 32-bit wasm memory")
        if self.heap_memory_size > self.heap_address_space_size:
            raise ValueError(f"Limits.heap_memory_size ({self.heap_memory_size}) exceeds "
                             f"heap_address_space_size ({self.heap_address_space_size})")
        if self.hostcall_reservation >= self.stack_size:
            raise ValueError(f"Limits.hostcall_reservation ({self.hostcall_reservation}) must be "
                             f"smaller than stack_size ({self.stack_size}): the guest needs "
                             "some stack of its own")
        if self.signal_stack_size < MIN_SIGNAL_STACK_SIZE:
            raise ValueError(f"Limits.signal_stack_size ({self.signal_stack_size}) must be at "
                             f"least {MIN_SIGNAL_STACK_SIZE}: chained fault handlers run on it")

    @property
    def tables_size(self) -> int:
        """Address space for table entries and as many function records, in whole pages."""
        return page_round(self.table_elements * (TABLE_ENTRY_SIZE + FUNCREF_SIZE))


def page_round(size: int) -> int:
    """``size`` rounded up to a whole number of host pages."""
    return -(-size // PAGE_SIZE) * PAGE_SIZE

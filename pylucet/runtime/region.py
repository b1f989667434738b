"""Regions: address space for a fixed number of instances, reserved once, reused forever.

A region is one anonymous ``PROT_NONE`` mapping cut into equal slots. Instantiating makes the few
pages an instance needs readable and writable; tearing down throws their contents away and makes
them inaccessible again. Nothing is ever mapped or unmapped per instance, so instantiation costs a
handful of ``mprotect`` calls, the process's mappings do not grow with use, and a guest address
that escapes its slot's accessible pages always faults.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, List, Optional, Set, Tuple, Union

from ..errors import LimitsExceeded, RegionFull, StateError
from ..module.abi import (FUNCREF_SIZE, INSTANCE_FIELDS, INSTANCE_PAGE_SIZE, PAGE_SIZE,
                          RUNTIME_DATA_SIZE, TABLE_DESC_SIZE, TABLE_ENTRY_SIZE, WASM_PAGE_SIZE,
                          slot_size)
from ..wasm.types import ExternKind
from ..module.spec import ModuleData
from . import libc
from .alloc import HeapStrategy, SlotMemory
from .instance import Instance, State
from .limits import WASM32_MAX_MEMORY, Limits, page_round
from .linker import NO_IMPORTS, Linker, Resolution, link_without
from .loader import LoadedModule

_RW = libc.PROT_READ | libc.PROT_WRITE

TABLE_PTRS_OFFSET = -(-INSTANCE_FIELDS["_end"] // 64) * 64
"""The table descriptor pointers (``VMCTX_TABLES``) and the descriptors of the tables a module
defines live in the instance page, between the host fields and the runtime data: the page is
writable and wiped anyway, so they cost no extra ``mprotect`` or ``madvise``."""
MAX_TABLES = ((INSTANCE_PAGE_SIZE - RUNTIME_DATA_SIZE - TABLE_PTRS_OFFSET)
              // (8 + TABLE_DESC_SIZE))
TABLE_DESCS_OFFSET = TABLE_PTRS_OFFSET + 8 * MAX_TABLES


@dataclass(frozen=True)
class Slot:
    """Absolute addresses of one slot's areas (see :class:`MmapRegion` for the picture)."""

    index: int
    start: int           # the slot's first page (the stack's guard)
    poll: int            # the poll page, just below the instance page
    base: int            # the instance page
    vmctx: int           # heap base
    heap_space: int      # heap address space from vmctx (heap_address_space_size)
    stack_base: int      # lowest stack address; the guard page is just below
    stack_top: int       # initial rsp (16-byte aligned)
    stack_limit: int     # stack_base + hostcall reservation
    globals: int
    globals_size: int
    sigstack: int
    tables: int
    size: int

    @property
    def table_ptrs(self) -> int:
        return self.base + TABLE_PTRS_OFFSET

    @property
    def table_descs(self) -> int:
        return self.base + TABLE_DESCS_OFFSET

    @property
    def records(self) -> int:
        """The FUNCREF records, at the start of the table area (before the tables)."""
        return self.tables


@dataclass(frozen=True)
class TablePlace:
    """Where one of a module's tables goes in the slot's table area (after the records)."""

    offset: int          # from the start of the table area
    length: int          # initial entries
    capacity: int        # entries table.grow may reach


@dataclass(frozen=True)
class Fit:
    """How a module fits a region's limits; computed once per (module, limits)."""

    initial_heap: int
    memory_max: int
    tables: Tuple[TablePlace, ...]
    tables_committed: int    # bytes of the table area made writable


class MmapRegion:
    """A fixed number of instance slots reserved in one mapping.

    Each slot is laid out as below. Offsets are from the slot's base, with the sizes from the
    region's :class:`Limits`: H = heap_address_space_size, S = stack_size, G = globals_size,
    SS = signal_stack_size, T = table_elements x (TABLE_ENTRY_SIZE + FUNCREF_SIZE) rounded up
    to a page: the FUNCREF records (``abi.FUNCREF``), then the entries of the tables.
    Everything is ``PROT_NONE`` until an instance takes the slot; then only the areas marked RW
    become accessible, the heap up to its current size::

        offset                       area                                    access
        +0                           stack guard page                        never
        +4K                          stack (S), grows down                   RW
                                       stack limit = its base + hostcall_reservation
        +4K+S                        globals (G), abi.slot_size(t) each    RW
        +4K+S+G                      poll page (abi.VMCTX_POLL)              RW; none to interrupt
        +8K+S+G                      instance page                           RW
                                       INST_* fields | table descriptors | runtime data (VMCTX_*)
        +12K+S+G       = vmctx       heap address space (H)                  RW up to memory_size
                                       any i32 address + u32 offset lands in it or on the next page
        +12K+S+G+H                   heap guard page                         never
        +16K+S+G+H                   signal stack (SS)                       reserved, see below
        +16K+S+G+H+SS                records, table entries (T)              RW for initial entries
        +16K+S+G+H+SS+T              guard page                              never
        +20K+S+G+H+SS+T              = slot size: the next slot's stack guard page

    Everything a tenant can write but its tables lies in one run of pages, from the stack to
    the heap, so teardown wipes it with one ``madvise`` (``runtime.alloc``).

    ``heap_strategy`` says how an instance's heap gets its initial contents
    (``runtime.alloc.HeapStrategy``): ``"cow"``, the default, maps the module's image copy-on-write,
    so instantiation costs the same for any initial heap (about 17 us here, at 0 KiB as at 4 MiB,
    where copying takes 3 ms: ``tools/bench.py``); ``"copy"`` is Lucet's way, kept to compare.

    The signal stack area is address space only, for now. Lucet switches ``sigaltstack`` to the
    slot's stack around every run; pylucet's fault handler instead runs on a per-thread
    alternate stack that ``signals.ensure_altstack`` sets up once per thread, which saves two
    system calls per run. The area stays in the layout (behind a guard page, so an overflowing
    handler would fault rather than scribble on the globals) for when per-instance signal
    stacks are needed, e.g. to resume a yielded instance on another thread.
    """

    def __init__(self, capacity: int, limits: Limits = Limits(),
                 heap_strategy: Union[str, HeapStrategy] = HeapStrategy.COW):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"region capacity must be a positive int, got {capacity!r}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a pylucet.Limits, got {type(limits).__name__}")
        try:
            self._strategy = HeapStrategy(heap_strategy)
        except ValueError:
            raise ValueError(f"heap_strategy must be one of "
                             f"{', '.join(repr(h.value) for h in HeapStrategy)}, "
                             f"got {heap_strategy!r}") from None
        self._limits = limits
        self._fit_key = _fit_keys.setdefault(limits, len(_fit_keys))
        """A small int standing for ``limits`` in modules' fit caches: hashing a Limits (a
        frozen dataclass) on every instantiation would cost more than the lookup."""
        self._capacity = capacity
        L = limits
        stack_off = PAGE_SIZE                # after the stack's guard page
        globals_off = stack_off + L.stack_size
        poll_off = globals_off + L.globals_size
        page_off = poll_off + PAGE_SIZE
        heap_off = page_off + INSTANCE_PAGE_SIZE
        sigstack_off = heap_off + L.heap_address_space_size + PAGE_SIZE
        tables_off = sigstack_off + L.signal_stack_size
        self._slot_size = tables_off + L.tables_size + PAGE_SIZE
        self._size = capacity * self._slot_size
        try:
            self._base = libc.mmap(0, self._size, libc.PROT_NONE,
                                   libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
        except OSError as e:
            # the usual cause: capacity x slot size exceeds the 128 TiB of user address space
            raise LimitsExceeded(f"cannot reserve {capacity} slots of {self._slot_size:#x} "
                                 f"bytes of address space each: {e.strerror}") from e
        self._slots = [
            Slot(index=i, start=b, poll=b + poll_off, base=b + page_off, vmctx=b + heap_off,
                 stack_base=b + stack_off,
                 stack_top=b + stack_off + L.stack_size,
                 stack_limit=b + stack_off + L.hostcall_reservation,
                 heap_space=L.heap_address_space_size,
                 globals=b + globals_off, globals_size=L.globals_size,
                 sigstack=b + sigstack_off, tables=b + tables_off, size=self._slot_size)
            for i, b in ((i, self._base + i * self._slot_size) for i in range(capacity))]
        # popped from the end: slot 0 first, and a slot just freed is reused next (warm caches)
        self._free: List[int] = list(range(capacity - 1, -1, -1))
        released = weakref.WeakMethod(self._released)   # (no cycle: instances keep it alive)
        self._memory = [SlotMemory(slot, self._strategy, INSTANCE_PAGE_SIZE // 8, released)
                        for slot in self._slots]
        # slots held back from reuse because a view of their old heap is still alive
        self._quarantined: Set[int] = set()
        self._lock = threading.Lock()
        self._closed = False
        _regions.add(self)

    # --- public API ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def heap_strategy(self) -> HeapStrategy:
        return self._strategy

    @property
    def free_slots(self) -> int:
        self._reclaim()
        return len(self._free)

    @property
    def used_slots(self) -> int:
        return self._capacity - len(self._free)

    @property
    def slot_size(self) -> int:
        """Address space per slot, in bytes."""
        return self._slot_size

    @property
    def closed(self) -> bool:
        return self._closed

    def new_instance(self, module: LoadedModule, linker: Optional[Linker] = None,
                     ctx: Any = None) -> Instance:
        """Instantiate ``module`` in a free slot, its imports taken from ``linker``; host
        functions see ``ctx`` as ``vmctx.ctx``.

        Raises :class:`~pylucet.LinkError` naming every import that is missing or mistyped,
        :class:`~pylucet.RegionFull` when every slot is taken, and
        :class:`~pylucet.LimitsExceeded` when the module asks for more than the limits allow.
        A start function runs before this returns; if it traps, the slot is freed again and the
        :class:`~pylucet.Trap` propagates.
        """
        if not isinstance(module, LoadedModule):
            raise TypeError(f"new_instance needs a LoadedModule (from pylucet.load), "
                            f"got {type(module).__name__}")
        if linker is not None and not isinstance(linker, Linker):
            raise TypeError(f"linker must be a pylucet.Linker, got {type(linker).__name__}")
        self._check_open()
        imports = _resolve(module, linker)
        fit = module._fits.get(self._fit_key)
        if fit is None:
            fit = module._fits[self._fit_key] = self.fit(module.data)
        if self._quarantined:
            self._reclaim()
        with self._lock:
            if not self._free:
                raise RegionFull(self._capacity, len(self._quarantined))
            slot = self._slots[self._free.pop()]
        memory = self._memory[slot.index]
        try:
            memory.commit(module, fit, imports.memory)
            inst = Instance(self, memory, module, fit, imports, ctx)
        except BaseException:
            memory.release()
            raise
        memory.tenant = weakref.ref(inst)
        inst._start()
        return inst

    def fit(self, data: ModuleData) -> Fit:
        """How ``data`` fits these limits, or :class:`~pylucet.LimitsExceeded` saying why not."""
        return _fit(data, self._limits)

    def close(self) -> None:
        """Unmaps the region. Live instances are closed first.

        Refuses (:class:`~pylucet.StateError`) while one of its instances is running. A heap view that outlives
        the region keeps its pages mapped (zeroed) until the process exits, rather than turning
        into a pointer into unmapped memory.
        """
        if self._closed:
            return
        live = self._live()
        for inst in live:
            if inst.state == State.RUNNING:
                raise StateError(f"cannot close {self!r}: {inst!r} is running")
        while live:   # importers before the instances they import from
            free = [i for i in live if not any(j.state != State.CLOSED
                                               for j in (i._importers or ()))]
            if not free:
                raise StateError(f"cannot close {self!r}: its instances are imported by live "
                                 "instances of another region; close those first")
            for inst in free:
                inst.close()
                live.remove(inst)
        self._closed = True
        for memory in self._memory:   # an instance the garbage collector has not finalised yet
            memory.closed = True      # must not touch its slot once it is unmapped
        kept = sorted((m.slot.vmctx, page_round(n))
                      for m in self._memory if (n := m.viewed_extent()))
        start = self._base
        for at, length in kept:
            libc.munmap(start, at - start)
            start = at + length
        libc.munmap(start, self._base + self._size - start)

    def __enter__(self) -> "MmapRegion":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Instances keep their region alive, so by now none is live unless the interpreter is
        # shutting down, when unmapping under a live view would be worse than leaking.
        if not getattr(self, "_closed", True) and not self._live():
            try:
                self.close()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.used_slots}/{self._capacity} slots used"
        return (f"<MmapRegion {state}, {self._slot_size / (1 << 30):.2f} GiB per slot "
                f"at {self._base:#x}>")

    # --- slots coming back --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("region is closed")

    def _live(self) -> List[Instance]:
        """The instances in the region's slots."""
        return [inst for m in self._memory if m.tenant is not None
                and (inst := m.tenant()) is not None and inst.state != State.CLOSED]

    def _released(self, memory: SlotMemory, viewed: int) -> None:
        """SlotMemory.release: the slot is wiped; free it, or hold it back while a view of its
        old heap is alive (see :meth:`_reclaim`)."""
        index = memory.slot.index
        with self._lock:
            if viewed:
                self._quarantined.add(index)
            else:
                self._free.append(index)

    def _reclaim(self) -> None:
        """Return quarantined slots whose views have all been dropped to the free list."""
        for index in list(self._quarantined):
            memory = self._memory[index]
            if not memory.viewed_extent():
                memory.wipe()
                with self._lock:
                    self._quarantined.discard(index)
                    self._free.append(index)


_fit_keys: dict = {}


_regions: "weakref.WeakSet[MmapRegion]" = weakref.WeakSet()


def instance_of_record(address: int) -> Optional[Tuple[Instance, int]]:
    """The live instance whose slot holds the FUNCREF record at ``address``, and the
    function index of that record (``runtime.references``)."""
    for region in list(_regions):
        if region._closed or not region._base <= address < region._base + region._size:
            continue
        memory = region._memory[(address - region._base) // region._slot_size]
        tenant = memory.tenant() if memory.tenant is not None else None
        if tenant is None or tenant._state == State.CLOSED:
            return None
        func = tenant._refs.func_of(address)
        return None if func is None else (tenant, func)
    return None


def _resolve(module: LoadedModule, linker: Optional[Linker]) -> Resolution:
    """What ``module``'s imports are linked to (cached by the linker, see
    :meth:`Linker.resolve_module`)."""
    if not module.data.imports:
        return NO_IMPORTS
    if linker is None:
        link_without(module.data)
    return linker.resolve_module(module)  # type: ignore[union-attr]


def _fit(data: ModuleData, limits: Limits) -> Fit:
    heap = data.heap
    if heap is None:
        initial_heap = memory_max = 0
    else:
        if heap.initial_size > limits.heap_memory_size:
            raise LimitsExceeded(f"module {data.display_name!r} needs an initial heap of "
                                 f"{heap.initial_size} bytes, but heap_memory_size is "
                                 f"{limits.heap_memory_size}")
        if heap.reserved_size + heap.guard_size > limits.heap_address_space_size:
            raise LimitsExceeded(
                f"module {data.display_name!r} was compiled for {heap.reserved_size} bytes of heap plus "
                f"{heap.guard_size} of guard, more than heap_address_space_size "
                f"({limits.heap_address_space_size}): its unchecked accesses could leave the slot")
        if heap.initial_size % WASM_PAGE_SIZE:
            raise LimitsExceeded(f"module {data.display_name!r}: initial heap size {heap.initial_size} "
                                 "is not a whole number of wasm pages")
        initial_heap = heap.initial_size
        # growth stops at the first of: the module's maximum, the limits, the space the code was
        # compiled to address without checks, and what 32 bits can address
        memory_max = min(WASM32_MAX_MEMORY, limits.heap_memory_size, heap.reserved_size,
                         WASM32_MAX_MEMORY if heap.max_size is None else heap.max_size)
        memory_max -= memory_max % WASM_PAGE_SIZE
        memory_max = max(memory_max, initial_heap)

    globals_end = max((g.offset + slot_size(g.valtype) for g in data.globals), default=0)
    if globals_end > limits.globals_size:
        raise LimitsExceeded(f"module {data.display_name!r} needs {globals_end} bytes of globals, but "
                             f"globals_size is {limits.globals_size}")

    ntables = len(data.tables) + sum(1 for i in data.imports if i.kind == ExternKind.TABLE)
    if ntables > MAX_TABLES:
        raise LimitsExceeded(f"module {data.display_name!r} has {ntables} tables; at most "
                             f"{MAX_TABLES} are supported")
    records = data.num_imported_funcs + len(data.funcrefs)
    if records > limits.table_elements:
        raise LimitsExceeded(f"module {data.display_name!r} needs {records} function records, "
                             f"but table_elements is {limits.table_elements}")
    needed = sum(t.initial for t in data.tables)
    if needed > limits.table_elements:
        raise LimitsExceeded(f"module {data.display_name!r} needs {needed} table elements, but "
                             f"table_elements is {limits.table_elements}")
    # every table gets its initial size; room to grow goes first to the tables with a maximum,
    # as far as it asks, then in equal shares to those without (the usual single table gets
    # all of it)
    spare = limits.table_elements - needed
    room: List[int] = []
    for t in data.tables:
        want = 0 if t.max is None else max(0, min(spare, t.max - t.initial))
        spare -= want
        room.append(want)
    unbounded = sum(1 for t in data.tables if t.max is None)
    share = spare // unbounded if unbounded else 0
    places: List[TablePlace] = []
    offset = records * FUNCREF_SIZE
    tables_end = offset
    for t, want in zip(data.tables, room):
        capacity = t.initial + (share if t.max is None else want)
        places.append(TablePlace(offset, t.initial, capacity))
        tables_end = offset + t.initial * TABLE_ENTRY_SIZE
        offset += capacity * TABLE_ENTRY_SIZE
    return Fit(initial_heap, memory_max, tuple(places), page_round(tables_end))


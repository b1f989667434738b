"""Linear memories shared between instances and the host.

Compiled code addresses its memory as ``[r14 + index]``, r14 being the instance's heap base
(``module.abi``), so a memory that several instances use has to appear at each one's own heap
address. A :class:`Memory` therefore lives in a memfd, mapped ``MAP_SHARED`` at the heap of every
instance that uses it -- its *aliases* (``SlotMemory.map_shared``) -- and read by the host through
mappings of its own (:meth:`Memory.view`): a write through any of them is a write to the one file,
and compiled code is the same as for a private heap.

Growing must reach every alias at once: the file grows, each alias maps the new pages, and each
alias's ``VMCTX_MEMORY_SIZE`` says the new size. That happens here, under the memory's lock; so
compiled ``memory.grow`` in an instance with a shared memory leaves for the host to do it
(``asm/libcalls.s``, ``pylucet_memory_grow_shared``) instead of calling ``mprotect`` on its own
heap. A memory grows at most to the smallest limit among its aliases (each instance's module
maximum and region limits) and its own declared maximum.

An instance's own memory becomes shared the first time it is exported as a :class:`Memory`
(``inst.exports["memory"]``, ``Linker.define_instance``): its contents move into a memfd mapped
over its heap. The memory outlives the instances that use it for as long as it is referenced.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from typing import TYPE_CHECKING, Dict, Optional, Union

from ..errors import LimitsExceeded, MemoryAccessError
from ..module.abi import WASM_MAX_PAGES, WASM_PAGE_SIZE
from ..wasm.types import MemoryType, SizeLimits
from . import libc
from .limits import WASM32_MAX_MEMORY

if TYPE_CHECKING:  # pragma: no cover
    from .alloc import SlotMemory
    from .instance import Instance


def limits_text(limits: SizeLimits) -> str:
    """``{min 1, max 2}`` (pages), as the spec writes memory limits."""
    return f"{{min {limits.min}" + ("" if limits.max is None else f", max {limits.max}") + "}"


class Memory:
    """A linear memory that can be linked: ``Memory(MemoryType)``, ``Memory(SizeLimits)`` or
    ``Memory(min_pages, max_pages=None)`` makes one the host owns, zeroed; an instance's exported
    memory is ``inst.exports["memory"]``. Shaped like wasmtime-py's ``Memory``, without a store.

    :meth:`view` is a writable memoryview of its bytes as they are now (it stays valid, at its
    size, whatever happens to the memory later); :meth:`grow` grows it in every instance using it.
    """

    def __init__(self, type: Union[MemoryType, SizeLimits, int], max_pages: Optional[int] = None):
        if isinstance(type, MemoryType):
            limits = type.limits
        elif isinstance(type, SizeLimits):
            limits = type
        elif isinstance(type, int) and not isinstance(type, bool):
            limits = SizeLimits(type, max_pages)
        else:
            raise TypeError(f"a memory's type is a MemoryType, SizeLimits or a page count, "
                            f"got {type!r}")
        if max_pages is not None and not isinstance(type, int):
            raise TypeError("max_pages goes with a page count, not with a memory type")
        for what, pages in (("minimum", limits.min), ("maximum", limits.max)):
            if pages is not None and (not isinstance(pages, int) or isinstance(pages, bool)
                                      or not 0 <= pages <= WASM_MAX_PAGES):
                raise ValueError(f"memory {what} must be 0..{WASM_MAX_PAGES} pages, "
                                 f"got {pages!r}")
        if limits.max is not None and limits.min > limits.max:
            raise ValueError(f"memory minimum {limits.min} exceeds its maximum {limits.max}")
        self._setup(limits.max, WASM32_MAX_MEMORY if limits.max is None
                    else limits.max * WASM_PAGE_SIZE)
        if limits.min:
            self._resize(limits.min * WASM_PAGE_SIZE)

    def _setup(self, declared_max: Optional[int], own_limit: int) -> None:
        self._declared_max = declared_max   # pages, or None: what import matching compares
        self._own_limit = own_limit         # bytes this memory may grow to, aliases aside
        self._fd = libc.memfd_create("pylucet-shared-memory")
        self._finalizer = weakref.finalize(self, libc.close, self._fd)
        self._size = 0
        self._limit = own_limit
        self._lock = threading.Lock()
        self._aliases: Dict["SlotMemory", int] = {}   # alias -> the growth limit it brings
        # the instance whose own memory this was made from, weakly: that instance holds it
        self._owner: Optional["weakref.ref[Instance]"] = None
        self._view: Optional[memoryview] = None

    @classmethod
    def _adopt(cls, instance: "Instance") -> "Memory":
        """Make ``instance``'s own heap shared: its contents go into a new memory, which is
        then mapped over the heap in their place. The caller makes sure the guest is not
        running."""
        slot_memory = instance._mem
        data = instance._module.data
        heap = data.heap
        assert heap is not None and not heap.imported
        self = cls.__new__(cls)
        self._setup(None if heap.max_size is None else heap.max_size // WASM_PAGE_SIZE,
                    instance.memory_max)
        size = instance.memory_size
        try:
            self._resize(size)
            if size:
                os.pwrite(self._fd, (ctypes.c_char * size).from_address(slot_memory.slot.vmctx),
                          0)
            self._attach(slot_memory, instance.memory_max)
        except BaseException:
            self._finalizer()
            raise
        self._owner = weakref.ref(instance)
        return self

    # --- what the host sees -------------------------------------------------------------------

    @property
    def type(self) -> MemoryType:
        """The memory's type now: its current size in pages and its declared maximum."""
        return MemoryType(SizeLimits(self.size, self._declared_max))

    @property
    def size(self) -> int:
        """Current size in wasm pages."""
        return self._size // WASM_PAGE_SIZE

    @property
    def data_len(self) -> int:
        """Current size in bytes."""
        return self._size

    @property
    def limit(self) -> int:
        """The size in bytes the memory may grow to: its maximum, and every instance's limits."""
        return self._limit

    @property
    def owner(self) -> Optional["Instance"]:
        """The instance whose memory this was made from, while it lives; None for the host's."""
        return None if self._owner is None else self._owner()

    def view(self) -> memoryview:
        """The memory's bytes as they are now, writable. The view is a mapping of its own:
        valid for as long as it is referenced, at this size (take a new one after a grow)."""
        size = self._size
        view = self._view
        if view is None or len(view) != size:
            view = memoryview(mmap.mmap(self._fd, size) if size else bytearray())
            self._view = view
        return view

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (MemoryAccessError outside the memory)."""
        self._check_range(offset, n)
        return bytes(self.view()[offset:offset + n])

    def write(self, offset: int, data: bytes) -> None:
        """Copy ``data`` to ``offset`` (MemoryAccessError outside the memory)."""
        data = bytes(data)
        self._check_range(offset, len(data))
        self.view()[offset:offset + len(data)] = data

    def _check_range(self, offset: int, n: int) -> None:
        if not (type(offset) is int and type(n) is int and 0 <= offset and 0 <= n
                and offset + n <= self._size):
            raise MemoryAccessError(f"memory access [{offset!r}, +{n!r}) is outside the "
                                    f"memory of {self._size} bytes")

    def grow(self, pages: int) -> int:
        """Grow by ``pages`` wasm pages in every instance using the memory; returns the old size
        in pages (:class:`~pylucet.LimitsExceeded` past :attr:`limit`)."""
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
            raise ValueError(f"grow takes a non-negative number of pages, got {pages!r}")
        with self._lock:
            old = self._size
            new = old + pages * WASM_PAGE_SIZE
            if new > self._limit:
                raise LimitsExceeded(f"cannot grow the memory from {old // WASM_PAGE_SIZE} by "
                                     f"{pages} pages: it may have at most "
                                     f"{self._limit // WASM_PAGE_SIZE} pages")
            if pages:
                self._resize(new)
                for alias in self._aliases:
                    alias.grow_shared(self._fd, old, new)
                    alias.set_heap_words(new, self._limit)
            return old // WASM_PAGE_SIZE

    def _grow_guest(self, pages: int) -> int:
        """``memory.grow`` from compiled code: the old size in pages, or -1 if it cannot."""
        try:
            return self.grow(pages & 0xFFFF_FFFF)
        except (LimitsExceeded, OSError):
            return -1

    def _resize(self, size: int) -> None:
        libc.ftruncate(self._fd, size)
        self._size = size

    # --- aliases ------------------------------------------------------------------------------

    def _attach(self, alias: "SlotMemory", limit: int) -> None:
        """Map the memory at ``alias``'s heap, whose instance may let it grow to ``limit``
        bytes; LimitsExceeded if the memory is already larger than that."""
        with self._lock:
            if self._size > limit:
                raise LimitsExceeded(f"the memory has {self._size // WASM_PAGE_SIZE} pages, "
                                     f"more than the importing instance may have "
                                     f"({limit // WASM_PAGE_SIZE} pages)")
            self._aliases[alias] = limit
            self._limit = min(self._limit, limit)
            alias.map_shared(self, self._fd, self._size, self._limit)
            self._publish_limit()

    def _detach(self, alias: "SlotMemory") -> None:
        """``alias`` stops using the memory (its slot is being torn down or reset)."""
        with self._lock:
            self._aliases.pop(alias, None)
            alias.drop_shared()
            owner = self.owner
            if owner is not None and owner._mem is alias:
                self._owner = None
            self._limit = min([self._own_limit, *self._aliases.values()])
            self._publish_limit()

    def _republish(self, alias: "SlotMemory") -> None:
        """Write the size and limit into ``alias``'s instance page again (which its instance's
        initialisation overwrote)."""
        with self._lock:
            alias.set_heap_words(self._size, self._limit)

    def _publish_limit(self) -> None:
        for alias in self._aliases:
            alias.set_heap_words(self._size, self._limit)

    def __repr__(self) -> str:
        owner = self.owner
        where = "host" if owner is None else repr(owner)
        return (f"<Memory {limits_text(SizeLimits(self.size, self._declared_max))} of {where}, "
                f"{len(self._aliases)} instance(s) using it>")


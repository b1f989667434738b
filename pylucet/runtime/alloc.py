"""One slot's memory: committing it for an instance, growing its heap, handing out views of the
heap, and wiping it for the next tenant (Lucet's ``Alloc``).

The region (``runtime.region``) only hands slots out and takes them back; everything that
touches a slot's pages happens here, so the two ways of giving an instance its initial heap sit
side by side:

* ``HeapStrategy.COPY`` (Lucet's): the heap pages are anonymous memory from the region's
  reservation; instantiation copies the module's initial data pages in, so it costs time in
  proportion to the initial data.
* ``HeapStrategy.COW`` (the default): the module's initial heap is put in a memfd once per module
  (:class:`HeapImage`), and instantiation maps it ``MAP_PRIVATE | MAP_FIXED`` over the heap, so it
  costs the same whatever the image's size, and pages the guest never writes are shared between
  all its instances. Teardown's ``madvise(MADV_DONTNEED)`` then brings back the *image's*
  contents, not zeros (the kernel drops the private copies): right for the module's next
  instance, which is why a slot remembers which image it holds, and wrong for any other module,
  for which the image is replaced by fresh anonymous reservation first.

Either way a new tenant sees zeros or its own module's image, never a previous tenant's data.

A heap can also be an *alias* of a memory shared with other instances and the host
(``runtime.memories``): the memory's memfd mapped ``MAP_SHARED | MAP_FIXED`` at the heap, so that
compiled code addresses it at its own heap base as ever. Teardown maps fresh, inaccessible
reservation back over an alias before anything else: ``madvise(MADV_DONTNEED)`` on a shared
mapping would keep the file's contents, and the next tenant must never see them.

System calls per lifecycle, the floor this is built down to: the areas no guest address can reach
(the poll page, the instance page, the stack, the globals, the tables) are made accessible once,
the first time the slot is used, and stay so, zeroed by teardown's ``madvise`` like the rest. The
heap is opened to exactly its initial size at instantiation, which for a slot whose last tenant
ran the same module is already the case: no system call, or one ``mprotect`` (or an ``mmap`` of a
different module's image) otherwise. Teardown is two ``madvise`` calls (the stack below its top,
the heap; one more for the tables, if the module has any) and two ``memset`` of the pages every
tenant writes at once (they stay resident, which saves their page faults).
"""

from __future__ import annotations

import ctypes
import enum
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ..errors import InstantiationError
from ..module.abi import INSTANCE_PAGE_SIZE, PAGE_SIZE, VMCTX_MEMORY_MAX, VMCTX_MEMORY_SIZE
from . import libc
from .calls import Words
from .limits import page_round

if TYPE_CHECKING:  # pragma: no cover
    from .loader import LoadedModule
    from .memories import Memory
    from .region import Fit, Slot

_RW = libc.PROT_READ | libc.PROT_WRITE
_MEMORY_SIZE = (INSTANCE_PAGE_SIZE + VMCTX_MEMORY_SIZE) // 8   # its word in the instance page
_MEMORY_MAX = (INSTANCE_PAGE_SIZE + VMCTX_MEMORY_MAX) // 8
_RESERVE = libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE | libc.MAP_FIXED
STACK_RESIDENT = 16 * 1024
"""The top of the guest stack, which every call uses: zeroed in place rather than given back."""


class HeapStrategy(enum.Enum):
    """How an instance's initial heap gets its contents (see the module docstring)."""

    COPY = "copy"
    COW = "cow"


class HeapImage:
    """A module's initial heap in a memfd, made once per module, mapped by every instance."""

    def __init__(self, module: "LoadedModule", size: int):
        self.size = size
        self.fd = libc.memfd_create(f"pylucet-heap-{module.name}")
        try:
            libc.ftruncate(self.fd, size)
            for page_index, content in module.data.sparse_data.items():
                offset = page_index * PAGE_SIZE
                if offset + len(content) > size:
                    raise InstantiationError(f"module {module.name!r}: initial data at "
                                             f"{offset:#x} lies outside the initial heap")
                os.pwrite(self.fd, content, offset)
        except BaseException:
            libc.close(self.fd)
            raise
        self._finalizer = weakref.finalize(self, libc.close, self.fd)


_images: "weakref.WeakKeyDictionary[LoadedModule, HeapImage]" = weakref.WeakKeyDictionary()
_images_lock = threading.Lock()


def heap_image(module: "LoadedModule", size: int) -> HeapImage:
    """The module's HeapImage of ``size`` bytes (its initial heap), made on first use."""
    with _images_lock:
        image = _images.get(module)
        if image is None or image.size != size:
            image = _images[module] = HeapImage(module, size)
        return image


class SlotMemory:
    """Everything about one slot's pages, for as long as the region lives; the instance in the
    slot (if any) reaches its memory only through this."""

    def __init__(self, slot: "Slot", strategy: HeapStrategy, words: int,
                 on_release: Callable[[], Optional[Callable[["SlotMemory", int], None]]]):
        self.slot = slot
        self.strategy = strategy
        self.page = Words(slot.base, words)
        """Typed views of the instance page (they depend only on the address)."""
        self._on_release = on_release
        # Heap views handed out (the ctypes arrays behind them), so teardown can tell whether
        # memory behind a view would go away: see release().
        self._views: Dict[int, "weakref.ref[Any]"] = {}
        self._image: Optional[HeapImage] = None     # mapped over the heap (COW), if any
        self._image_size = 0
        self._static_open = False     # the areas outside the heap made accessible (once)
        self._tables_open = 0         # bytes of the table area made accessible so far
        self._poll_open = True
        self._kept = 0                # heap bytes left accessible for live views at the last wipe
        self._heap_open = 0           # heap bytes accessible (exactly memory_size with a tenant)
        self.shared: Optional["Memory"] = None
        """The shared memory mapped at the heap (an alias), if any; ``_shared_size`` bytes."""
        self._shared_size = 0
        self.tenant: Optional["weakref.ref[Any]"] = None
        """The instance in the slot, if any (weakly: dropping it frees the slot)."""
        self.closed = False
        """Set by the region when it unmaps itself: nothing may touch the slot any more."""

    # --- an instance moving in ---------------------------------------------------------------

    def commit(self, module: "LoadedModule", fit: "Fit",
               shared: Optional["Memory"] = None) -> None:
        """Make the areas an instance uses accessible (zero, or holding the module's image) and
        give its heap the module's initial contents, or, for a module importing its memory,
        make the heap an alias of ``shared``."""
        slot = self.slot
        if not self._static_open:
            # the stack, the globals, the poll page and the instance page are adjacent; none
            # of them is ever closed again (see the module docstring)
            libc.mprotect(slot.stack_base, slot.vmctx - slot.stack_base, _RW)
            self._static_open = True
        if fit.tables_committed > self._tables_open:
            libc.mprotect(slot.tables, fit.tables_committed, _RW)
            self._tables_open = fit.tables_committed
        if shared is not None:
            shared._attach(self, fit.memory_max)
        elif self.strategy == HeapStrategy.COW and fit.initial_heap:
            image = heap_image(module, fit.initial_heap)
            if self._image is not image:
                self._drop_image()
                libc.mmap(slot.vmctx, image.size, _RW, libc.MAP_PRIVATE | libc.MAP_FIXED,
                          image.fd, 0)
                self._image, self._image_size = image, image.size
                self._heap_open = image.size
            # else: still mapped from this module's last tenant, wiped back to the image
            self._open_heap(fit.initial_heap)
        else:
            self._drop_image()
            self._open_heap(fit.initial_heap)
            for page_index, content in module.data.sparse_data.items():
                offset = page_index * PAGE_SIZE
                if offset + len(content) > fit.initial_heap:
                    raise InstantiationError(f"module {module.name!r}: initial data at "
                                             f"{offset:#x} lies outside the initial heap")
                ctypes.memmove(slot.vmctx + offset, content, len(content))

    def _open_heap(self, size: int) -> None:
        """Make exactly the first ``size`` bytes of the heap accessible: the sandbox depends on
        it, compiled code checking no bounds. Pages a previous tenant had open (and teardown
        wiped) are kept, so a slot reused by the same module needs no system call here."""
        slot, now = self.slot, self._heap_open
        if now > size:
            libc.mprotect(slot.vmctx + size, now - size, libc.PROT_NONE)
        elif now < size:
            libc.mprotect(slot.vmctx + now, size - now, _RW)
        self._heap_open = size

    def _drop_image(self) -> None:
        """Put plain, inaccessible reservation back where a module image was mapped."""
        if self._image is not None:
            libc.mmap(self.slot.vmctx, max(self._image_size, self._heap_open), libc.PROT_NONE,
                      _RESERVE)
            self._image = None
            self._heap_open = 0

    # --- a heap shared with others (called by runtime.memories, under the memory's lock) ------

    def map_shared(self, memory: "Memory", fd: int, size: int, limit: int) -> None:
        """Make the heap an alias of ``memory`` (its memfd ``fd``, ``size`` bytes now), which
        may grow to ``limit``. Whatever the heap held is replaced: the caller copied it into
        the memory first if it was to be kept."""
        self._drop_image()
        self._open_heap(0)
        if size:
            libc.mmap(self.slot.vmctx, size, _RW, libc.MAP_SHARED | libc.MAP_FIXED, fd, 0)
        self.shared, self._shared_size = memory, size
        self.set_heap_words(size, limit)

    def grow_shared(self, fd: int, old: int, new: int) -> None:
        """Map the pages ``memory.grow`` added to the shared memory (the file already has them)."""
        libc.mmap(self.slot.vmctx + old, new - old, _RW, libc.MAP_SHARED | libc.MAP_FIXED, fd,
                  old)
        self._shared_size = new

    def set_heap_words(self, size: int, limit: int) -> None:
        """Publish the heap's size and growth limit to compiled code (VMCTX_MEMORY_*)."""
        u = self.page.u64
        u[_MEMORY_SIZE] = size
        u[_MEMORY_MAX] = limit

    def drop_shared(self) -> None:
        """Stop being an alias: fresh, inaccessible reservation where the memory was mapped."""
        if self._shared_size:
            libc.mmap(self.slot.vmctx, self._shared_size, libc.PROT_NONE, _RESERVE)
        self.shared, self._shared_size = None, 0

    def set_poll(self, open_: bool, fired: bool = False) -> None:
        """Open or revoke the slot's poll page (``abi.VMCTX_POLL``): revoked, the guest's next
        interrupt poll leaves for the host. ``fired``: a poll has just faulted, so the page is
        revoked whatever this object did last (asm/trap.s's SIGINT handler revokes it itself)."""
        if fired:
            self._poll_open = False
        if open_ != self._poll_open:
            libc.mprotect(self.slot.poll, PAGE_SIZE, _RW if open_ else libc.PROT_NONE)
            self._poll_open = open_

    def open_tables(self, end: int) -> None:
        """Make the table area accessible up to ``end`` bytes (a table grew into it); teardown
        wipes as far as it was ever opened."""
        end = page_round(end)
        if end > self._tables_open:
            libc.mprotect(self.slot.tables + self._tables_open, end - self._tables_open, _RW)
            self._tables_open = end

    def grow_heap(self, old_size: int, new_size: int) -> None:
        libc.mprotect(self.slot.vmctx + old_size, new_size - old_size, _RW)

    # --- heap views ---------------------------------------------------------------------------

    def heap_view(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes of the heap, remembered so that tearing the slot
        down can tell whether memory behind a view would go away."""
        array = (ctypes.c_ubyte * size).from_address(self.slot.vmctx)
        views = self._views
        key = id(array)   # ctypes arrays are unhashable; the id is unique while it lives
        views[key] = weakref.ref(array, lambda _ref, views=views, key=key: views.pop(key, None))
        return memoryview(array).cast("B")

    def viewed_extent(self) -> int:
        """Bytes from the heap base that some live view still covers."""
        if not self._views:
            return 0
        arrays = [a for ref in list(self._views.values()) if (a := ref()) is not None]
        return max((ctypes.sizeof(a) for a in arrays), default=0)

    # --- an instance moving out ---------------------------------------------------------------

    def wipe(self, keep_heap: int = 0, drop_image: bool = False) -> None:
        """Throw away what the tenant wrote and close the heap again, except its first
        ``keep_heap`` bytes, which stay readable and writable for views that are still alive.
        Afterwards everything reads zeros, but a mapped module image (``_image``), which reads
        as that image: the next commit replaces it for any other module. The heap pages stay
        accessible (no guest address reaches a free slot); the next commit opens exactly what
        its tenant may use.

        ``madvise`` covers only what can have been written: the heap up to its current size
        (``memory.grow`` from compiled code publishes the size in the instance page, and no
        page past it was ever accessible), the stack, the tables opened so far. Walking the
        untouched gigabytes of heap reservation would cost twice as much."""
        slot = self.slot
        if self.shared is not None:
            self.shared._detach(self)       # (under its lock: no grow maps into us afterwards)
        else:
            # compiled memory.grow opened pages past what this object knows of
            self._heap_open = max(self._heap_open, self.page.u64[_MEMORY_SIZE])
        heap = page_round(max(self._heap_open, self._kept))
        if drop_image:
            self._drop_image()
        # What every tenant writes at once -- the instance page, the top of the stack, the
        # globals -- is zeroed in place and stays resident: a page fault costs more here than
        # a system call (about 4 us under this machine's hypervisor), and after madvise the
        # next tenant would take one on each of those pages. The rest goes back to the kernel.
        resident = slot.stack_top - STACK_RESIDENT
        libc.madvise(slot.stack_base, resident - slot.stack_base, libc.MADV_DONTNEED)
        ctypes.memset(resident, 0, slot.poll - resident)        # stack top and globals
        ctypes.memset(slot.base, 0, INSTANCE_PAGE_SIZE)
        if heap:
            libc.madvise(slot.vmctx, heap, libc.MADV_DONTNEED)
        if self._tables_open:
            # the first page holds the function records (and small tables) most tenants
            # write: zeroed in place and kept, like the instance page
            ctypes.memset(slot.tables, 0, PAGE_SIZE)
            if self._tables_open > PAGE_SIZE:
                libc.madvise(slot.tables + PAGE_SIZE, self._tables_open - PAGE_SIZE,
                             libc.MADV_DONTNEED)
        kept = self._kept = page_round(keep_heap)
        if kept > self._heap_open:   # (release may just have put fresh reservation under them)
            self._open_heap(kept)
        self.set_poll(True)

    def release(self) -> None:
        """The tenant is gone: wipe the slot and hand it back to the region. If the host still
        holds a view of the heap, making those pages inaccessible would turn a stale view into
        a crash, and reusing the slot would show it the next instance's data; so the pages
        behind views stay mapped (wiped) and the region holds the slot back until every view is
        gone."""
        if self.closed:
            return
        viewed = self.viewed_extent()
        # a view must not go on to see another tenant's image
        self.wipe(keep_heap=viewed, drop_image=bool(viewed))
        self.tenant = None
        released = self._on_release()
        if released is not None:
            released(self, viewed)

"""What a host function sees of the instance that called it.

A :class:`Vmctx` is made once per instance and handed to every host function defined with
``access_vmctx``. Its memory helpers check every pointer and length against the heap's current
size before touching it, so a guest passing a wild pointer gets a
:class:`~pylucet.MemoryAccessError` in the host function (WASI turns it into ``EFAULT``), never a
read or write of host memory.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING, Any, Generator, Optional

from ..errors import MemoryAccessError, Terminate
from ..module.abi import INSTANCE_PAGE_SIZE, VMCTX_MEMORY_SIZE

_MEMORY_SIZE = (INSTANCE_PAGE_SIZE + VMCTX_MEMORY_SIZE) // 8   # its word in the instance page

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance


class Vmctx:
    """The calling instance, for a host function: its memory, its embedder context, and the
    ways to suspend or end it."""

    __slots__ = ("_ref", "_view", "_view_size")

    def __init__(self, instance: "Instance"):
        # weak: the instance holds its Vmctx, and a cycle would keep a dropped instance's slot
        # taken until the garbage collector runs
        self._ref = weakref.ref(instance)
        self._view: Optional[memoryview] = None
        self._view_size = -1

    @property
    def _instance(self) -> "Instance":
        instance = self._ref()
        if instance is None:
            raise ValueError("the instance of this Vmctx is gone")
        return instance

    @property
    def instance(self) -> "Instance":
        return self._instance

    @property
    def ctx(self) -> Any:
        """The object passed as ``ctx=`` to ``new_instance``."""
        return self._instance.ctx

    @property
    def memory(self) -> memoryview:
        """The whole heap as it is now, writable. Kept while the size stays the same, so taking
        it in every host call is cheap; after ``memory.grow`` it is a new, larger view."""
        instance = self._instance
        size = instance._page.u64[_MEMORY_SIZE] if instance._state else instance.memory_size
        if size != self._view_size:
            self._view = instance.heap
            self._view_size = size
        return self._view  # type: ignore[return-value]

    @property
    def memory_size(self) -> int:
        return self._instance.memory_size

    def _check(self, ptr: int, n: int) -> int:
        """The host address of guest bytes [ptr, ptr + n), checked (on the hot path of every
        WASI call, hence the direct reads)."""
        instance = self._instance
        size = instance.memory_size
        if not (type(ptr) is int and type(n) is int and 0 <= ptr and 0 <= n
                and ptr + n <= size):
            raise MemoryAccessError(f"guest memory access [{ptr!r}, +{n!r}) is outside the "
                                    f"heap of {size} bytes")
        return instance._slot.vmctx + ptr

    def read(self, ptr: int, n: int) -> bytes:
        """``n`` bytes of guest memory at ``ptr``."""
        return ctypes.string_at(self._check(ptr, n), n)

    def write(self, ptr: int, data: bytes) -> None:
        """Copy ``data`` into guest memory at ``ptr``."""
        data = bytes(data)
        ctypes.memmove(self._check(ptr, len(data)), data, len(data))

    def read_str(self, ptr: int, n: int, encoding: str = "utf-8") -> str:
        """``n`` bytes at ``ptr`` decoded (UnicodeDecodeError, a ValueError, if they are not
        valid in ``encoding``)."""
        return self.read(ptr, n).decode(encoding)

    def grow_memory(self, pages: int) -> int:
        """Grow the heap by ``pages`` wasm pages; the old size in pages
        (:class:`~pylucet.LimitsExceeded` past the maximum)."""
        return self._instance._grow(pages)

    def terminate(self, details: object = None) -> None:
        """End the guest now: the ``run`` that led here raises
        :class:`~pylucet.Terminated` with these ``details``."""
        raise Terminate(details)

    def yield_(self, value: object = None) -> Generator[object, object, object]:
        """Suspend the guest from a generator host function: ``got = yield from
        vmctx.yield_(v)`` makes ``run`` (or ``resume``) return ``Yielded(v)`` and, once the
        host calls ``instance.resume(x)``, evaluates to ``x``. (A plain ``yield v`` in a
        generator host function does the same.)"""
        return (yield value)

    def __repr__(self) -> str:
        return f"<Vmctx of {self._ref()!r}>"

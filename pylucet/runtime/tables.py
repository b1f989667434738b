"""Tables as the host sees them, and the table instructions the host carries out (builtins).

A table is a descriptor (``abi.TABLE_DESC``: base, length, capacity, max) and the entries behind
it, 8 bytes each, 0 for null. An instance's own tables sit in its slot (``runtime.region``); a
:class:`Table` made by the host owns a reservation of its own. Either can be imported: the
importer's vmctx points at the same descriptor, so a ``table.grow`` by anyone is seen by all.

Guest code does ``table.get``/``set``/``size`` and ``call_indirect`` inline. ``table.grow``,
``fill``, ``copy``, ``init`` and ``elem.drop`` leave for the host (``abi.Builtin``) and run here,
in Python, on the host's stack: every range is checked before anything is written, as the spec
orders it, and a failed check is a :class:`~pylucet.Trap` of the guest's call.
"""

from __future__ import annotations

import ctypes
import weakref
from array import array
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set

from ..module.abi import (TABLE_DESC, TABLE_DESC_SIZE, TABLE_ENTRY_SIZE,
                          TABLE_MAX_LENGTH, Builtin)
from ..module.traps import TrapCode
from ..wasm.types import ValType
from . import libc
from .limits import page_round
from .references import extern_handle, extern_object, func_of_record, record_of_func

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance
    from .instance_tables import InstanceTables

_BASE, _LENGTH, _CAPACITY, _MAX = (TABLE_DESC[f] // 8 for f in ("base", "length", "capacity",
                                                                 "max"))
HOST_TABLE_CAPACITY = 1 << 20
"""Entries of address space a host table without a smaller maximum reserves."""


HOST_TABLES: "weakref.WeakSet[Table]" = weakref.WeakSet()
"""Every live host table (``runtime.instance_tables`` clears closed instances' references)."""


class Table:
    """A table of ``funcref`` or ``externref``, shaped like wasmtime-py's ``Table``.

    ``Table(ValType.FUNCREF, 10, 20)`` makes a host table that a Linker can define for modules
    to import; ``instance.tables[i]`` views an instance's own. Entries read and write as Python
    values: a :class:`~pylucet.runtime.exports.Func` (funcref), any object (externref), None
    for null.
    """

    def __init__(self, elem: ValType, initial: int, maximum: Optional[int] = None):
        if elem not in (ValType.FUNCREF, ValType.EXTERNREF):
            raise TypeError(f"a table holds funcref or externref, not {elem!r}")
        for what, v in (("initial", initial), ("maximum", maximum)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                  or not 0 <= v <= TABLE_MAX_LENGTH):
                raise ValueError(f"table {what} size must be an int in [0, 2^32), got {v!r}")
        if maximum is not None and maximum < initial:
            raise ValueError(f"table maximum {maximum} is below its initial size {initial}")
        capacity = max(initial, min(HOST_TABLE_CAPACITY,
                                    TABLE_MAX_LENGTH if maximum is None else maximum))
        size = page_round(max(1, capacity) * TABLE_ENTRY_SIZE)
        base = libc.mmap(0, size, libc.PROT_NONE,
                         libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
        self._reservation = (base, size)
        self._committed = 0
        self._desc_buffer = (ctypes.c_uint64 * (TABLE_DESC_SIZE // 8))()
        self.elem = elem
        self._owner: Any = None
        self._users: "weakref.WeakSet[Instance]" = weakref.WeakSet()
        """Instances that import it: a reference one of them stores may be called by any."""
        self._holds: Set[int] = set()      # externref handles this host table keeps alive
        self._keepalive: List["Instance"] = []
        """Failed instantiations whose functions only this table still refers to."""
        d = self._desc_buffer
        d[_BASE], d[_LENGTH], d[_CAPACITY] = base, 0, capacity
        d[_MAX] = TABLE_MAX_LENGTH if maximum is None else maximum
        self.desc = ctypes.addressof(self._desc_buffer)
        self._commit = self._commit_host
        self.grow(initial, None)
        HOST_TABLES.add(self)

    @classmethod
    def _of_instance(cls, desc: int, elem: ValType, owner: "Instance",
                     commit: Callable[[int], None]) -> "Table":
        """A view of a table whose descriptor the instance's slot holds."""
        self = cls.__new__(cls)
        self.elem = elem
        self._owner = weakref.ref(owner)   # (the owner holds its views: no cycle)
        self.desc = desc
        self._users = weakref.WeakSet()
        self._keepalive = []
        self._desc_buffer = (ctypes.c_uint64 * (TABLE_DESC_SIZE // 8)).from_address(desc)
        self._commit = commit
        self._reservation = None
        return self

    @property
    def owner(self) -> Optional["Instance"]:
        """The instance whose slot holds the table (None: the host made it). Importers keep
        it alive."""
        return None if self._owner is None else self._owner()

    def _commit_host(self, end: int) -> None:
        """Make the first ``end`` bytes of a host table's entries accessible."""
        end = page_round(end)
        if end > self._committed:
            base = self._desc_buffer[_BASE]
            libc.mprotect(base + self._committed, end - self._committed,
                          libc.PROT_READ | libc.PROT_WRITE)
            self._committed = end

    @property
    def gone(self) -> bool:
        """A host table whose entries are unmapped (it is being collected)."""
        return self._owner is None and self._reservation is None

    def __del__(self) -> None:
        reservation = getattr(self, "_reservation", None)
        if reservation is not None:
            self._reservation = None       # (an orphan collected with it must not touch it)
            try:
                libc.munmap(*reservation)
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    # --- the descriptor ------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._desc_buffer[_LENGTH]

    @property
    def maximum(self) -> Optional[int]:
        m = self._desc_buffer[_MAX]
        return None if m == TABLE_MAX_LENGTH else m

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        top = "" if self.maximum is None else f", max {self.maximum}"
        return f"<Table {self.elem.text} {self.size}{top}>"

    # --- entries as Python values --------------------------------------------------------------

    def _to_word(self, value: Any) -> int:
        if self.elem == ValType.EXTERNREF:
            holder = self._holds if self.owner is None else self.owner._externs
            return extern_handle(value, holder)
        return record_of_func(value, self.owner)

    def _from_word(self, word: int) -> Any:
        if self.elem == ValType.EXTERNREF:
            return extern_object(word)
        return func_of_record(word)

    def _check(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"table index must be an int, got {index!r}")
        if not 0 <= index < self.size:
            raise IndexError(f"table index {index} out of range for a table of {self.size}")

    def get(self, index: int) -> Any:
        self._check(index)
        return self._from_word(self.words(index, 1)[0])

    def set(self, index: int, value: Any) -> None:
        self._check(index)
        self.words(index, 1)[0] = self._to_word(value)

    __getitem__ = get
    __setitem__ = set

    def grow(self, delta: int, init: Any = None) -> int:
        """Add ``delta`` entries set to ``init``; returns the old size. Raises ValueError past
        the maximum or the reserved capacity (where the guest's table.grow returns -1)."""
        old = self.grow_words(delta, self._to_word(init))
        if old < 0:
            raise ValueError(f"cannot grow {self!r} by {delta}: past its maximum or capacity")
        return old

    # --- raw entries (the builtins and the instance use these) --------------------------------

    def words(self, start: int, n: int) -> Any:
        """Entries ``start .. start + n`` as a writable u64 array (no bounds check)."""
        return (ctypes.c_uint64 * n).from_address(self._desc_buffer[_BASE]
                                                  + TABLE_ENTRY_SIZE * start)

    def grow_words(self, delta: int, word: int) -> int:
        d = self._desc_buffer
        old = d[_LENGTH]
        new = old + delta
        if new > d[_CAPACITY] or new > d[_MAX]:
            return -1
        if delta:
            self._commit(TABLE_ENTRY_SIZE * new)
            fill_words(self.words(old, delta), word)
            d[_LENGTH] = new
        return old


def fill_words(words: Any, word: int) -> None:
    n = len(words)
    if word == 0:
        ctypes.memset(words, 0, TABLE_ENTRY_SIZE * n)
    elif n:
        src = array("Q", (word,)) * n
        ctypes.memmove(words, src.buffer_info()[0], TABLE_ENTRY_SIZE * n)


# --- builtins ------------------------------------------------------------------------------------

def run_builtin(instance: "InstanceTables", builtin: int, args: List[int], where: Any) -> int:
    """Carry out ``builtin`` for ``instance`` (the one whose code called it) with the argument
    registers ``args`` (u64 each); returns what goes back in rax. ``where(code, wasm_offset)``
    makes the Trap of a failed check."""
    a = [x & 0xFFFF_FFFF for x in args]
    if builtin == Builtin.TABLE_GROW:
        init, delta, table = args[0], a[1], a[2]
        old = instance.tables[table].grow_words(delta, init)
        return old & 0xFFFF_FFFF
    if builtin == Builtin.TABLE_FILL:
        start, ref, n, table, off = a[0], args[1], a[2], a[3], a[4]
        t = instance.tables[table]
        if start + n > t.size:
            raise where(TrapCode.TableAccessOutOfBounds, off)
        fill_words(t.words(start, n), ref)
        return 0
    if builtin == Builtin.TABLE_COPY:
        dst, src, n, dt, st, off = a[:6]
        d, s = instance.tables[dt], instance.tables[st]
        if src + n > s.size or dst + n > d.size:
            raise where(TrapCode.TableAccessOutOfBounds, off)
        if n:
            ctypes.memmove(d.words(dst, n), s.words(src, n), TABLE_ENTRY_SIZE * n)
        return 0
    if builtin == Builtin.TABLE_INIT:
        dst, src, n, table, segment, off = a[:6]
        items = instance.elem_words(segment)
        t = instance.tables[table]
        if src + n > len(items) or dst + n > t.size:
            raise where(TrapCode.TableAccessOutOfBounds, off)
        if n:
            chunk = items[src:src + n]
            ctypes.memmove(t.words(dst, n), chunk.buffer_info()[0], TABLE_ENTRY_SIZE * n)
        return 0
    if builtin == Builtin.ELEM_DROP:
        instance.drop_elem(a[0])
        return 0
    raise ValueError(f"unknown builtin {builtin}")



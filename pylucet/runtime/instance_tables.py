"""An instance's function records, tables and element segments.

Records (``abi.FUNCREF``) sit at the start of the slot's table area: first one per imported
function -- these are the import entries compiled calls go through -- then one per defined
function that can become a reference (``ModuleData.funcrefs``). A host function's record leaves
for the host; another instance's function's record is a copy of that instance's own, so a call
through it switches to the callee natively (``pylucet_call_guest``).

The vmctx's table array holds descriptor pointers (``runtime.tables``): the instance's own tables'
descriptors sit in its instance page, an imported table's is the exporter's.

Records are in the slot, so they are wiped with it; a record that went into a table shared with
other instances would then dangle, and once the slot is reused, name the next tenant's function.
So closing an instance first clears the entries that point at its records in every table they
may have reached (:meth:`InstanceTables.scrub`): the tables it imports, or, once a reference to
one of its functions has left it any other way (through the host, through a call or a global
whose type holds a funcref), every live table and funcref global in the process. (A funcref
held in a local of a suspended call is not found: such a call is ended by the close of the
instance it runs in, not this one, so keep references to functions of instances that may
close out of yielded calls.)
"""

from __future__ import annotations

import ctypes
import weakref
from array import array
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set

from ..module.abi import FUNCREF, FUNCREF_SIZE, TABLE_DESC, TABLE_ENTRY_SIZE
from ..module.traps import TrapCode
from ..wasm.types import ExternKind, SegmentMode, ValType
from .references import release_handles, signature_id
from .tables import HOST_TABLES, Table

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance
    from .loader import LoadedModule
    from .region import Fit, Slot

_WORDS = FUNCREF_SIZE // 8
_FUNC, _VMCTX, _TARGET, _INDEX, _TYPE_ID = (FUNCREF[f] // 8 for f in
                                            ("func", "vmctx", "target", "index", "type_id"))
_D_BASE, _D_LENGTH, _D_CAPACITY, _D_MAX = (TABLE_DESC[f] // 8 for f in
                                           ("base", "length", "capacity", "max"))
_DESC_WORDS = 4


class InstanceTables:
    """The records, tables and element segments of one instance (re-made by ``reset``)."""

    def __init__(self, instance: "Instance", slot: "Slot", module: "LoadedModule", fit: "Fit",
                 funcs: Sequence[Any], tables: Sequence[Table], stubs: Any):
        self._owner = weakref.ref(instance)    # (no cycle: the instance holds this)
        self._memory = instance._mem
        self._slot = slot
        self._module = module
        self._fit = fit
        self._funcs = funcs            # what each function import resolved to
        self._imported_tables = tables
        self._stubs = stubs
        self.records = slot.records
        self.tables: List[Table] = []
        self.externs: Set[int] = set()
        """externref handles this instance holds (``runtime.references``)."""
        self._escaped = False
        if module._may_escape is None:
            module._may_escape = _may_escape(module.data)
        if module._may_escape:
            self.escaped = True
        self._elems: List[Optional[array]] = []
        self.funcref_globals: List[int] = []
        self._dropped: Set[int] = set()
        self.elem_error: Optional[str] = None

    @property
    def escaped(self) -> bool:
        """Whether a reference to one of our functions may have left for a table we do not
        import (set on the way out through the host, too: ``references.record_of_func``).
        Any instance's call may then run our code: :data:`ESCAPED` lists us for them."""
        return self._escaped

    @escaped.setter
    def escaped(self, value: bool) -> None:
        if value and not self._escaped:
            self._escaped = True
            owner = self._owner()
            if owner is not None:
                ESCAPED.add(owner)

    # --- filling a fresh slot ----------------------------------------------------------------

    def initialise(self, u: Any) -> None:
        """Records, table descriptors, tables' contents from the active element segments, and
        the ``ref.func`` globals. ``u`` is the instance page as u64 words."""
        slot, module = self._slot, self._module
        data = module.data
        self._fill_records()
        self._elems = [None] * len(data.elems)
        self._dropped = set()
        self.elem_error = None
        self.funcref_globals = [slot.globals + off for off in module._funcref_global_offsets]
        """Where this instance keeps funcref values of its own globals (cleared like table
        entries when an instance they point into closes)."""
        if data.tables or self.funcref_globals:
            _everyone.add(self)
        if not (data.tables or self._imported_tables or data.elems or module._ref_globals):
            return                      # (the usual small module: nothing more to fill)
        ptrs = (slot.table_ptrs - slot.base) // 8
        descs = (slot.table_descs - slot.base) // 8
        self.tables = list(self._imported_tables)
        for k, table in enumerate(self._imported_tables):
            u[ptrs + k] = table.desc
        memory = self._memory
        owner = self._owner()
        for spec, place in zip(data.tables, self._fit.tables):
            u[descs + _D_BASE] = slot.tables + place.offset
            u[descs + _D_LENGTH] = place.length
            u[descs + _D_CAPACITY] = place.capacity
            u[descs + _D_MAX] = 0xFFFF_FFFF if spec.max is None else spec.max
            desc = slot.base + 8 * descs
            u[ptrs + len(self.tables)] = desc
            self.tables.append(Table._of_instance(
                desc, spec.elem, owner,
                lambda end, start=place.offset: memory.open_tables(start + end)))
            descs += _DESC_WORDS
        for t in self._imported_tables:
            t._users.add(owner)
        for g in module._ref_globals:
            ctypes.c_uint64.from_address(slot.globals + g.offset).value = \
                self.record_address(g.init_func)
        self._apply_active()

    def _fill_records(self) -> None:
        """The records as this slot needs them: the same for every instance of the module in
        the slot unless it imports another instance's functions, so cached by vmctx then."""
        module = self._module
        vmctx = self._slot.vmctx
        image = module._record_images.get(vmctx)
        if image is None:
            image = self._records_image()
            if all(hasattr(f, "plan") for f in self._funcs):
                module._record_images[vmctx] = image
        if image:
            ctypes.memmove(self.records, image, len(image))

    def _records_image(self) -> bytes:
        module = self._module
        n_imports = len(self._funcs)
        local = module.record_template(self._stubs.call_guest)
        words = array("Q", bytes(FUNCREF_SIZE * n_imports))
        vmctx = self._slot.vmctx
        data = module.data
        ftypes = [data.types[i.type_id] for i in data.imports if i.type_id is not None]
        for i, item in enumerate(self._funcs):
            w = _WORDS * i
            if hasattr(item, "plan"):          # a HostFunc: the host finds it by index
                words[w + _FUNC] = words[w + _TARGET] = self._stubs.hostcall
                words[w + _VMCTX] = vmctx
                words[w + _INDEX] = i
                words[w + _TYPE_ID] = signature_id(ftypes[i])
            else:                              # another instance's function: its own record
                callee = item.instance
                callee._check_open()
                words[w:w + _WORDS] = callee._record_words(item.index)
        if local:
            own = array("Q", local)
            own[_VMCTX::_WORDS] = array("Q", (vmctx,)) * (len(own) // _WORDS)
            words.extend(own)
        return words.tobytes()

    def _apply_active(self) -> None:
        """The active segments in order, each checked whole before it is written; the first
        that does not fit stops instantiation (``elem_error``), keeping what came before."""
        data = self._module.data
        for k, seg in enumerate(data.elems):
            if seg.mode == SegmentMode.PASSIVE:
                continue
            self._dropped.add(k)
            if seg.mode != SegmentMode.ACTIVE:
                continue
            if seg.offset_global is not None:
                offset = ctypes.c_uint32.from_address(
                    self._owner()._global_address(seg.offset_global)).value
            else:
                offset = seg.offset  # type: ignore[assignment]
            table = self.tables[seg.table]
            n = len(seg.items)
            if offset + n > table.size:
                self.elem_error = TrapCode.TableAccessOutOfBounds.message
                return
            if n:
                words = self._item_words(k)
                ctypes.memmove(table.words(offset, n), words.buffer_info()[0],
                               TABLE_ENTRY_SIZE * n)

    # --- records -------------------------------------------------------------------------------

    def record_address(self, func_index: int) -> int:
        slot = self._module.funcref_slot.get(func_index)
        if slot is None:
            raise ValueError(f"function {func_index} of {self._module.name!r} cannot become a "
                             "reference (no element segment, export or global names it)")
        return self.records + FUNCREF_SIZE * slot

    def record_words(self, func_index: int) -> array:
        address = self.record_address(func_index)
        return array("Q", ctypes.string_at(address, FUNCREF_SIZE))

    def func_of(self, address: int) -> Optional[int]:
        """The function index whose record is at ``address``, if it is one of ours."""
        k, rest = divmod(address - self.records, FUNCREF_SIZE)
        funcs = self._module.funcref_func
        if rest or not 0 <= k < len(funcs):
            return None
        return funcs[k]

    # --- element segments ----------------------------------------------------------------------

    def _item_words(self, k: int) -> array:
        items = self._elems[k]
        if items is None:
            cache: Dict[Any, array] = self._module._elem_images
            key = (self.records, k)
            items = cache.get(key)
            if items is None:
                base, slots = self.records, self._module.funcref_slot
                seg = self._module.data.elems[k]
                items = array("Q", [0 if f is None else base + FUNCREF_SIZE * slots[f]
                                    for f in seg.items])
                if not seg.item_globals:
                    cache[key] = items
                owner = self._owner()
                for at, g in seg.item_globals:      # references read from imported globals
                    items[at] = ctypes.c_uint64.from_address(owner._global_address(g)).value
            self._elems[k] = items
        return items

    def elem_words(self, k: int) -> array:
        """Segment ``k``'s references (none once dropped), for ``table.init``."""
        if k in self._dropped:
            return array("Q")
        return self._item_words(k)

    def drop_elem(self, k: int) -> None:
        self._dropped.add(k)

    # --- leaving -------------------------------------------------------------------------------

    def referenced_from(self, table: Table) -> bool:
        """Whether some entry of ``table`` points at one of our records."""
        lo = self.records
        hi = lo + FUNCREF_SIZE * len(self._module.funcref_func)
        return hi > lo and any(lo <= w < hi for w in table.words(0, table.size))

    def scrub(self, heirs: List[Set[int]]) -> None:
        """Clear the entries of shared tables that point at this instance's records, and hand
        its externref holds to ``heirs``: called just before the slot is wiped."""
        if self.externs:
            release_handles(self.externs, heirs)
        lo = self.records
        hi = lo + FUNCREF_SIZE * len(self._module.funcref_func)
        if not self._imported_tables and not self.escaped:
            if self.tables or self.funcref_globals:
                _everyone.discard(self)
                self.tables, self.funcref_globals = [], []
            return                      # our references cannot be anywhere but our tables
        for table in self._imported_tables:
            table._users.discard(self._owner())
        if hi > lo:
            for table in (self._every_table() if self.escaped else self._imported_tables):
                n = table.size
                if n and not table.gone and table.elem == ValType.FUNCREF:
                    words = table.words(0, n)
                    for i, w in enumerate(words):
                        if lo <= w < hi:
                            words[i] = 0
            if self.escaped:
                for address in self._every_funcref_global():
                    cell = ctypes.c_uint64.from_address(address)
                    if lo <= cell.value < hi:
                        cell.value = 0
        _everyone.discard(self)
        self.funcref_globals = []
        self.tables = []

    def _every_funcref_global(self) -> List[int]:
        from .globalvars import HOST_FUNCREF_GLOBALS
        out = [a for other in list(_everyone) for a in other.funcref_globals]
        return out + [g._address for g in list(HOST_FUNCREF_GLOBALS)]

    def _every_table(self) -> List[Table]:
        found = {id(t): t for t in self._imported_tables}
        for other in list(_everyone):
            for t in other.tables:
                found[id(t)] = t
        for t in list(HOST_TABLES):
            found[id(t)] = t
        return list(found.values())


ESCAPED: "weakref.WeakSet[Instance]" = weakref.WeakSet()
"""Instances whose functions any call may reach (``InstanceTables.escaped``)."""

_everyone: "weakref.WeakSet[InstanceTables]" = weakref.WeakSet()
"""The tables of every live instance, for :meth:`InstanceTables.scrub`."""


def _may_escape(data: Any) -> bool:
    """Whether compiled code alone can hand a funcref of this module to another instance:
    through a table it imports, or an import, export or global whose type holds a funcref."""
    if any(i.kind == ExternKind.TABLE for i in data.imports):
        return True
    types = [data.types[i.type_id] for i in data.imports if i.type_id is not None]
    types += [data.func_type(e.index) for e in data.exports if e.kind == ExternKind.FUNC]
    if any(ValType.FUNCREF in (*t.params, *t.results) for t in types):
        return True
    return any(g.valtype == ValType.FUNCREF and (g.import_from is not None or g.mutable)
               for g in data.globals)

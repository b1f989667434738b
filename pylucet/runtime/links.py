"""What an instance is linked with, and what that asks of its life: the instances it imports
functions, tables, globals or memory from (``_providers``, kept alive; they refuse to close
while it lives) or can call into (``_linked``, and everyone sharing a table with it), its
imported globals and shared memory, and failed instantiations that live on through its tables.

Functions of the instance rather than methods, to keep ``runtime.instance`` about running.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING, List

from ..errors import InstantiationError, StateError
from . import instance as _i
from .instance_tables import ESCAPED

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance
    from .linker import Resolution
    from .memories import Memory


def link(inst: "Instance", imports: "Resolution") -> None:
    """Register ``inst`` with what its imports resolved to."""
    linked = {id(f.instance): f.instance for f in imports.funcs if not hasattr(f, "plan")}
    linked.update((id(t.owner), t.owner) for t in imports.tables if t.owner is not None)
    inst._linked = tuple(linked.values())
    owners = [g.owner for g in imports.globals]
    if imports.memory is not None:
        owners.append(imports.memory.owner)
    inst._providers = tuple({id(p): p for p in (*inst._linked, *owners)
                             if p is not None}.values())
    for provider in inst._providers:
        provider._check_open()
        if provider._importers is None:
            provider._importers = weakref.WeakSet()
            _i._by_vmctx[provider._slot.vmctx] = provider  # its hostcalls and faults come to us
        provider._importers.add(inst)
    if imports.tables:
        _i._by_vmctx[inst._slot.vmctx] = inst   # a sharer of the table may call our records


def wire_shared_memory(inst: "Instance") -> None:
    """Compiled memory.grow leaves for the host (``Builtin.MEMORY_GROW``), which grows
    every alias of the memory."""
    u = inst._page.u64
    u[_i._VM_GROW_LIBCALL] = _i._stubs.memory_grow_shared
    inst._memory._republish(inst._mem)  # type: ignore[union-attr]


def link_globals(inst: "Instance") -> None:
    """Fill the slots of the imported globals (a copy of an immutable one's value, the
    address of a mutable one's storage), then the defined globals that ``global.get`` one."""
    base = inst._slot.globals
    specs = inst._module.data.globals
    u64 = ctypes.c_uint64
    for spec, g in zip(specs, inst._global_imports):
        at = base + spec.offset
        if spec.by_reference:
            u64.from_address(at).value = g._address
        else:
            u64.from_address(at).value = u64.from_address(g._address).value
    for spec in specs[len(inst._global_imports):]:
        if spec.init_global is not None:
            source = base + specs[spec.init_global].offset
            u64.from_address(base + spec.offset).value = u64.from_address(source).value


def global_address(inst: "Instance", index: int) -> int:
    """Where global ``index``'s value is stored: in this slot, or for an imported mutable
    global, wherever the global it is linked to keeps it."""
    spec = inst._module.data.globals[index]
    if spec.by_reference:
        return inst._global_imports[index]._address
    return inst._slot.globals + spec.offset


def apply_active_data(inst: "Instance") -> None:
    """Write the data segments that instantiation applies (``ModuleData.active_data``), in
    order; the first that does not fit fails instantiation, those before it stay written."""
    vmctx, size = inst._slot.vmctx, inst.memory_size
    for seg in inst._module.data.active_data:
        offset = seg.offset
        if seg.offset_global is not None:
            offset = ctypes.c_uint32.from_address(
                global_address(inst, seg.offset_global)).value
        if offset + len(seg.data) > size:
            raise InstantiationError(f"module {inst._name!r}: out of bounds memory access "
                                     f"(data segment at {offset:#x}, {len(seg.data)} bytes, "
                                     f"memory of {size} bytes)")
        ctypes.memmove(vmctx + offset, seg.data, len(seg.data))


def share(inst: "Instance") -> "Memory":
    """The instance's memory as a :class:`Memory` others can import: imported, or its own
    heap made shared on first use (it then stays so until reset or close)."""
    with inst._kill_state.lock:        # (the state cannot change under us, nor race us)
        if inst._memory is None:
            inst._check_open()
            if inst._state in (_i._RUNNING, _i.State.YIELDING, _i.State.TERMINATING):
                raise StateError(f"cannot export the memory of {inst!r} while it runs")
            from .memories import Memory
            inst._memory = Memory._adopt(inst)
            wire_shared_memory(inst)
        return inst._memory


def keep_as_orphan(inst: "Instance") -> bool:
    """Keep a failed instantiation alive if a shared table holds its functions."""
    shared = [t for t in inst._refs.tables[:len(inst._refs._imported_tables)]
              if inst._refs.referenced_from(t)]
    if not shared or inst._state != _i._READY:
        return False
    for t in shared:
        t._keepalive.append(inst)
    return True


def release_abandoned(inst: "Instance") -> None:
    """After a call that did not return (trap, termination), nothing unwound the guest's
    frames: release this instance, and give back any callee it was inside of its own root
    and stack limit (pylucet_call_guest would have on the way out)."""
    page = inst._page.address
    inst._page.u64[_i._ROOT] = 0
    for callee in all_linked(inst):
        u = callee._page.u64
        if u[_i._ROOT] == page and callee._state != _i.State.CLOSED:
            u[_i._VM_STACK_LIMIT] = callee._slot.stack_limit
            u[_i._ROOT] = 0


def all_linked(inst: "Instance") -> List["Instance"]:
    """Every instance this one can call into, directly or through others: those whose
    functions or tables it imports, and those sharing a table with it (a reference one
    of them stores there may be called by any)."""
    seen: dict = {id(inst): inst}
    todo = _neighbours(inst)
    while todo:
        other = todo.pop()
        if id(other) not in seen:
            seen[id(other)] = other
            todo.extend(_neighbours(other))
    del seen[id(inst)]
    return list(seen.values())


def _neighbours(inst: "Instance") -> List["Instance"]:
    out = list(inst._linked)
    for t in inst._refs.tables:
        out.extend(i for i in t._users if i._state != _i.State.CLOSED)
    if ESCAPED:          # (rare) functions whose references went who knows where
        out.extend(i for i in ESCAPED if i._state != _i.State.CLOSED)
    return out


def close_orphans(inst: "Instance") -> None:
    """Failed instantiations that live on only through this instance's tables go first."""
    for t in inst._refs.tables[len(inst._refs._imported_tables):]:
        orphans, t._keepalive = t._keepalive, []
        for orphan in orphans:
            orphan.close()


def check_no_importers(inst: "Instance", what: str) -> None:
    if inst._importers is None:
        return
    live = [i for i in inst._importers if i._state != _i.State.CLOSED]
    if live:
        raise StateError(f"cannot {what} instance of {inst._name!r}: instance(s) "
                         f"{', '.join(repr(i._name) for i in live)} import its functions, "
                         f"globals or memory, which live in its slot; close them first")

"""Reference values at the host boundary, and the process-wide registries behind them.

* **Signature ids.** ``call_indirect`` compares the signature id in a function's FUNCREF record
  with the one its type expects (``abi.FUNCREF``). A table may hold functions of several modules,
  so ids are process-wide: equal function types get equal ids, whichever module they come from.
  Id 0 is never given out, so a wiped (zeroed) record matches no signature.
* **externref.** Guest code only moves an externref around; the value is a handle, the
  ``id()`` of a Python object the registry keeps alive. Each instance that receives an object
  holds it (counted once per instance); when the instance closes, its holds pass to the
  instances it shares state with, or are dropped. ``None`` is the null reference, handle 0.
* **funcref.** A funcref is the address of a FUNCREF record in some instance's slot; from
  Python it is the :class:`~pylucet.runtime.exports.Func` of that instance's function.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set

from ..wasm.types import FuncType

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance

_lock = threading.Lock()

# --- signature ids --------------------------------------------------------------------------------

_signatures: Dict[FuncType, int] = {}


def signature_id(t: FuncType) -> int:
    """The process-wide id of function type ``t`` (1, 2, ...)."""
    sid = _signatures.get(t)
    if sid is None:
        with _lock:
            sid = _signatures.setdefault(t, len(_signatures) + 1)
    return sid


# --- externref ------------------------------------------------------------------------------------

_objects: Dict[int, List[Any]] = {}     # handle -> [object, number of holders]


def extern_handle(obj: Any, holder: Set[int]) -> int:
    """The handle for ``obj`` as a guest value, held by ``holder`` (an instance's or a host
    table's set of handles) until it lets go."""
    if obj is None:
        return 0
    handle = id(obj)
    if handle not in holder:
        with _lock:
            entry = _objects.get(handle)
            if entry is None:
                _objects[handle] = [obj, 1]
            else:
                entry[1] += 1
            holder.add(handle)
    return handle


def extern_object(handle: int) -> Any:
    """The object behind a handle the guest gave back (None for null)."""
    if handle == 0:
        return None
    entry = _objects.get(handle)
    if entry is None:
        # a guest can only have handles the host gave it, and holds outlive their use; an
        # unknown one means guest code forged a reference, which compiled code cannot do
        raise ValueError(f"externref handle {handle:#x} names no live object")
    return entry[0]


def release_handles(holder: Set[int], heirs: Sequence[Set[int]] = ()) -> None:
    """``holder`` lets go of its objects; with ``heirs`` (live holders sharing its tables or
    globals), the first of them takes its holds over instead."""
    if heirs:
        heir = heirs[0]
        with _lock:
            for h in holder - heir:
                heir.add(h)
                _objects[h][1] += 1
    with _lock:
        for h in holder:
            entry = _objects.get(h)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _objects[h]
    holder.clear()


def live_externrefs() -> int:
    """How many objects guests hold (for tests and inspection)."""
    return len(_objects)


# --- funcref --------------------------------------------------------------------------------------

def func_of_record(address: int) -> Optional[Any]:
    """The Func a FUNCREF record stands for, or None if no live instance owns it."""
    if address == 0:
        return None
    from .region import instance_of_record
    found = instance_of_record(address)
    if found is None:
        raise ValueError(f"funcref {address:#x} belongs to no live instance")
    instance, func_index = found
    from .exports import Func
    data = instance.module.data
    return Func(instance, instance.module.func_name(func_index), func_index,
                data.func_type(func_index))


def record_of_func(func: Any, where: "Instance") -> int:
    """The record address for a Func passed as a funcref argument (None: null)."""
    if func is None:
        return 0
    from .exports import Func
    if not isinstance(func, Func):
        raise TypeError(f"a funcref is a pylucet Func (an instance's exported function) or "
                        f"None, got {type(func).__name__} {func!r}")
    address = func.instance._record_address(func.index)
    func.instance._refs.escaped = True     # it may now be stored anywhere: see scrub()
    return address

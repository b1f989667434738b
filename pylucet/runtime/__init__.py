"""The runtime: regions of sandbox slots, instances, and loading compiled modules.

Native pieces (libc bindings, the assembly stubs, the signal handler) live in their own modules
and are reached only through :class:`Instance` and the loader; this package re-exports the small
API a host uses::

    module = load("fib.so")
    with MmapRegion(4, Limits(heap_memory_size=1 << 20)) as region:
        with region.new_instance(module) as inst:
            inst.run("fib", 20)
"""

from __future__ import annotations

from ..errors import UnknownExport
from ..wasm.types import GlobalType, MemoryType, SizeLimits, ValType
from .exports import Exports, Func
from .globalvars import Global, Globals
from .instance import Instance, State, Yielded
from .killswitch import KillOutcome, KillSwitch
from .limits import Limits
from .linker import F32, F64, I32, I64, ExternRef, FuncRef, HostFunc, Linker
from .loader import LoadedModule, load
from .memories import Memory
from .region import MmapRegion
from .tables import Table
from .vmctx import Vmctx

__all__ = ["Limits", "MmapRegion", "Instance", "State", "Globals", "LoadedModule", "load",
           "UnknownExport", "Yielded", "Linker", "HostFunc", "Vmctx", "KillSwitch",
           "KillOutcome", "I32", "I64", "F32", "F64", "Func", "Exports", "Table", "Global",
           "Memory", "GlobalType", "MemoryType", "SizeLimits", "ValType", "FuncRef", "ExternRef"]

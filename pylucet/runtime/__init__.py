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

from .instance import Globals, Instance, State, UnknownExport
from .limits import Limits
from .loader import LoadedModule, load
from .region import MmapRegion

__all__ = ["Limits", "MmapRegion", "Instance", "State", "Globals", "LoadedModule", "load",
           "UnknownExport"]

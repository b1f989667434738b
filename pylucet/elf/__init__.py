"""ELF64 shared objects for compiled modules: written without a linker, read without dlopen.

``writer`` turns machine code plus module data into a ``.so`` that glibc's ``dlopen`` and the
binutils/gdb/perf tool chain accept; ``reader`` reads one back for tools and tests; ``structs``
holds the gABI record layouts both share. The names below are imported on first use: the runtime's
loader reads artifacts and must not pay for (or drag in) the writer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ELFFile", "SharedObjectBuilder", "read_module_data", "write_shared_object"]
_FROM = {"ELFFile": "reader", "read_module_data": "reader", "SharedObjectBuilder": "writer",
         "write_shared_object": "writer"}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

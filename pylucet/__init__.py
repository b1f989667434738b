"""pylucet: a WebAssembly ahead-of-time compiler and sandboxing runtime in pure Python.

The small public API::

    import pylucet
    so = pylucet.compile(wat_or_wasm, "fib.so")     # ELF shared object (bytes), also written out
    module = pylucet.load("fib.so")                 # or pylucet.load(so), from the bytes
    with pylucet.MmapRegion(4) as region:
        with region.new_instance(module) as inst:
            inst.run("fib", 20)

Both halves are imported on first use (module ``__getattr__``): compiling alone never assembles
stubs or installs signal handlers, and a host that only loads ``.so`` files never imports the
compiler, the WAT parser or the validator (``import pylucet.runtime`` stays fast).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, List, Union

from .errors import (CompileError, Error, FatalFault, InstantiationError, InvalidModule,
                     LimitsExceeded, LinkError, LoadError, MalformedModule, MemoryAccessError,
                     RegionFull, StateError, StubError, Terminate, Terminated, Trap,
                     UnknownExport, Unsupported, UnsupportedProposal)
from .module.traps import TrapCode

if TYPE_CHECKING:  # pragma: no cover
    from .compiler.driver import compile, compile_module
    from .runtime import Instance, Limits, LoadedModule, MmapRegion

__all__ = [
    "WasiConfig", "wasi",
    "compile", "compile_module", "load", "Limits", "MmapRegion", "Instance", "LoadedModule",
    "TrapCode", "Error", "CompileError", "MalformedModule", "InvalidModule", "Unsupported",
    "LoadError", "LinkError", "LimitsExceeded", "RegionFull", "InstantiationError", "Trap",
    "FatalFault", "Terminated", "Terminate", "MemoryAccessError", "StateError", "StubError",
    "Linker", "HostFunc", "Vmctx", "Yielded", "KillSwitch", "KillOutcome", "State", "I32", "I64",
    "F32", "F64", "UnknownExport", "Func", "Table", "Global", "Memory", "GlobalType",
    "MemoryType", "SizeLimits", "ValType", "FuncRef", "ExternRef",
]
__version__ = "0.1.0"

_RUNTIME_NAMES = ("Limits", "MmapRegion", "Instance", "LoadedModule", "Linker", "HostFunc",
                  "Vmctx", "Yielded", "KillSwitch", "KillOutcome", "State", "I32", "I64", "F32",
                  "F64", "Func", "Table", "Global", "Memory", "GlobalType", "MemoryType",
                  "SizeLimits", "ValType", "FuncRef", "ExternRef")
_COMPILER_NAMES = ("compile", "compile_module")


def load(artifact: Union[str, "os.PathLike[str]", bytes]) -> "LoadedModule":
    """Load a compiled shared object from a path, or from its bytes; always the module that is
    in the file now, even when an older one was loaded from the same path
    (:func:`pylucet.runtime.loader.load` says how).

    The sandbox holds for code pylucet compiled; the artifact itself is native code that
    ``dlopen`` maps and runs, so load only artifacts you compiled or trust, as with Lucet.
    """
    from .runtime.loader import load as _load
    return _load(artifact)


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_NAMES:
        from . import runtime
        return getattr(runtime, name)
    if name in _COMPILER_NAMES:
        from .compiler import driver
        return getattr(driver, name)
    if name == "WasiConfig":
        from .wasi import WasiConfig
        return WasiConfig
    if name == "wasi":
        import importlib
        return importlib.import_module(".wasi", __name__)
    raise AttributeError(f"module 'pylucet' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))

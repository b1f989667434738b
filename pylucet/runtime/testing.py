"""Running raw machine code as a module, without the compiler or an ELF file.

Like Lucet's mock module builder: a test writes a few guest functions in assembly, describes them
with a hand-built :class:`~pylucet.module.spec.ModuleData`, and gets the same
:class:`~pylucet.runtime.loader.LoadedModule` a compiled artifact would give, so runtime and
compiler can each be tested on their own. :func:`mock_module` does the whole of that from a list
of :class:`MockFunction`.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from ..module.abi import WASM_PAGE_SIZE
from ..module.spec import (ElemSpec, ExportSpec, FunctionSpec, GlobalSpec, HeapSpec, ModuleData,
                           TableSpec)
from ..module.traps import TrapCode, TrapSite, TrapTable
from ..wasm.types import ExternKind, FuncType, ValType
from . import libc
from .limits import WASM32_MAX_MEMORY, Limits, page_round
from .loader import LoadedModule


def load_code(code: bytes, data: ModuleData) -> LoadedModule:
    """Map ``code`` read+execute and wrap it with ``data``.

    Function ``code_offset``\\ s are relative to the start of ``code``. The mapping is private to
    the returned module and unmapped when the module and all its instances are gone.
    """
    size = page_round(max(len(code), 1))
    base = libc.mmap(0, size, libc.PROT_READ | libc.PROT_WRITE,
                     libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0)
    try:
        ctypes.memmove(base, bytes(code), len(code))
        libc.mprotect(base, size, libc.PROT_READ | libc.PROT_EXEC)
        return LoadedModule(data, base, len(code), release=lambda: libc.munmap(base, size))
    except BaseException:
        libc.munmap(base, size)
        raise


# --- a mock module builder: guest functions in assembly ------------------------------------------

DEFAULT_HEAP = HeapSpec(initial_size=WASM_PAGE_SIZE, max_size=None,
                        reserved_size=WASM32_MAX_MEMORY,
                        guard_size=Limits().heap_address_space_size - WASM32_MAX_MEMORY)
"""One wasm page to start with, and the 4 GiB + 4 GiB of address space the compiler relies on
(exactly what the default limits reserve)."""

_ALIGN = 16


@dataclass
class MockFunction:
    """A guest function written in assembly (Intel syntax, keystone).

    The guest ABI is SysV with r14 = vmctx. ``traps`` maps labels in ``asm`` to the trap code of
    the instruction at that label; the trap site's ``wasm_offset`` is a stand-in equal to the code
    offset. Exported under ``name`` unless ``export`` is False.
    """

    name: str
    asm: str
    params: Sequence[ValType] = ()
    results: Sequence[ValType] = ()
    traps: Mapping[str, TrapCode] = field(default_factory=dict)
    export: bool = True


def assemble(source: str, labels: Sequence[str] = ()) -> Tuple[bytes, Dict[str, int]]:
    """Assemble x86-64 ``source`` at address 0; also return the offsets of ``labels``.

    The offsets come from keystone itself: a ``.quad label`` per label is appended after the code
    and read back, so forward jumps and label arithmetic behave as in any assembler.
    """
    from keystone import KS_ARCH_X86, KS_MODE_64, Ks
    ks = Ks(KS_ARCH_X86, KS_MODE_64)
    code, _ = ks.asm(source, 0)
    code = bytes(code or b"")
    if not labels:
        return code, {}
    both, _ = ks.asm(source + "\n" + "".join(f".quad {label}\n" for label in labels), 0)
    tail = bytes(both)[len(code):]
    offsets = struct.unpack(f"<{len(labels)}Q", tail)
    return code, dict(zip(labels, offsets))


def mock_module(functions: Sequence[MockFunction], *, name: str = "mock",
                heap: Optional[HeapSpec] = DEFAULT_HEAP, globals: Sequence[GlobalSpec] = (),
                exported_globals: Mapping[str, int] = {}, tables: Sequence[TableSpec] = (),
                elems: Sequence[ElemSpec] = (),
                sparse_data: Optional[Dict[int, bytes]] = None, start: Optional[int] = None,
                data_error: Optional[str] = None,
                features: FrozenSet[str] = frozenset()) -> LoadedModule:
    """Assemble ``functions`` (function i has wasm index i) into a module, like Lucet's
    ``MockModuleBuilder``: the runtime can then be tested with no compiler involved."""
    text = bytearray()
    types: List[FuncType] = []
    specs: List[FunctionSpec] = []
    exports: List[ExportSpec] = []
    for index, f in enumerate(functions):
        code, labels = assemble(f.asm, list(f.traps))
        ftype = FuncType(tuple(f.params), tuple(f.results))
        if ftype not in types:
            types.append(ftype)
        text += b"\xcc" * (-len(text) % _ALIGN)
        sites = sorted(TrapSite(labels[label], code_, labels[label])
                       for label, code_ in f.traps.items())
        specs.append(FunctionSpec(func_index=index, name=f.name, type_id=types.index(ftype),
                                  code_offset=len(text), code_size=len(code),
                                  traps=TrapTable(sites)))
        text += code
        if f.export:
            exports.append(ExportSpec(f.name, ExternKind.FUNC, index))
    exports += [ExportSpec(n, ExternKind.GLOBAL, i) for n, i in exported_globals.items()]
    # what the compiler would give records: exported functions and element segment items
    funcrefs = sorted({e.index for e in exports if e.kind == ExternKind.FUNC}
                      | {f for seg in elems for f in seg.items if f is not None})
    data = ModuleData(name=name, heap=heap, types=types, globals=list(globals),
                      functions=specs, imports=[], exports=exports, tables=list(tables),
                      sparse_data=dict(sparse_data or {}), start=start, data_error=data_error,
                      features=features, funcrefs=funcrefs, elems=list(elems))
    return load_code(bytes(text), data)

"""Typed structures for a decoded WebAssembly module.

The decoder (``wasm.decoder``) produces a :class:`Module`; the WAT parser produces binary bytes that
the decoder reads, so there is exactly one in-memory form. Function bodies stay as byte ranges of
the original binary and are decoded into instruction lists one function at a time
(:func:`pylucet.wasm.decoder.decode_body`), so a 30 MB module never holds every instruction at once.

An instruction is the tuple ``(op, imm, offset)``: ``op`` an :class:`~pylucet.wasm.opcodes.Op`,
``imm`` its immediate in the form the opcode table names (see ``wasm.opcodes``), and ``offset``
the byte offset of the opcode in the module binary (what traps and errors report).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union


class ValType(enum.IntEnum):
    """Value types, numbered by their binary encoding."""

    I32 = 0x7F
    I64 = 0x7E
    F32 = 0x7D
    F64 = 0x7C
    V128 = 0x7B
    FUNCREF = 0x70
    EXTERNREF = 0x6F

    @property
    def text(self) -> str:
        """The WAT spelling (``i32``, ``funcref``...)."""
        return self.name.lower()

    @property
    def is_ref(self) -> bool:
        return self in (ValType.FUNCREF, ValType.EXTERNREF)

    @property
    def is_float(self) -> bool:
        return self in (ValType.F32, ValType.F64)


class ExternKind(enum.IntEnum):
    FUNC = 0
    TABLE = 1
    MEMORY = 2
    GLOBAL = 3


@dataclass(frozen=True)
class FuncType:
    params: Tuple[ValType, ...]
    results: Tuple[ValType, ...]

    def __str__(self) -> str:
        p = " ".join(t.text for t in self.params)
        r = " ".join(t.text for t in self.results)
        return f"[{p}] -> [{r}]"


@dataclass(frozen=True)
class SizeLimits:
    """``min`` and optional ``max``, in wasm pages (memories) or elements (tables)."""

    min: int
    max: Optional[int] = None


@dataclass(frozen=True)
class TableType:
    elem: ValType
    limits: SizeLimits


@dataclass(frozen=True)
class MemoryType:
    limits: SizeLimits


@dataclass(frozen=True)
class GlobalType:
    valtype: ValType
    mutable: bool


ImportDesc = Union[int, TableType, MemoryType, GlobalType]
"""An imported function's type index, or the imported table/memory/global's type."""


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: ExternKind
    desc: ImportDesc


@dataclass(frozen=True)
class Export:
    name: str
    kind: ExternKind
    index: int


Instr = Tuple[int, object, int]
"""``(op, imm, offset)``; see the module docstring."""

ConstExpr = Tuple[Instr, ...]
"""A constant expression's instructions, without the final ``end``."""


@dataclass(frozen=True)
class Global:
    type: GlobalType
    init: ConstExpr


class SegmentMode(enum.IntEnum):
    ACTIVE = 0
    PASSIVE = 1
    DECLARATIVE = 2


@dataclass(frozen=True)
class ElemSegment:
    mode: SegmentMode
    elem_type: ValType
    init: Tuple[ConstExpr, ...]   # each a ref.func / ref.null / global.get expression
    table: int = 0
    offset: Optional[ConstExpr] = None   # for ACTIVE segments

    def func_indices(self) -> Optional[List[Optional[int]]]:
        """The function index of each element (None for ref.null), or None if some element is
        not a plain ``ref.func``/``ref.null``."""
        from .opcodes import Op
        out: List[Optional[int]] = []
        for expr in self.init:
            if len(expr) != 1:
                return None
            op, imm, _ = expr[0]
            if op == Op.REF_FUNC:
                out.append(imm)  # type: ignore[arg-type]
            elif op == Op.REF_NULL:
                out.append(None)
            else:
                return None
        return out


@dataclass(frozen=True)
class DataSegment:
    mode: SegmentMode
    data: bytes
    memory: int = 0
    offset: Optional[ConstExpr] = None   # for ACTIVE segments


@dataclass(frozen=True)
class FunctionBody:
    """A defined function's code, still in binary form.

    ``locals`` are the declared locals only (not the parameters), expanded one entry per local.
    ``start``/``end`` delimit the instruction bytes (after the locals, up to and including the final
    ``end`` opcode) within the module binary.
    """

    locals: Tuple[ValType, ...]
    start: int
    end: int


@dataclass
class Names:
    """The custom ``name`` section, as far as it was present and well-formed."""

    module: Optional[str] = None
    functions: Dict[int, str] = field(default_factory=dict)
    locals: Dict[int, Dict[int, str]] = field(default_factory=dict)


@dataclass
class Module:
    """A decoded module. Indices follow the spec: imports come first in each index space."""

    binary: bytes
    types: List[FuncType] = field(default_factory=list)
    imports: List[Import] = field(default_factory=list)
    funcs: List[int] = field(default_factory=list)          # type index of each defined function
    tables: List[TableType] = field(default_factory=list)   # defined tables
    memories: List[MemoryType] = field(default_factory=list)
    globals: List[Global] = field(default_factory=list)
    exports: List[Export] = field(default_factory=list)
    start: Optional[int] = None
    elems: List[ElemSegment] = field(default_factory=list)
    datas: List[DataSegment] = field(default_factory=list)
    data_count: Optional[int] = None
    codes: List[FunctionBody] = field(default_factory=list)
    customs: List[Tuple[str, bytes]] = field(default_factory=list)
    names: Names = field(default_factory=Names)

    # --- index spaces, imports first -----------------------------------------------------------
    def imported(self, kind: ExternKind) -> List[Import]:
        return [i for i in self.imports if i.kind == kind]

    @property
    def num_imported_funcs(self) -> int:
        return sum(1 for i in self.imports if i.kind == ExternKind.FUNC)

    def func_type(self, func_index: int) -> FuncType:
        """The type of function ``func_index`` in the whole function index space."""
        imported = [i.desc for i in self.imports if i.kind == ExternKind.FUNC]
        if func_index < len(imported):
            return self.types[imported[func_index]]  # type: ignore[index]
        return self.types[self.funcs[func_index - len(imported)]]

    def declared_funcrefs(self) -> List[int]:
        """Functions that may become references (``ref.func`` inside bodies may only name
        these): those referenced from outside any function -- element segments, global
        initialisers, exports -- in ascending order."""
        from .opcodes import Op
        refs = {e.index for e in self.exports if e.kind == ExternKind.FUNC}
        exprs: List[ConstExpr] = [g.init for g in self.globals]
        for seg in self.elems:
            exprs.extend(seg.init)
        for expr in exprs:
            for op, imm, _ in expr:
                if op == Op.REF_FUNC:
                    refs.add(imm)  # type: ignore[arg-type]
        return sorted(refs)

    def all_tables(self) -> List[TableType]:
        return [i.desc for i in self.imports if i.kind == ExternKind.TABLE] + self.tables  # type: ignore[misc]

    def all_memories(self) -> List[MemoryType]:
        return [i.desc for i in self.imports if i.kind == ExternKind.MEMORY] + self.memories  # type: ignore[misc]

    def all_globals(self) -> List[GlobalType]:
        return ([i.desc for i in self.imports if i.kind == ExternKind.GLOBAL]  # type: ignore[misc]
                + [g.type for g in self.globals])

    def func_name(self, func_index: int) -> str:
        """A human name: the name section's, else an export name, else the index."""
        name = self.names.functions.get(func_index)
        if name:
            return name
        for e in self.exports:
            if e.kind == ExternKind.FUNC and e.index == func_index:
                return e.name
        return str(func_index)

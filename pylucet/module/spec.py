"""Module data: everything the runtime needs to know about a compiled module besides its code.

The compiler fills a :class:`ModuleData`; ``module.serialize`` turns it into the bytes behind the
artifact's ``pylucet_module`` symbol; the loader reads them back. Like Lucet's ``lucet-module``,
this package imports nothing else of pylucet except the wasm value types, so compiler and runtime
can both depend on it without depending on each other.

Addresses are never stored: code is named by its offset in ``.text`` and the loader adds the
load base, so the artifact needs no relocations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Tuple

from ..wasm.types import ExternKind, FuncType, SegmentMode, ValType
from .traps import TrapTable

SPARSE_PAGE_SIZE = 4096


@dataclass(frozen=True)
class HeapSpec:
    """The linear memory a module asks for, in bytes.

    ``reserved_size`` and ``guard_size`` are the address space the compiled code relies on being
    inaccessible past the heap: code without bounds checks is only safe if the region reserves at
    least ``reserved_size + guard_size`` for the heap. The loader refuses a region that doesn't.
    """

    initial_size: int
    max_size: Optional[int]
    reserved_size: int
    guard_size: int
    imported: bool = False
    """The memory is imported: the sizes are what the import asks for (the memory linked to it
    is at least ``initial_size``, at most ``max_size``), and the instance's heap maps it."""


@dataclass(frozen=True)
class GlobalSpec:
    valtype: ValType
    mutable: bool
    init: int                   # initial value as raw bits (i32/i64 two's complement, float IEEE)
    offset: int                 # byte offset in the globals area
    import_from: Optional[Tuple[str, str]] = None   # (module, name) for an imported global
    init_global: Optional[int] = None  # initialised by ``global.get`` of this (imported) global
    init_func: Optional[int] = None    # initialised by ``ref.func`` of this function

    @property
    def by_reference(self) -> bool:
        """An imported mutable global: its slot holds the address of the exporter's storage,
        so that writes on either side are seen by the other (an immutable one is copied)."""
        return self.mutable and self.import_from is not None


@dataclass(frozen=True)
class DataSpec:
    """An active data segment written at instantiation rather than in the module's initial heap
    image: one whose memory is imported (it lands in memory others share) or whose offset is
    ``global.get`` of an imported global (known only once linked)."""

    offset: int                        # the offset, or 0 with ``offset_global``
    offset_global: Optional[int]       # the offset is this (imported) global's value
    data: bytes


@dataclass
class FunctionSpec:
    """One defined function's machine code and what is needed to run it and explain its traps."""

    func_index: int             # in the wasm function index space (imports first)
    name: str                   # human name (name section, export, or index)
    type_id: int                # index into ModuleData.types
    code_offset: int            # offset of the function's code in .text
    code_size: int
    traps: TrapTable
    wasm_offset: int = 0        # byte offset of the body in the wasm binary

    @property
    def symbol(self) -> str:
        from .abi import FUNC_SYMBOL_PREFIX
        return FUNC_SYMBOL_PREFIX + symbol_safe(self.name)


@dataclass(frozen=True)
class ImportSpec:
    module: str
    name: str
    kind: ExternKind
    type_id: Optional[int] = None   # for functions: index into ModuleData.types
    table: Optional["TableSpec"] = None   # for tables: the element type and limits asked for


@dataclass(frozen=True)
class ExportSpec:
    name: str
    kind: ExternKind
    index: int


@dataclass(frozen=True)
class TableSpec:
    """A table the module defines (imported ones are ImportSpecs)."""

    elem: ValType
    initial: int
    max: Optional[int]


@dataclass(frozen=True)
class ElemSpec:
    """An element segment. Instantiation applies the active ones in order (``table`` of the
    whole table index space, at ``offset`` or at the value of global ``offset_global``) and
    then treats them, like the declarative ones, as dropped; ``table.init`` reads the passive
    ones until ``elem.drop``."""

    mode: SegmentMode
    elem_type: ValType
    items: Tuple[Optional[int], ...]       # a function index per element; None is null
    table: int = 0
    offset: Optional[int] = None           # constant offset (active segments)
    offset_global: Optional[int] = None    # ``global.get`` offset (active segments)
    item_globals: Tuple[Tuple[int, int], ...] = ()
    """(position, global) for each element that is ``global.get`` of an imported global: its
    value is read at instantiation (``items`` holds None there)."""


@dataclass
class ModuleData:
    name: Optional[str]
    heap: Optional[HeapSpec]
    types: List[FuncType]                  # canonical (deduplicated) signatures; id = index
    globals: List[GlobalSpec]
    functions: List[FunctionSpec]          # defined functions, in index order
    imports: List[ImportSpec]
    exports: List[ExportSpec]
    tables: List[TableSpec]                # defined tables (after the imported ones)
    sparse_data: Dict[int, bytes]          # heap page index (4 KiB) -> that page's initial bytes
    start: Optional[int] = None            # start function index
    features: FrozenSet[str] = frozenset() # CPU features the code uses ("popcnt", "lzcnt", "bmi1"...)
    data_error: Optional[str] = None       # an active data segment that does not fit: instantiation
                                           # copies what precedes it, then fails with this message
    interrupt_checks: bool = True          # compiled with interrupt checks at entries and loops
                                           # (without, a timeout or kill switch cannot stop it)
    funcrefs: List[int] = field(default_factory=list)
    """Defined functions that get a FUNCREF record (after the imports'), in record order."""
    elems: List[ElemSpec] = field(default_factory=list)
    passive_data: List[bytes] = field(default_factory=list)
    """Per data segment, in index order, what ``memory.init`` can copy from it once the module
    is instantiated: a passive segment's bytes; b"" for an active one, which instantiation
    drops after applying it (its bytes are in ``sparse_data``)."""
    active_data: List[DataSpec] = field(default_factory=list)
    """Active data segments applied at instantiation, in order; when there are any, every active
    segment is one (``sparse_data`` is empty), so their order is kept."""

    @property
    def display_name(self) -> str:
        """The name messages use: the module's own, or ``'<anonymous>'``."""
        return self.name or "<anonymous>"

    @property
    def num_imported_funcs(self) -> int:
        return sum(1 for i in self.imports if i.kind == ExternKind.FUNC)

    def export(self, name: str, kind: ExternKind = ExternKind.FUNC) -> Optional[ExportSpec]:
        for e in self.exports:
            if e.name == name and e.kind == kind:
                return e
        return None

    def function(self, func_index: int) -> FunctionSpec:
        """The defined function with wasm index ``func_index``."""
        return self.functions[func_index - self.num_imported_funcs]

    def func_type(self, func_index: int) -> FuncType:
        n = self.num_imported_funcs
        if func_index < n:
            imp = [i for i in self.imports if i.kind == ExternKind.FUNC][func_index]
            return self.types[imp.type_id]  # type: ignore[index]
        return self.types[self.functions[func_index - n].type_id]


def symbol_safe(name: str) -> str:
    """A function name made fit for an ELF symbol and for gdb: anything but [A-Za-z0-9_.$]
    becomes '_'. Names stay readable; uniqueness is the compiler's job (it appends the index
    on a clash)."""
    return "".join(c if (c.isalnum() and c.isascii()) or c in "_.$" else "_" for c in name)

"""What the code generator needs to know about the module around the function it compiles.

Computed once per module, before any function is compiled, so per-function code generation
only does list lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..module.abi import slot_size
from ..wasm.types import ExternKind, FuncType, Module, ValType


@dataclass
class ModuleEnv:
    types: List[FuncType]
    """Canonical signatures: equal function types share one entry (so structurally equal types
    from different type indices match, as the spec requires). Becomes ``ModuleData.types``; the
    runtime gives each a process-wide signature id, which ``call_indirect`` finds through
    ``VMCTX_TYPE_IDS`` by this index and compares with the record's."""
    type_ids: List[int]
    """Canonical type id of each wasm type index."""
    func_types: List[FuncType]
    """Type of every function in the function index space (imports first)."""
    func_type_ids: List[int]
    """Canonical type id of every function in the function index space."""
    num_imported_funcs: int
    table_types: List[ValType]
    """Element type of every table, imported ones first."""
    global_types: List[ValType]
    """Type of every global in the global index space (imports first)."""
    global_offsets: List[int]
    """Byte offset of each global in the globals area."""
    global_by_ref: List[bool]
    """Whether each global's slot holds the address of its storage rather than its value: so
    for an imported mutable global, whose writes the exporter must see (``GlobalSpec``)."""
    funcrefs: List[int] = None  # type: ignore[assignment]
    """The defined functions that can become references (``Module.declared_funcrefs``), which
    get a FUNCREF record after the import entries: ``ModuleData.funcrefs``."""
    funcref_slot: Dict[int, int] = None  # type: ignore[assignment]
    """Record index (in the vmctx's FUNCREF array) of every function that can become a
    reference: import i is record i, ``funcrefs[k]`` is record imports + k."""
    interrupt_checks: bool = True
    """Test the interrupt flag at every function entry and loop iteration."""

    @classmethod
    def from_module(cls, module: Module) -> "ModuleEnv":
        canonical: Dict[FuncType, int] = {}
        types: List[FuncType] = []
        type_ids: List[int] = []
        for t in module.types:
            tid = canonical.get(t)
            if tid is None:
                tid = canonical[t] = len(types)
                types.append(t)
            type_ids.append(tid)
        func_type_indices: List[int] = [
            i.desc for i in module.imports if i.kind == ExternKind.FUNC] + list(module.funcs)  # type: ignore[misc]
        all_globals = module.all_globals()
        global_types = [g.valtype for g in all_globals]
        imported = len(module.imported(ExternKind.GLOBAL))
        offsets: List[int] = []
        pos = 0
        for vt in global_types:
            size = slot_size(vt)
            pos = (pos + size - 1) & -size
            offsets.append(pos)
            pos += size
        nimp = module.num_imported_funcs
        funcrefs = [f for f in module.declared_funcrefs() if f >= nimp]
        slots = {f: f for f in range(nimp)}
        slots.update((f, nimp + k) for k, f in enumerate(funcrefs))
        return cls(
            funcrefs=funcrefs,
            funcref_slot=slots,
            types=types,
            type_ids=type_ids,
            func_types=[module.types[t] for t in func_type_indices],
            func_type_ids=[type_ids[t] for t in func_type_indices],
            num_imported_funcs=nimp,
            table_types=[t.elem for t in module.all_tables()],
            global_types=global_types,
            global_offsets=offsets,
            global_by_ref=[k < imported and g.mutable for k, g in enumerate(all_globals)],
        )

    def block_type(self, blocktype: object) -> Tuple[Tuple[ValType, ...], Tuple[ValType, ...]]:
        """(params, results) of a block type immediate."""
        if blocktype is None:
            return (), ()
        if isinstance(blocktype, ValType):
            return (), (blocktype,)
        t = self.types[self.type_ids[blocktype]]  # type: ignore[index]
        return t.params, t.results

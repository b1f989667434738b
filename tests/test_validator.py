"""Validator tests: hand-built modules for each rule, then the spec suite's assert_invalid cases.

The hand-built part needs neither the decoder nor the WAT parser, so it pins the validator's
behaviour independently of them; the spec part checks the error wording the suite expects.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import pytest

from pylucet.errors import InvalidModule
from pylucet.wasm.opcodes import BY_NAME, OPS, Imm, Op
from pylucet.wasm.types import (DataSegment, ElemSegment, Export, ExternKind, FuncType,
                                FunctionBody, Global, GlobalType, Import, MemoryType, Module,
                                Names, SegmentMode, SizeLimits, TableType, ValType)
from pylucet.wasm.validator import Validator

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
FUNCREF, EXTERNREF = ValType.FUNCREF, ValType.EXTERNREF

MEM = MemoryType(SizeLimits(1))
FTAB = TableType(FUNCREF, SizeLimits(1))
XTAB = TableType(EXTERNREF, SizeLimits(1))


# --- building modules by hand ---------------------------------------------------------------------

def code(*ops: object) -> List[Tuple[int, object, int]]:
    """Instructions from ``"mnemonic"`` or ``("mnemonic", imm)`` items; offsets count up."""
    out = []
    for i, item in enumerate(ops):
        name, imm = (item, None) if isinstance(item, str) else item
        op = Op.SELECT_T if name == "select_t" else BY_NAME[name].code
        out.append((op, imm, i))
    return out


def module(types: Sequence[FuncType] = (), funcs: Sequence[int] = (), **fields: object) -> Module:
    """A module whose every defined function has no declared locals unless ``locals`` says."""
    locals_ = fields.pop("locals", ())
    return Module(binary=b"", types=list(types), funcs=list(funcs),
                  codes=[FunctionBody(tuple(locals_), 0, 0) for _ in funcs],
                  **fields)


def check_func(body: Iterable[object], params: Sequence[ValType] = (),
               results: Sequence[ValType] = (), **fields: object) -> int:
    """Validate a module with one function ``body`` (the final ``end`` is added here)."""
    types = [FuncType(tuple(params), tuple(results))] + list(fields.pop("types", []))
    nimports = sum(1 for i in fields.get("imports", ()) if i.kind == ExternKind.FUNC)
    extra = list(fields.pop("funcs", []))
    m = module(types, [0] + extra, **fields)
    v = Validator(m)
    v.validate_module()
    return v.validate_function(nimports, code(*body, "end"))


def invalid(reason: str, fn, *args, **kwargs) -> InvalidModule:
    with pytest.raises(InvalidModule) as info:
        fn(*args, **kwargs)
    assert info.value.reason.startswith(reason), info.value.reason
    return info.value


def check_module(**fields: object) -> None:
    Validator(module(**fields)).validate_module()


# --- module-level rules ---------------------------------------------------------------------------

def test_unknown_type_of_function():
    invalid("unknown type", check_module, types=[], funcs=[0])


def test_imported_function_type_must_exist():
    invalid("unknown type", check_module, imports=[Import("m", "f", ExternKind.FUNC, 3)])


@pytest.mark.parametrize("limits,reason", [
    (SizeLimits(65537), "memory size must be at most 65536 pages (4GiB)"),
    (SizeLimits(0, 65537), "memory size must be at most 65536 pages (4GiB)"),
    (SizeLimits(2, 1), "size minimum must not be greater than maximum"),
])
def test_memory_limits(limits, reason):
    invalid(reason, check_module, memories=[MemoryType(limits)])
    imported = Import("m", "mem", ExternKind.MEMORY, MemoryType(limits))
    invalid(reason, check_module, imports=[imported])


def test_memory_limits_at_the_bound_are_fine():
    check_module(memories=[MemoryType(SizeLimits(65536, 65536))])


def test_table_limits():
    invalid("size minimum must not be greater than maximum", check_module,
            tables=[TableType(FUNCREF, SizeLimits(3, 2))])
    invalid("table size", check_module, tables=[TableType(FUNCREF, SizeLimits(2 ** 32))])
    check_module(tables=[TableType(FUNCREF, SizeLimits(0, 2 ** 32 - 1)), XTAB])
    invalid("size minimum must not be greater than maximum", check_module,
            imports=[Import("m", "t", ExternKind.TABLE, TableType(FUNCREF, SizeLimits(3, 2)))])


def test_multiple_memories():
    invalid("multiple memories", check_module, memories=[MEM, MEM])
    invalid("multiple memories", check_module, memories=[MEM],
            imports=[Import("m", "mem", ExternKind.MEMORY, MEM)])


def _global(t: ValType, *init, mutable: bool = False) -> Global:
    return Global(GlobalType(t, mutable), tuple(code(*init)))


IMPORTED_I32 = Import("m", "g", ExternKind.GLOBAL, GlobalType(I32, False))
IMPORTED_MUT_I32 = Import("m", "gm", ExternKind.GLOBAL, GlobalType(I32, True))


@pytest.mark.parametrize("glob,imports", [
    (_global(I32, ("i32.const", 1)), []),
    (_global(I64, ("i64.const", 1), mutable=True), []),
    (_global(F32, ("f32.const", 0)), []),
    (_global(F64, ("f64.const", 0)), []),
    (_global(FUNCREF, ("ref.null", FUNCREF)), []),
    (_global(EXTERNREF, ("ref.null", EXTERNREF)), []),
    (_global(FUNCREF, ("ref.func", 0)), []),
    (_global(I32, ("global.get", 0)), [IMPORTED_I32]),
])
def test_valid_global_initialisers(glob, imports):
    check_module(types=[FuncType((), ())], funcs=[0], globals=[glob], imports=imports)


@pytest.mark.parametrize("glob,imports,reason", [
    (_global(F32, ("f32.const", 0), "f32.neg"), [], "constant expression required"),
    (_global(I32, "nop"), [], "constant expression required"),
    (_global(I32, ("i32.const", 0), "nop"), [], "constant expression required"),
    (_global(I32, ("local.get", 0)), [], "constant expression required"),
    (_global(I32, ("global.get", 0)), [IMPORTED_MUT_I32], "constant expression required"),
    (_global(I32), [], "type mismatch"),
    (_global(I32, ("i64.const", 0)), [], "type mismatch"),
    (_global(I32, ("i32.const", 0), ("i32.const", 0)), [], "type mismatch"),
    (_global(I32, ("i32.const", 0), ("global.get", 0)), [IMPORTED_I32], "type mismatch"),
    (_global(FUNCREF, ("ref.null", EXTERNREF)), [], "type mismatch"),
    (_global(I32, ("global.get", 0)), [], "unknown global"),
    (_global(I32, ("global.get", 1)), [IMPORTED_I32], "unknown global"),
    (_global(FUNCREF, ("ref.func", 5)), [], "unknown function"),
])
def test_invalid_global_initialisers(glob, imports, reason):
    invalid(reason, check_module, types=[FuncType((), ())], funcs=[0], globals=[glob],
            imports=imports)


def test_global_get_of_defined_global_is_unknown_in_initialisers():
    invalid("unknown global", check_module,
            globals=[_global(I32, ("i32.const", 0)), _global(I32, ("global.get", 0))])


def test_exports():
    base = dict(types=[FuncType((), ())], funcs=[0], memories=[MEM], tables=[FTAB],
                globals=[_global(I32, ("i32.const", 0))])
    check_module(**base, exports=[Export(kind.name, kind, 0) for kind in ExternKind])
    invalid("duplicate export name", check_module, **base,
            exports=[Export("a", ExternKind.FUNC, 0), Export("a", ExternKind.MEMORY, 0)])
    for kind, what in [(ExternKind.FUNC, "function"), (ExternKind.TABLE, "table"),
                       (ExternKind.MEMORY, "memory"), (ExternKind.GLOBAL, "global")]:
        invalid(f"unknown {what} 1", check_module, **base, exports=[Export("x", kind, 1)])


def test_start_function():
    check_module(types=[FuncType((), ())], funcs=[0], start=0)
    invalid("unknown function", check_module, types=[FuncType((), ())], funcs=[0], start=1)
    invalid("start function", check_module, types=[FuncType((I32,), ())], funcs=[0], start=0)
    invalid("start function", check_module, types=[FuncType((), (I32,))], funcs=[0], start=0)


def _elem(*init, mode=SegmentMode.ACTIVE, elem_type=FUNCREF, table=0, offset=("i32.const", 0)):
    return ElemSegment(mode, elem_type, tuple(tuple(code(e)) for e in init), table,
                       tuple(code(offset)) if mode == SegmentMode.ACTIVE else None)


def test_elem_segments():
    base = dict(types=[FuncType((), ())], funcs=[0])
    check_module(**base, tables=[FTAB], elems=[_elem(("ref.func", 0), ("ref.null", FUNCREF))])
    check_module(**base, tables=[XTAB], elems=[_elem(("ref.null", EXTERNREF), elem_type=EXTERNREF)])
    check_module(**base, elems=[_elem(("ref.func", 0), mode=SegmentMode.PASSIVE),
                                _elem(("ref.func", 0), mode=SegmentMode.DECLARATIVE)])
    check_module(**base, tables=[FTAB], imports=[IMPORTED_I32],
                 elems=[_elem(offset=("global.get", 0))])
    invalid("unknown table", check_module, **base, elems=[_elem(("ref.func", 0))])
    invalid("type mismatch", check_module, **base, tables=[FTAB],
            elems=[_elem(offset=("i64.const", 0))])
    invalid("type mismatch", check_module, **base, tables=[XTAB], elems=[_elem(("ref.func", 0))])
    invalid("type mismatch", check_module, **base, tables=[FTAB],
            elems=[_elem(("ref.null", EXTERNREF))])
    invalid("unknown function", check_module, **base, tables=[FTAB], elems=[_elem(("ref.func", 9))])
    invalid("unknown global", check_module, **base, tables=[FTAB],
            globals=[_global(I32, ("i32.const", 0))], elems=[_elem(offset=("global.get", 0))])
    invalid("constant expression required", check_module, **base, tables=[FTAB],
            elems=[_elem(offset=("i32.eqz", None))])


def test_data_segments():
    def data(offset=("i32.const", 0), memory=0):
        return DataSegment(SegmentMode.ACTIVE, b"x", memory, tuple(code(offset)))
    check_module(memories=[MEM], datas=[data(), DataSegment(SegmentMode.PASSIVE, b"y")])
    invalid("unknown memory", check_module, datas=[data()])
    invalid("unknown memory 1", check_module, memories=[MEM], datas=[data(memory=1)])
    invalid("type mismatch", check_module, memories=[MEM], datas=[data(("i64.const", 0))])
    invalid("unknown global", check_module, memories=[MEM],
            globals=[_global(I32, ("i32.const", 0))], datas=[data(("global.get", 0))])


def test_ref_func_needs_a_declaration():
    body = [("ref.func", 0), "drop"]
    invalid("undeclared function reference", check_func, body)
    invalid("undeclared function reference", check_func, body, start=0)
    check_func(body, exports=[Export("f", ExternKind.FUNC, 0)])
    check_func(body, elems=[_elem(("ref.func", 0), mode=SegmentMode.DECLARATIVE)])
    check_func(body, globals=[_global(FUNCREF, ("ref.func", 0))])
    invalid("unknown function", check_func, [("ref.func", 3), "drop"])


# --- function bodies ------------------------------------------------------------------------------

def test_simple_body_reports_max_stack_height():
    assert check_func([("local.get", 0), ("i32.const", 1), ("i32.const", 2), "i32.add",
                       "i32.add"], params=[I32], results=[I32]) == 3
    assert check_func([]) == 0


def test_error_names_function_and_offset():
    err = invalid("type mismatch", check_func, [("i64.const", 0), ("i32.const", 1), "i32.add"],
                  names=Names(functions={0: "fn"}))
    assert err.func == "fn" and err.offset == 2


@pytest.mark.parametrize("body,results", [
    ([("i32.const", 0)], []),                               # left over
    ([], [I32]),                                            # missing
    ([("i64.const", 0)], [I32]),                            # wrong type
    (["i32.add"], []),                                      # empty stack
    ([("i32.const", 0), "i32.add", "drop"], []),
    ([("f32.const", 0), "i32.eqz", "drop"], []),
    (["drop"], []),
])
def test_operand_type_mismatch(body, results):
    invalid("type mismatch", check_func, body, results=results)


def test_block_cannot_see_outer_operands():
    invalid("type mismatch", check_func, [("i32.const", 1), ("block", None), "drop", "end", "drop"])


def test_locals():
    check_func([("local.get", 0), ("local.set", 1), ("local.get", 1), ("local.tee", 1)],
               params=[I32], results=[I32], locals=[I32])
    invalid("unknown local", check_func, [("local.get", 2), "drop"], params=[I32], locals=[I32])
    invalid("unknown local", check_func, [("i32.const", 0), ("local.set", 1)], params=[I32])
    invalid("unknown local", check_func, [("i32.const", 0), ("local.tee", 1), "drop"], params=[I32])
    invalid("type mismatch", check_func, [("i64.const", 0), ("local.set", 0)], params=[I32])
    invalid("type mismatch", check_func, [("local.set", 0)], params=[I32])
    invalid("type mismatch", check_func, [("f32.const", 0), ("local.tee", 0)], params=[I32],
            results=[I32])
    invalid("type mismatch", check_func, [("local.get", 0)], params=[I64], results=[I32])


def test_globals():
    fields = dict(imports=[IMPORTED_I32], globals=[_global(I64, ("i64.const", 0), mutable=True)])
    check_func([("global.get", 0), "drop", ("i64.const", 1), ("global.set", 1)], **fields)
    invalid("global is immutable", check_func, [("i32.const", 1), ("global.set", 0)], **fields)
    invalid("type mismatch", check_func, [("i32.const", 1), ("global.set", 1)], **fields)
    invalid("unknown global", check_func, [("global.get", 2), "drop"], **fields)
    invalid("unknown global", check_func, [("i32.const", 1), ("global.set", 2)], **fields)


def test_blocks_and_multi_value():
    pair = FuncType((I32, I64), (I64, I32))
    # type 1: [i32 i64] -> [i64 i32]; blocks take params from the stack and return results
    check_func([("i32.const", 1), ("i64.const", 2), ("block", 1), ("local.set", 0),
                ("local.set", 1), ("local.get", 0), ("local.get", 1), "end"],
               results=[I64, I32], types=[pair], locals=[I64, I32])
    check_func([("i32.const", 1), ("i64.const", 2), ("loop", 1), ("local.set", 0),
                ("local.set", 1), ("local.get", 0), ("local.get", 1), "end"],
               results=[I64, I32], types=[pair], locals=[I64, I32])
    check_func([("block", I32), ("i32.const", 1), "end"], results=[I32])
    invalid("type mismatch", check_func, [("block", 1), "drop", "drop", "end"], types=[pair])
    invalid("type mismatch", check_func, [("block", I32), "end", "drop"])
    invalid("type mismatch", check_func, [("block", I32), ("i64.const", 0), "end", "drop"])
    invalid("type mismatch", check_func, [("block", None), ("i32.const", 0), "end"])
    invalid("unknown type", check_func, [("block", 7), "end"])


def test_if_else():
    check_func([("i32.const", 1), ("if", I32), ("i32.const", 1), "else", ("i32.const", 2),
                "end"], results=[I32])
    check_func([("i32.const", 1), ("if", None), "end"])
    # [i32] -> [i32] passes its parameter through an implicit else
    ident = FuncType((I32,), (I32,))
    check_func([("i32.const", 5), ("i32.const", 1), ("if", 1), "end"], results=[I32],
               types=[ident])
    invalid("type mismatch", check_func, [("i32.const", 1), ("if", I32), ("i32.const", 1), "end"],
            results=[I32])
    invalid("type mismatch", check_func, [("i32.const", 1), ("if", I32), ("i32.const", 1), "else",
                                          "end"], results=[I32])
    invalid("type mismatch", check_func, [("i32.const", 1), ("if", I32), "else", ("i32.const", 1),
                                          "end"], results=[I32])
    invalid("type mismatch", check_func, [("if", None), "end"])
    invalid("type mismatch", check_func, [("i64.const", 1), ("if", None), "end"])


def test_branches():
    check_func([("block", I32), ("i32.const", 1), ("br", 0), "end"], results=[I32])
    check_func([("i32.const", 1), ("br", 0)], results=[I32])      # the function body's label
    check_func([("loop", None), ("i32.const", 0), ("br_if", 0), "end"])
    check_func([("block", I32), ("i32.const", 1), ("i32.const", 0), ("br_if", 0), "end"],
               results=[I32])
    invalid("unknown label", check_func, [("br", 1)])
    invalid("unknown label", check_func, [("block", None), ("br", 2), "end"])
    invalid("unknown label", check_func, [("i32.const", 0), ("br_if", 1)])
    invalid("type mismatch", check_func, [("block", I32), ("br", 0), "end", "drop"])
    invalid("type mismatch", check_func, [("block", I32), ("i64.const", 1), ("br", 0), "end",
                                          "drop"])
    invalid("type mismatch", check_func, [("block", None), ("br_if", 0), "end"])
    # a loop label takes the loop's params, not its results
    check_func([("loop", I32), ("br", 0), "end"], results=[I32])
    ident = FuncType((I32,), (I32,))
    invalid("type mismatch", check_func, [("i32.const", 1), ("loop", 1), "drop", ("br", 0),
                                          "end"], results=[I32], types=[ident])


def test_br_table():
    check_func([("block", None), ("block", None), ("i32.const", 0), ("br_table", ((0, 1), 0)),
                "end", "end"])
    check_func([("block", I32), ("block", I32), ("i32.const", 1), ("i32.const", 0),
                ("br_table", ((0,), 1)), "end", "end"], results=[I32])
    invalid("type mismatch", check_func, [("block", I32), ("block", None), ("i32.const", 1),
                                          ("i32.const", 0), ("br_table", ((0,), 1)), "end",
                                          "end"], results=[I32])
    invalid("type mismatch", check_func, [("block", None), ("br_table", ((), 0)), "end"])
    invalid("unknown label", check_func, [("block", None), ("i32.const", 0),
                                          ("br_table", ((0, 5), 0)), "end"])
    invalid("unknown label", check_func, [("i32.const", 0), ("br_table", ((), 3))])
    # in unreachable code different label types are fine as long as arities agree
    check_func([("block", F32), ("block", I64), "unreachable", ("br_table", ((0,), 1)), "end",
                "drop", ("f32.const", 0), "end", "drop"])
    invalid("type mismatch", check_func, [("block", F32), ("block", None), "unreachable",
                                          ("br_table", ((0,), 1)), "end", ("f32.const", 0),
                                          "end", "drop"])


def test_polymorphic_stack():
    check_func(["unreachable"], results=[I32, I64])
    check_func(["unreachable", "i32.add"], results=[I32])
    check_func(["unreachable", "drop", "drop", "i64.eqz"], results=[I32])
    check_func([("i32.const", 0), "return", "i32.add"], results=[I32])
    check_func([("block", None), ("br", 0), "f32.neg", "drop", "end"])
    check_func(["unreachable", "select"], results=[I32])
    check_func(["unreachable", ("i64.const", 0), ("i32.const", 0), "select"], results=[I64])
    invalid("type mismatch", check_func, ["unreachable", ("i64.const", 0), "select"],
            results=[I64])
    check_func(["unreachable", "ref.is_null"], results=[I32])
    check_func(["unreachable", ("local.tee", 0), "i64.eqz"], results=[I32], params=[I64])
    check_func(["unreachable", ("local.set", 0)], params=[I64])
    invalid("type mismatch", check_func, ["unreachable", ("i64.const", 0), "i32.add"],
            results=[I32])
    invalid("type mismatch", check_func, ["unreachable", "i32.eqz"], results=[I64])
    # the polymorphism ends with the block: values from before it are not conjured up
    invalid("type mismatch", check_func, [("block", None), "unreachable", "end", "i32.eqz"],
            results=[I32])
    # values pushed after unreachable still count
    invalid("type mismatch", check_func, ["unreachable", ("i32.const", 0)])


def test_return():
    check_func([("i32.const", 1), "return"], results=[I32])
    check_func([("block", None), ("i32.const", 1), "return", "end", ("i32.const", 2)],
               results=[I32])
    invalid("type mismatch", check_func, ["return"], results=[I32])
    invalid("type mismatch", check_func, [("i64.const", 1), "return"], results=[I32])


def test_select():
    check_func([("i32.const", 1), ("i32.const", 2), ("i32.const", 0), "select"], results=[I32])
    check_func([("f64.const", 1), ("f64.const", 2), ("i32.const", 0), "select"], results=[F64])
    invalid("type mismatch", check_func, [("i32.const", 1), ("i64.const", 2), ("i32.const", 0),
                                          "select", "drop"])
    invalid("type mismatch", check_func, [("i32.const", 1), ("i32.const", 2), ("i64.const", 0),
                                          "select", "drop"])
    invalid("type mismatch", check_func, [("ref.null", FUNCREF), ("ref.null", FUNCREF),
                                          ("i32.const", 0), "select", "drop"])
    invalid("type mismatch", check_func, ["unreachable", ("ref.null", EXTERNREF), "select",
                                          "drop"])
    check_func([("ref.null", FUNCREF), ("ref.null", FUNCREF), ("i32.const", 0),
                ("select_t", (FUNCREF,))], results=[FUNCREF])
    check_func([("i64.const", 1), ("i64.const", 2), ("i32.const", 0), ("select_t", (I64,))],
               results=[I64])
    invalid("type mismatch", check_func, [("ref.null", EXTERNREF), ("ref.null", FUNCREF),
                                          ("i32.const", 0), ("select_t", (FUNCREF,)), "drop"])
    invalid("invalid result arity", check_func, [("i32.const", 0), ("select_t", ())])
    invalid("invalid result arity", check_func, [("i32.const", 1), ("i32.const", 1),
                                                 ("i32.const", 1), ("i32.const", 1),
                                                 ("i32.const", 0), ("select_t", (I32, I32))])


def test_memory_instructions():
    check_func([("i32.const", 0), ("i64.load", (3, 0)), ("i32.const", 0), ("i32.load8_u", (0, 1)),
                "drop", "drop", ("i32.const", 0), ("f32.const", 0), ("f32.store", (2, 4)),
                ("memory.size", 0), ("memory.grow", 0), "drop"], memories=[MEM])
    check_func([("i32.const", 0), ("i32.load", (1, 0)), "drop"], memories=[MEM])   # under-aligned
    invalid("alignment must not be larger than natural", check_func,
            [("i32.const", 0), ("i32.load", (3, 0)), "drop"], memories=[MEM])
    invalid("alignment must not be larger than natural", check_func,
            [("i32.const", 0), ("i64.const", 0), ("i64.store8", (1, 0))], memories=[MEM])
    invalid("type mismatch", check_func, [("i64.const", 0), ("i32.load", (2, 0)), "drop"],
            memories=[MEM])
    invalid("type mismatch", check_func, [("i32.const", 0), ("i32.const", 0),
                                          ("i64.store", (3, 0))], memories=[MEM])
    invalid("unknown memory", check_func, [("i32.const", 0), ("i32.load", (2, 0)), "drop"])
    invalid("unknown memory", check_func, [("memory.size", 0), "drop"])
    invalid("unknown memory", check_func, [("i32.const", 0), ("memory.grow", 0), "drop"])


def test_bulk_memory():
    passive = [DataSegment(SegmentMode.PASSIVE, b"ab")]
    three = [("i32.const", 0)] * 3
    check_func([*three, ("memory.init", (0, 0)), ("data.drop", 0), *three, ("memory.copy", (0, 0)),
                *three, ("memory.fill", 0)], memories=[MEM], datas=passive, data_count=1)
    invalid("unknown data segment", check_func, [*three, ("memory.init", (1, 0))], memories=[MEM],
            datas=passive)
    invalid("unknown data segment", check_func, [("data.drop", 0)])
    invalid("unknown memory 0", check_func, [*three, ("memory.init", (0, 0))], datas=passive)
    invalid("unknown memory", check_func, [*three, ("memory.copy", (0, 0))])
    invalid("unknown memory", check_func, [*three, ("memory.fill", 0)])
    invalid("type mismatch", check_func, [("i32.const", 0), ("i32.const", 0), ("i64.const", 0),
                                          ("memory.fill", 0)], memories=[MEM])


def test_calls():
    callee = FuncType((I32, I64), (F32,))
    check_func([("i32.const", 0), ("i64.const", 0), ("call", 1)], results=[F32], types=[callee],
               funcs=[1])
    check_func([("i32.const", 0), ("i64.const", 0), ("call", 0)], results=[F32], types=[callee],
               imports=[Import("m", "f", ExternKind.FUNC, 1)])
    invalid("type mismatch", check_func, [("i64.const", 0), ("i32.const", 0), ("call", 1), "drop"],
            types=[callee], funcs=[1])
    invalid("unknown function", check_func, [("call", 1)])
    check_func([("i32.const", 0), ("i64.const", 0), ("i32.const", 0), ("call_indirect", (1, 0))],
               results=[F32], types=[callee], tables=[FTAB])
    invalid("unknown table", check_func, [("i32.const", 0), ("call_indirect", (0, 0))])
    invalid("unknown table", check_func, [("i32.const", 0), ("call_indirect", (0, 1))],
            tables=[FTAB])
    invalid("type mismatch", check_func, [("i32.const", 0), ("call_indirect", (0, 0))],
            tables=[XTAB])
    invalid("unknown type", check_func, [("i32.const", 0), ("call_indirect", (4, 0))],
            tables=[FTAB])
    invalid("type mismatch", check_func, [("call_indirect", (0, 0))], tables=[FTAB])


def test_reference_instructions():
    check_func([("ref.null", EXTERNREF), "ref.is_null"], results=[I32])
    check_func([("ref.null", FUNCREF)], results=[FUNCREF])
    invalid("type mismatch", check_func, [("i32.const", 0), "ref.is_null", "drop"])
    invalid("type mismatch", check_func, ["ref.is_null", "drop"])
    invalid("type mismatch", check_func, [("ref.null", EXTERNREF)], results=[FUNCREF])


def test_table_instructions():
    tables = [FTAB, XTAB]
    segs = [_elem(("ref.func", 0), mode=SegmentMode.PASSIVE),
            _elem(("ref.null", EXTERNREF), mode=SegmentMode.PASSIVE, elem_type=EXTERNREF)]
    f = dict(tables=tables, elems=segs)
    i0 = ("i32.const", 0)
    check_func([i0, ("table.get", 1), ("table.size", 0), ("ref.null", FUNCREF), ("i32.const", 1),
                ("table.grow", 0), "drop", "drop", "drop"], **f)
    check_func([i0, ("ref.null", EXTERNREF), ("table.set", 1),
                i0, ("ref.null", FUNCREF), i0, ("table.fill", 0),
                i0, i0, i0, ("table.copy", (0, 0)), i0, i0, i0, ("table.init", (1, 1)),
                ("elem.drop", 0)], **f)
    invalid("type mismatch", check_func, [i0, ("ref.null", FUNCREF), ("table.set", 1)], **f)
    invalid("type mismatch", check_func, [("ref.null", FUNCREF), ("i32.const", 1),
                                          ("table.grow", 1), "drop"], **f)
    invalid("type mismatch", check_func, [i0, ("ref.null", EXTERNREF), i0, ("table.fill", 0)], **f)
    invalid("type mismatch", check_func, [i0, i0, i0, ("table.copy", (0, 1))], **f)
    invalid("type mismatch", check_func, [i0, i0, i0, ("table.init", (0, 1))], **f)
    invalid("type mismatch", check_func, [i0, ("table.get", 0)], results=[EXTERNREF], **f)
    invalid("unknown table", check_func, [i0, ("table.get", 2), "drop"], **f)
    invalid("unknown table", check_func, [("table.size", 2), "drop"], **f)
    invalid("unknown table", check_func, [i0, i0, i0, ("table.copy", (2, 0))], **f)
    invalid("unknown table", check_func, [i0, i0, i0, ("table.init", (0, 2))], **f)
    invalid("unknown elem segment 2", check_func, [i0, i0, i0, ("table.init", (2, 0))], **f)
    invalid("unknown elem segment 4", check_func, [("elem.drop", 4)], **f)


def test_body_structure():
    m = module([FuncType((), ())], [0])
    v = Validator(m)
    invalid("operators remaining", v.validate_function, 0, code("end", "nop", "end"))
    invalid("unexpected end", v.validate_function, 0, code(("block", None), "end"))
    invalid("else without matching if", v.validate_function, 0, code("else", "end"))
    invalid("unknown operator", v.validate_function, 0, [(0xFFFFF, None, 0)])
    with pytest.raises(ValueError):
        v.validate_function(1, code("end"))
    imported = module([FuncType((), ())], [0], imports=[Import("m", "f", ExternKind.FUNC, 0)])
    with pytest.raises(ValueError):
        Validator(imported).validate_function(0, code("end"))


def _push(t: ValType) -> Tuple[str, object]:
    return {I32: ("i32.const", 0), I64: ("i64.const", 0), F32: ("f32.const", 0),
            F64: ("f64.const", 0), FUNCREF: ("ref.null", FUNCREF),
            EXTERNREF: ("ref.null", EXTERNREF)}[t]


_TABLE_SIGNED = [info for info in OPS.values()
                 if info.params is not None and info.imm in (Imm.NONE, Imm.I32, Imm.I64, Imm.F32,
                                                             Imm.F64)
                 and ValType.V128 not in info.params + info.results]


@pytest.mark.parametrize("info", _TABLE_SIGNED, ids=lambda i: i.name)
def test_every_table_signature(info):
    """Each opcode with a fixed signature accepts exactly its params and yields its results."""
    imm = {Imm.NONE: None}.get(info.imm, 0)
    body = [_push(t) for t in info.params] + [(info.name, imm)]
    check_func(body, results=info.results)
    if info.params:
        wrong = I64 if info.params[0] != I64 else I32
        invalid("type mismatch", check_func,
                [_push(wrong)] + [_push(t) for t in info.params[1:]] + [(info.name, imm)],
                results=info.results)
        invalid("type mismatch", check_func,
                [_push(t) for t in info.params[1:]] + [(info.name, imm)], results=info.results)


def test_simd_immediate_kinds_are_checked_before_their_rows_exist():
    """SIMD rows will only add table lines; their lane immediates must still be range-checked."""
    from types import SimpleNamespace
    from pylucet.wasm.opcodes import OpInfo

    def row(kind: str, name: str, size: int = 0) -> OpInfo:
        imm = SimpleNamespace(value=kind)
        return OpInfo(0xFD000, name, imm, (ValType.V128,), (I32,), size)

    v = Validator(module(memories=[MEM]))
    extract = v._immediate_check(row("lane", "i16x8.extract_lane_s"))
    extract(7)
    with pytest.raises(Exception, match="invalid lane index"):
        extract(8)
    load_lane = v._immediate_check(row("memarg_lane", "v128.load32_lane", 4))
    load_lane(((2, 0), 3))
    with pytest.raises(Exception, match="invalid lane index"):
        load_lane(((2, 0), 4))
    with pytest.raises(Exception, match="alignment must not be larger than natural"):
        load_lane(((3, 0), 0))
    assert v._immediate_check(row("v128", "v128.const")) is None


# --- the same rules written in WAT -------------------------------------------------------------

def _validate_wat(text: str) -> None:
    from pylucet.wasm.validator import validate
    validate(_decode(text))


@pytest.mark.parametrize("text", [
    # multi-value blocks with params, branching out with values
    """(module (func (result i32 i64)
         (i32.const 1) (i64.const 2)
         (block (param i32 i64) (result i32 i64) (br 0))))""",
    # a loop's label takes its params: a counting loop that carries its counter on the stack
    """(module (func (param i32) (result i32)
         (local.get 0)
         (loop (param i32) (result i32)
           (i32.sub (i32.const 1)) (local.tee 0) (local.get 0) (br_if 0))))""",
    # br_table over labels of equal arity, different kinds of block
    """(module (func (param i32) (result i32)
         (block (result i32) (loop (result i32)
           (block (result i32) (i32.const 7) (local.get 0) (br_table 0 2 0))))))""",
    # dead code after br is type-checked against a polymorphic stack
    """(module (func (result f64) (block (result f64) (f64.const 1) (br 0) (i32.add) (drop))))""",
    # reference types, tables and bulk memory
    """(module (table $t 2 funcref) (table $x 1 externref) (memory 1) (data $d "hi")
         (elem $e func $f) (func $f (export "f") (param externref) (result i32)
           (table.set $x (i32.const 0) (local.get 0))
           (table.set $t (i32.const 1) (ref.func $f))
           (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1)) (elem.drop $e)
           (memory.init $d (i32.const 0) (i32.const 0) (i32.const 2)) (data.drop $d)
           (select (result externref) (local.get 0) (ref.null extern) (i32.const 1))
           (ref.is_null)))""",
    # imported immutable globals in constant expressions
    """(module (import "m" "g" (global i32)) (table 4 funcref) (memory 1)
         (global i32 (global.get 0)) (elem (global.get 0) func) (data (global.get 0) ""))""",
])
def test_valid_wat(text):
    _validate_wat(text)


@pytest.mark.parametrize("text,reason", [
    ("(module (func (result i32) (block (result i32) (i64.const 0))))", "type mismatch"),
    ("(module (func (param i32) (result i32)"
     "  (if (result i32) (local.get 0) (then (i32.const 1)))))", "type mismatch"),
    ("(module (func (block (result i32) (block (br_table 0 1 (i32.const 0)))) (drop)))",
     "type mismatch"),
    ("(module (func (local.get 1) (drop)))", "unknown local"),
    ("(module (global i32 (i32.const 0)) (func (global.set 0 (i32.const 1))))",
     "global is immutable"),
    ("(module (func (drop (ref.func 0))))", "undeclared function reference"),
    ("(module (memory 1) (func (drop (i64.load align=16 (i32.const 0)))))",
     "alignment must not be larger than natural"),
    ("(module (func (drop (memory.size))))", "unknown memory"),
    ("(module (func (call_indirect (i32.const 0))))", "unknown table"),
    ("(module (func (select (ref.null func) (ref.null func) (i32.const 1)) (drop)))",
     "type mismatch"),
    ("(module (func (export \"a\")) (func (export \"a\")))", "duplicate export name"),
    ("(module (func $f (param i32)) (start $f))", "start function"),
    ("(module (memory 65537))", "memory size must be at most 65536 pages (4GiB)"),
    ("(module (global i32 (i32.add (i32.const 0) (i32.const 1))))", "constant expression required"),
])
def test_invalid_wat(text, reason):
    invalid(reason, _validate_wat, text)


# --- the spec suite's assert_invalid cases and valid modules --------------------------------------

def _suite_dir():
    from tests.conftest import suite_path
    return suite_path() / "spec"


def _spec_cases():
    """(id, kind, module text, expected message) for every plain module and assert_invalid case
    of the non-SIMD scripts; found at collection time, so each is a test with its own outcome."""
    spec = _suite_dir()
    try:
        from pylucet.errors import MalformedModule
        from pylucet.wasm.sexpr import ATOM, LPAR, Tokens
    except ImportError:
        return []
    if not spec.is_dir():
        return []
    cases = []
    for path in sorted(spec.glob("*.wast")):
        if path.name.startswith("simd"):
            continue
        text = path.read_text(encoding="utf-8")
        try:
            toks = Tokens(text)
        except MalformedModule as e:   # one unreadable script must not hide the others
            cases.append((path.name, "unreadable", "", str(e)))
            continue
        kinds, vals, offs, close = toks.kinds, toks.vals, toks.offs, toks.close
        i = 0
        while kinds[i] == LPAR:
            end = close[i]
            ident = f"{path.name}:{text.count(chr(10), 0, offs[i]) + 1}"
            head = vals[i + 1] if kinds[i + 1] == ATOM else ""
            if head == "module":
                cases.append((ident, "valid", text[offs[i]:offs[end] + 1], None))
            elif head == "assert_invalid":
                inner = i + 2
                module_text = text[offs[inner]:offs[close[inner]] + 1]
                message = toks.string(close[inner] + 1).decode("utf-8")
                cases.append((ident, "invalid", module_text, message))
            i = end + 1
    return cases


_SPEC_CASES = _spec_cases()


def _decode(text: str):
    """The decoded module of WAT ``text``, or a skip when the WAT parser or the decoder rejects
    it: their limits are not the validator's business, and their own tests cover them."""
    from pylucet.errors import MalformedModule
    from pylucet.wasm.decoder import decode_module
    from pylucet.wasm.wat import parse_wat
    try:
        binary = parse_wat(text)
    except MalformedModule as e:
        pytest.skip(f"WAT parser cannot read this module: {e}")
    try:
        return decode_module(binary)
    except MalformedModule as e:
        pytest.skip(f"decoder rejects the module: {e}")


@pytest.mark.skipif(not _SPEC_CASES, reason=f"spec test suite not found at {_suite_dir()} "
                    "(set PYLUCET_TESTSUITE)")
@pytest.mark.parametrize("ident,kind,text,message", _SPEC_CASES or [("none", "", "", "")],
                         ids=[c[0] for c in _SPEC_CASES] or ["none"])
def test_spec(ident, kind, text, message):
    from pylucet.wasm.validator import validate
    if kind == "unreadable":
        pytest.skip(f"the .wast lexer cannot read the script: {message}")
    module = _decode(text)
    if kind == "valid":
        validate(module)
        return
    with pytest.raises(InvalidModule) as info:
        validate(module)
    assert info.value.reason.startswith(message), (info.value.reason, message)


def _wasi_programs():
    from tests.conftest import suite_path
    return sorted((suite_path() / "wasi").glob("*/*.wasm"))


_WASI_PROGRAMS = _wasi_programs()


@pytest.mark.skipif(not _WASI_PROGRAMS, reason="WASI programs of the test suite not found")
@pytest.mark.parametrize("path", _WASI_PROGRAMS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compiler_output_validates(path):
    """Real toolchain output (clang, AssemblyScript) exercises mixes the hand-written cases miss."""
    from pylucet.wasm.decoder import decode_module
    from pylucet.wasm.validator import validate
    validate(decode_module(path.read_bytes()))

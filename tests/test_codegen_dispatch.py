"""The code generator's dispatch table and value representation (``compiler/codegen``)."""

from __future__ import annotations

import pytest

import pylucet
from pylucet.compiler.codegen import context
from pylucet.compiler.codegen.dispatch import DISPATCH
from pylucet.module.abi import ValueClass, slot_size, value_class
from pylucet.wasm.opcodes import OPS, Op
from pylucet.wasm.types import ValType


def test_every_row_is_an_opcode_of_the_table():
    assert set(DISPATCH) <= set(OPS)
    for op, (handler, _) in DISPATCH.items():
        assert callable(handler), OPS[op].name


def test_rows_carry_the_types_of_the_opcode_table():
    # the result type a load's row names is the opcode table's, and so is its access size
    for op, (handler, arg) in DISPATCH.items():
        info = OPS[op]
        if handler.__name__ == "op_load":
            assert arg[:2] == (info.results[0], info.access_size), info.name
        elif handler.__name__ == "op_store":
            assert arg == info.access_size, info.name


@pytest.mark.parametrize("body, name", [
    ("(drop (table.get 0 (i32.const 0)))", "table.get"),
    ("(drop (ref.is_null (ref.null func)))", "ref.null"),
    ("(elem.drop 0)", "elem.drop"),
])
def test_an_opcode_without_a_row_is_unsupported_by_name(body, name, monkeypatch):
    # every Wasm 2.0 instruction has its row now; a proposal's rows join the opcode table
    # before they join the dispatch table, which this stands in for
    wat = f"(module (table 1 funcref) (elem funcref (ref.null func)) (func {body}))"
    pylucet.compile(wat)
    monkeypatch.delitem(DISPATCH, Op[name.upper().replace(".", "_")])
    with pytest.raises(pylucet.Unsupported, match=name):
        pylucet.compile(wat)


def test_the_value_representation_is_abis():
    for t in ValType:
        assert context.IN_XMM[t] == (value_class(t) != ValueClass.INT)
    assert slot_size(ValType.V128) == 16 and context.IN_XMM[ValType.V128]
    for t in (ValType.I32, ValType.I64, ValType.F32, ValType.F64, ValType.FUNCREF,
              ValType.EXTERNREF):
        assert slot_size(t) == 8
    assert not context.IN_XMM[ValType.FUNCREF] and not context.IN_XMM[ValType.EXTERNREF]

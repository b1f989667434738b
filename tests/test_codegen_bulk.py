"""memory.copy, memory.fill and table.size, run for real and compared with a bytearray model.

The bulk memory operators are where one off-by-one in a bounds check writes outside the heap or
traps on a legal access, so the edges are covered one by one: ranges ending exactly at the end of
memory, empty ranges at and just past it, sums that would wrap in 32 bits, overlap in both
directions, and traps that must leave memory untouched. The operands also arrive in every form
the code generator moves differently into rdi/rsi/rcx/rax (parameters, constants, registers it
has to evict), with other values held across the instruction.
"""

from __future__ import annotations


import pytest

from pylucet import Trap, TrapCode
from pylucet.compiler.driver import read_source

from .conftest import instantiate as instance

PAGE = 65536




def _held(k: int) -> str:
    """``k`` values computed into scratch registers and kept on the stack across the bulk
    operation, so it has to move them out of the registers it claims."""
    return "".join(f"(i32.add (local.get $a) (i32.const {i + 1}))" for i in range(k))


def _sum_held(k: int) -> str:
    return "(i32.add)" * (k - 1) if k else ""


BULK = """
(module (memory 1 2)
  (func (export "copy") (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fill") (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy_const") (memory.copy (i32.const 0x100) (i32.const 0x104) (i32.const 8)))
  (func (export "fill_const") (memory.fill (i32.const 0x200) (i32.const 0x1234) (i32.const 3)))
  (func (export "copy_at_size") (param $n i32)
    (memory.copy (i32.mul (memory.size) (i32.const 0x10000)) (i32.const 0) (local.get $n)))
  (func (export "backward_then_forward")
    (memory.copy (i32.const 1) (i32.const 0) (i32.const 8))
    (memory.fill (i32.const 100) (i32.const 7) (i32.const 4))
    (memory.copy (i32.const 200) (i32.const 100) (i32.const 4)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  {held}
)"""

HELD_FUNCS = "".join(f"""
  (func (export "copy_held{k}") (param $a i32) (param $d i32) (param $s i32) (param $n i32)
        (result i32)
    {_held(k)}
    (memory.copy (i32.or (local.get $d) (i32.const 0)) (i32.or (local.get $s) (i32.const 0))
                 (i32.or (local.get $n) (i32.const 0)))
    {_sum_held(k)} {"" if k else "(i32.const 0)"})
  (func (export "fill_held{k}") (param $a i32) (param $d i32) (param $v i32) (param $n i32)
        (result i32)
    {_held(k)}
    (memory.fill (i32.or (local.get $d) (i32.const 0)) (i32.or (local.get $v) (i32.const 0))
                 (i32.or (local.get $n) (i32.const 0)))
    {_sum_held(k)} {"" if k else "(i32.const 0)"})""" for k in range(10))


@pytest.fixture(scope="module")
def bulk(region):
    with instance(region, BULK.format(held=HELD_FUNCS)) as inst:
        yield inst


def _pattern(inst):
    """Fill the first 4 KiB with a recognisable pattern and return a model of the heap."""
    heap = inst.heap
    heap[:4096] = bytes(i * 7 % 251 for i in range(4096))
    return bytearray(heap)


def _model_copy(model, dst, src, n):
    model[dst:dst + n] = model[src:src + n]


def _model_fill(model, dst, val, n):
    model[dst:dst + n] = bytes([val & 0xFF]) * n


def _trap(inst, name, *args):
    with pytest.raises(Trap) as info:
        inst.run(name, *args)
    assert info.value.code == TrapCode.HeapOutOfBounds, (name, args)
    return info.value


def test_copy_overlapping_both_ways(bulk):
    model = _pattern(bulk)
    for dst, src, n in ((10, 0, 100), (0, 10, 100), (1, 0, 1000), (0, 1, 1000), (50, 50, 30),
                        (300, 200, 101), (200, 300, 101), (3000, 0, 1), (0, 3000, 0)):
        bulk.run("copy", dst, src, n)
        _model_copy(model, dst, src, n)
        assert bytes(bulk.heap) == model, (dst, src, n)


def test_fill_truncates_the_value(bulk):
    model = _pattern(bulk)
    for dst, val, n in ((0, 0xAB, 10), (5, 0x12345601, 3), (20, -1, 7), (40, 0x100, 5),
                        (100, 0, 0)):
        bulk.run("fill", dst, val, n)
        _model_fill(model, dst, val, n)
        assert bytes(bulk.heap) == model, (dst, val, n)
    bulk.run("fill_const")
    bulk.run("copy_const")
    _model_fill(model, 0x200, 0x34, 3)
    _model_copy(model, 0x100, 0x104, 8)
    assert bytes(bulk.heap) == model


def test_ranges_ending_exactly_at_the_end(bulk):
    size = len(bulk.heap)
    model = _pattern(bulk)
    bulk.run("copy", size - 10, 0, 10)
    _model_copy(model, size - 10, 0, 10)
    bulk.run("copy", 0, size - 16, 16)
    _model_copy(model, 0, size - 16, 16)
    bulk.run("fill", size - 3, 0x55, 3)
    _model_fill(model, size - 3, 0x55, 3)
    bulk.run("copy", 0, 0, size)
    bulk.run("fill", 0, 0x66, 0)
    assert bytes(bulk.heap) == model
    for name, args in (("copy", (size - 10, 0, 11)), ("copy", (0, size - 10, 11)),
                       ("fill", (size - 3, 0x55, 4)), ("copy", (0, 0, size + 1)),
                       ("fill", (0, 0, size + 1))):
        _trap(bulk, name, *args)
    assert bytes(bulk.heap) == model


def test_empty_ranges_at_and_past_the_end(bulk):
    size = len(bulk.heap)
    for dst, src in ((size, 0), (0, size), (size, size)):
        bulk.run("copy", dst, src, 0)
    bulk.run("fill", size, 0, 0)
    bulk.run("copy_at_size", 0)
    _trap(bulk, "copy_at_size", 1)
    for dst, src in ((size + 1, 0), (0, size + 1), (0xFFFFFFFF, 0), (0, 0xFFFFFFFF)):
        _trap(bulk, "copy", dst, src, 0)
    _trap(bulk, "fill", size + 1, 0, 0)
    _trap(bulk, "fill", 0xFFFFFFFF, 0, 0)


def test_sums_that_wrap_in_32_bits_trap(bulk):
    for dst, src, n in ((1, 0, 0xFFFFFFFF), (0, 1, 0xFFFFFFFF), (0xFFFFFFFF, 0, 1),
                        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0x80000000, 0, 0x80000000)):
        _trap(bulk, "copy", dst, src, n)
    for dst, n in ((1, 0xFFFFFFFF), (0xFFFFFFFF, 1), (0xFFFFFFFF, 0xFFFFFFFF)):
        _trap(bulk, "fill", dst, 0, n)


def test_a_trap_writes_nothing(bulk):
    size = len(bulk.heap)
    model = _pattern(bulk)
    bulk.heap[size - 8:] = b"\x11" * 8
    model[size - 8:] = b"\x11" * 8
    # each of these would write in-bounds bytes first if it started before checking
    for name, args in (("copy", (size - 8, 0, 9)), ("copy", (0, size - 8, 9)),
                       ("copy", (size - 4, size - 8, 8)), ("copy", (100, 0, size)),
                       ("fill", (size - 8, 0xEE, 9)), ("fill", (0, 0xEE, size + 1))):
        _trap(bulk, name, *args)
        assert bytes(bulk.heap) == model, (name, args)


def test_trap_names_the_instruction(bulk):
    wasm = read_source(BULK.format(held=HELD_FUNCS))
    for name, sub in (("copy", 0x0A), ("fill", 0x0B)):
        trap = _trap(bulk, name, 0xFFFFFFFF, 0, 1)
        assert wasm[trap.wasm_offset:trap.wasm_offset + 2] == bytes([0xFC, sub]), name


def test_bounds_follow_memory_growth(bulk):
    size = len(bulk.heap)
    _trap(bulk, "fill", size, 0x42, 1)
    assert bulk.run("grow", 1) == size // PAGE
    bulk.run("fill", size, 0x42, 1)
    bulk.run("copy", size + PAGE - 1, size, 1)
    assert bulk.heap[size] == bulk.heap[size + PAGE - 1] == 0x42
    _trap(bulk, "copy", size + PAGE, 0, 1)


def test_direction_flag_is_clear_after_a_backward_copy(bulk):
    """A copy to an overlapping higher address runs with DF set; the forward string
    instructions after it (and the host) need it clear again."""
    model = _pattern(bulk)
    bulk.run("backward_then_forward")
    _model_copy(model, 1, 0, 8)
    _model_fill(model, 100, 7, 4)
    _model_copy(model, 200, 100, 4)
    assert bytes(bulk.heap) == model


@pytest.mark.parametrize("k", range(10))
def test_values_held_across_the_fixed_registers(bulk, k):
    a = 1000
    held = sum(a + i + 1 for i in range(k))
    model = _pattern(bulk)
    assert bulk.run(f"copy_held{k}", a, 21, 7, 50) == held
    _model_copy(model, 21, 7, 50)
    assert bulk.run(f"fill_held{k}", a, 30, 0x1FE, 9) == held
    _model_fill(model, 30, 0xFE, 9)
    assert bytes(bulk.heap) == model
    with pytest.raises(Trap):
        bulk.run(f"copy_held{k}", a, 0, 0xFFFFFFF0, 0x100)
    assert bulk.run(f"copy_held{k}", a, 0, 0, 0) == held   # usable after the trap


TABLES = """
(module
  (table $a 3 funcref) (table $b 0 funcref) (table $c 70000 100000 funcref)
  (func (export "sizes") (result i64)
    (i64.or (i64.or (i64.extend_i32_u (table.size $a))
                    (i64.shl (i64.extend_i32_u (table.size $b)) (i64.const 8)))
            (i64.shl (i64.extend_i32_u (table.size $c)) (i64.const 16)))))
"""


def test_table_size(region):
    with instance(region, TABLES) as inst:
        assert inst.run("sizes") == 3 | (0 << 8) | (70000 << 16)

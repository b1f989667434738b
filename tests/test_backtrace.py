"""A trap's wasm backtrace: the functions on the guest stack at the fault, innermost first,
across direct, indirect and linked calls (pylucet-wasi prints it)."""

from __future__ import annotations

import pylucet

WAT = '''(module
  (type $t (func (param i32) (result i32)))
  (table 1 funcref) (elem (i32.const 0) $middle)
  (func $inner (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0)))
  (func $middle (param i32) (result i32) (i32.add (call $inner (local.get 0)) (i32.const 1)))
  (func (export "outer") (param i32) (result i32)
    (i32.mul (call_indirect (type $t) (local.get 0) (i32.const 0)) (i32.const 3)))
  (func $rec (export "rec") (param i32) (result i32) (call $rec (local.get 0))))'''


def test_backtrace_names_every_frame_innermost_first():
    module = pylucet.load(pylucet.compile(WAT))
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        try:
            inst.run("outer", 0)
        except pylucet.Trap as trap:
            assert trap.code == pylucet.TrapCode.IntegerDivByZero
            assert trap.backtrace == ["inner", "middle", "outer"]
        else:
            raise AssertionError("no trap")
        assert inst.run("outer", 1) == 6            # and the instance carries on


def test_a_stack_overflow_backtrace_is_the_recursion():
    module = pylucet.load(pylucet.compile(WAT))
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        try:
            inst.run("rec", 1)
        except pylucet.Trap as trap:
            frames = trap.backtrace
            assert trap.code == pylucet.TrapCode.StackOverflow
            assert len(frames) >= 100 and set(frames) == {"rec"}

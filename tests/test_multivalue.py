"""Multi-value: functions with several results and blocks/loops/ifs with params and results.

Several results travel through a return area whose address is a hidden first integer argument,
so every test with integer arguments also checks that the declared arguments shift along
(including onto the stack); and multi-value labels keep their values in stack-position slots,
so the tests branch to labels at different stack heights than the values come from, with
values below that the branch must not disturb.
"""

from __future__ import annotations

import math
import struct

import pytest

from pylucet import Trap, TrapCode

from .conftest import instantiate as _instance



CALLS = r"""
(module
  (type $sw (func (param i32 i64) (result i64 i32)))
  (type $mix (func (param i32 f64 i64 f32 i32 i32 i32 i32 i32 i64) (result f32 i64 f64 i32 i64)))
  (table 4 funcref) (elem (i32.const 0) $swap $mix $swap2)
  (func $swap (export "swap") (type $sw) (local.get 1) (local.get 0))
  (func $swap2 (type $sw) (i64.extend_i32_u (local.get 0)) (i32.wrap_i64 (local.get 1)))
  (func $mix (export "mix") (type $mix)
    (local.get 3) (local.get 9) (local.get 1) (local.get 8) (local.get 2))
  (func (export "call_swap") (param i32 i64) (result i64 i32)
    (call $swap (local.get 0) (local.get 1)))
  (func (export "call_indirect") (param i32 i64 i32) (result i64 i32)
    (call_indirect (type $sw) (local.get 0) (local.get 1) (local.get 2)))
  ;; values below the call, held in registers before it, and results consumed one by one
  (func (export "call_mix") (param $a i32) (result i64) (local $t i64)
    (i64.extend_i32_u (i32.add (local.get $a) (i32.const 100)))
    (call $mix (local.get $a) (f64.const 2.5) (i64.const 3) (f32.const 4.5) (i32.const 5)
               (i32.const 6) (i32.const 7) (i32.const 8) (i32.const 9) (i64.const 10))
    ;; [a+100, 4.5, 10, 2.5, 9, 3]
    (local.set $t)
    (i64.extend_i32_u) (local.get $t) (i64.add) (local.set $t)
    (i64.trunc_f64_s) (local.get $t) (i64.add) (local.set $t)
    (local.get $t) (i64.add) (local.set $t)
    (i64.trunc_f32_s) (local.get $t) (i64.add) (local.set $t)
    (local.get $t) (i64.add))
  (func (export "call_indirect_mix") (param i32) (result f32 i64 f64 i32 i64)
    (call_indirect (type $mix) (i32.const 1) (f64.const -0.5) (i64.const -3) (f32.const 1.25)
      (i32.const 5) (i32.const 6) (i32.const 7) (i32.const 8) (i32.const 9) (i64.const -1)
      (local.get 0)))
  ;; the results of one call are the arguments of the next
  (func (export "swap_twice") (param i32 i64) (result i32 i64)
    (call $back (call $swap (local.get 0) (local.get 1))))
  (func $back (param i64 i32) (result i32 i64) (local.get 1) (local.get 0))
  (func (export "early_return") (param i32) (result i32 f32)
    (block (br_if 0 (local.get 0)) (return (i32.const 1) (f32.const 1.5)))
    (i32.const 2) (f32.const 2.5))
  (func (export "trap_after") (result i32 i32) (i32.const 1) (i32.const 2) (unreachable))
)
"""


def test_calls(region):
    with _instance(region, CALLS) as inst:
        assert inst.run("swap", 1, 2) == (2, 1)
        assert inst.run("swap", -1, -2) == (-2, -1)
        assert inst.run_bits("swap", 0xFFFF_FFFF, 5) == (5, 0xFFFF_FFFF)
        assert inst.run("mix", 1, 2.5, 3, 4.5, 5, 6, 7, 8, 9, 10) == (4.5, 10, 2.5, 9, 3)
        assert inst.run("call_swap", -1, 5) == (5, -1)
        assert inst.run("call_indirect", 3, 1 << 40, 0) == (1 << 40, 3)
        assert inst.run("call_indirect", -1, (1 << 40) + 7, 2) == (0xFFFF_FFFF, 7)
        assert inst.run("call_mix", 1) == 101 + 4 + 10 + 2 + 9 + 3
        assert inst.run("call_indirect_mix", 1) == (1.25, -1, -0.5, 9, -3)
        assert inst.run("swap_twice", 7, 9) == (7, 9)
        assert inst.run("early_return", 0) == (1, 1.5)
        assert inst.run("early_return", 1) == (2, 2.5)
        with pytest.raises(Trap) as e:
            inst.run("call_indirect", 1, 2, 1)
        assert e.value.code == TrapCode.BadSignature
        with pytest.raises(Trap) as e:
            inst.run("call_indirect", 1, 2, 3)
        assert e.value.code == TrapCode.IndirectCallToNull
        with pytest.raises(Trap) as e:
            inst.run("trap_after")
        assert e.value.code == TrapCode.Unreachable
        assert inst.run("swap", 4, 5) == (5, 4)   # still usable after the traps


def test_many_stack_args_and_results(region):
    """Six declared integer args: with the hidden pointer in rdi, the sixth goes on the
    stack; and with 20 params and 20 results, both the stack args and the area are long."""
    n = 20
    types = ["i32", "i64", "f32", "f64"]
    params = " ".join(types[k % 4] for k in range(n))
    results = " ".join(types[(k + 1) % 4] for k in range(n))
    body = " ".join(f"(local.get {(k + 1) % n})" for k in range(n))
    wat = f"""(module
      (type $t (func (param {params}) (result {results})))
      (table 1 funcref) (elem (i32.const 0) $rot)
      (func $rot (export "rot") (type $t) {body})
      (func (export "six") (param i32 i32 i32 i32 i32 i32) (result i32 i32)
        (local.get 5) (local.get 0))
      (func (export "via_call") (param {params}) (result {results})
        {" ".join(f"(local.get {k})" for k in range(n))} (call $rot))
      (func (export "via_table") (param {params}) (result {results})
        {" ".join(f"(local.get {k})" for k in range(n))} (call_indirect (type $t) (i32.const 0))))"""
    args = []
    for k in range(n):
        t = types[k % 4]
        args.append(k * 3 - 7 if t[0] == "i" else k + 0.5)
    want = tuple(args[(k + 1) % n] for k in range(n))
    with _instance(region, wat) as inst:
        assert inst.run("six", 1, 2, 3, 4, 5, 6) == (6, 1)
        assert inst.run("rot", *args) == want
        assert inst.run("via_call", *args) == want
        assert inst.run("via_table", *args) == want


def test_float_bits_exact(region):
    wat = """(module (func (export "f") (param f32 f64) (result f64 f32 i32)
        (local.get 1) (local.get 0) (i32.const -1)))"""
    snan32, snan64 = 0x7FA0_0001, 0x7FF4_0000_0000_0001
    with _instance(region, wat) as inst:
        assert inst.run_bits("f", snan32, snan64) == (snan64, snan32, 0xFFFF_FFFF)
        r = inst.run("f", -0.0, math.inf)
        assert r[0] == math.inf and math.copysign(1, r[1]) == -1 and r[2] == -1


BLOCKS = r"""
(module
  (func (export "block_params") (param i32) (result i32)
    (local.get 0) (i32.const 5) (block (param i32 i32) (result i32) (i32.sub)))
  (func (export "block_results") (param i32) (result i32 i64)
    (block (result i32 i64)
      (i32.const 7) (i64.const 8) (br_if 0 (local.get 0)) (drop) (drop)
      (i32.const 1) (i64.const 2)))
  ;; a value below the block, in a register, and br_if whose fall-through keeps its values
  (func (export "br_if_keeps") (param i32) (result i32) (local $x i32)
    (i32.mul (local.get 0) (i32.const 3))
    (block (result i32 i32)
      (i32.const 100) (i32.const 200)
      (local.get 0) (local.get 0) (br_if 0 (local.get 0))
      (drop) (drop) (i32.add) (i32.const 1))
    (i32.add) (i32.add))
  (func (export "fac") (param i64) (result i64)
    (i64.const 1) (local.get 0)
    (loop $l (param i64 i64) (result i64)
      (local.set 0) (local.get 0) (i64.eqz)
      (if (param i64) (result i64) (then)
        (else (local.get 0) (i64.mul) (local.get 0) (i64.const 1) (i64.sub) (br $l)))))
  ;; one loop param, carried by br_if with the loop's values in flight
  (func (export "count") (param i32) (result i32)
    (i32.const 0)
    (loop $l (param i32) (result i32)
      (i32.add (i32.const 1))
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (br_if $l (i32.ge_s (local.get 0) (i32.const 0)))))
  (func (export "pick") (param i32) (result i32 f64)
    (block $a (result i32 f64)
      (block $b (result i32 f64)
        (i32.const 3) (f64.const 1.5) (local.get 0) (br_table $a $b $a))
      (drop) (drop) (i32.const 9) (f64.const 9.5)))
  ;; br_table to a loop with params and to blocks with one and several results
  (func (export "table_mixed") (param i32) (result i32) (local $n i32)
    (block $one (result i32)
      (block $two (result i32 i32)
        (i32.const 0)
        (loop $l (param i32) (result i32 i32)
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (i32.add (i32.const 10))
          (i32.const 2) (br_if $two (i32.gt_u (local.get $n) (i32.const 3)))
          (drop) (local.get 0) (br_table $l $one $one $l)))
      (i32.add))
    (i32.add (i32.mul (local.get $n) (i32.const 1000))))
  (func (export "if_params") (param i32 i32) (result i32)
    (local.get 1)
    (if (param i32) (result i32) (local.get 0)
      (then (i32.const 10) (i32.add)) (else (i32.const 20) (i32.add))))
  (func (export "if_no_else") (param i32) (result i32 i32)
    (i32.const 1) (i32.const 2)
    (if (param i32 i32) (result i32 i32) (local.get 0)
      (then (drop) (drop) (i32.const 3) (i32.const 4))))
  (func (export "if_results") (param i32) (result f32 i32)
    (if (result f32 i32) (local.get 0)
      (then (f32.const 1.5) (i32.const 1))
      (else (f32.const 2.5) (i32.const 2))))
  (func (export "return_nested") (param i32) (result i64 i32)
    (i64.const 50)
    (block (result i32 i32)
      (i32.const 4) (i32.const 5)
      (if (local.get 0) (then (return (i64.const 40) (i32.const 41)))))
    (i32.add) (drop)
    (local.get 0))
)
"""


def test_blocks(region):
    with _instance(region, BLOCKS) as inst:
        assert inst.run("block_params", 12) == 7
        assert inst.run("block_results", 1) == (7, 8)
        assert inst.run("block_results", 0) == (1, 2)
        assert inst.run("br_if_keeps", 0) == 0 + 300 + 1
        assert inst.run("br_if_keeps", 4) == 12 + 4 + 4
        assert inst.run("fac", 5) == 120
        assert inst.run("fac", 20) == 2432902008176640000
        assert inst.run("count", 5) == 6
        assert [inst.run("pick", i) for i in (0, 1, 2, 7)] == [
            (3, 1.5), (9, 9.5), (3, 1.5), (3, 1.5)]
        # index 0 and 3 loop round again (n counts the rounds), 1 and 2 leave through $one
        assert inst.run("table_mixed", 1) == 1000 + 10
        assert inst.run("table_mixed", 2) == 1000 + 10
        assert inst.run("table_mixed", 0) == 4000 + 40 + 2   # leaves through $two on round 4
        assert inst.run("table_mixed", 9) == 4000 + 40 + 2   # the default, $l, loops too
        assert inst.run("if_params", 1, 5) == 15
        assert inst.run("if_params", 0, 5) == 25
        assert inst.run("if_no_else", 0) == (1, 2)
        assert inst.run("if_no_else", 1) == (3, 4)
        assert inst.run("if_results", 1) == (1.5, 1)
        assert inst.run("if_results", 0) == (2.5, 2)
        assert inst.run("return_nested", 1) == (40, 41)
        assert inst.run("return_nested", 0) == (50, 0)


FLOATS = r"""
(module
  ;; Fibonacci in a pair of f64 loop params with an i32 between them; br_if 1 returns the
  ;; top one straight from the loop
  (func (export "fib") (param i32) (result f64)
    (f64.const 0) (local.get 0) (f64.const 1)
    (loop $l (param f64 i32 f64) (result f64 i32 f64)
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (br_if 1 (i32.lt_s (local.get 0) (i32.const 0)))
      (call $step)
      (br $l))
    (drop) (drop))
  ;; the same, leaving the loop with all three values through an enclosing block
  (func (export "fib_block") (param i32) (result f64)
    (block $done (result f64 i32 f64)
      (f64.const 0) (local.get 0) (f64.const 1)
      (loop $l (param f64 i32 f64) (result f64 i32 f64)
        (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
        (br_if $done (i32.lt_s (local.get 0) (i32.const 0)))
        (call $step)
        (br $l)))
    (drop) (drop))
  (func $step (param f64 i32 f64) (result f64 i32 f64)
    (local.get 2) (local.get 1) (f64.add (local.get 0) (local.get 2)))
  ;; values computed into xmm registers and constants, carried out by br_table and br_if
  (func (export "fsel") (param i32 f32) (result f32 f64)
    (block $a (result f32 f64)
      (block $b (result f32 f64)
        (f32.mul (local.get 1) (f32.const 2))
        (f64.promote_f32 (f32.add (local.get 1) (f32.const 1)))
        (br_if $a (i32.eq (local.get 0) (i32.const 7)))
        (local.get 0)
        (br_table $b $a))
      (f64.add (f64.const 0.25))
      (local.set 1 (f32.const 0))
      (return))
    (f64.neg))
)
"""


def test_float_labels(region):
    with _instance(region, FLOATS) as inst:
        a, b = 0, 1
        for n in range(10):
            assert inst.run("fib", n) == float(b)
            assert inst.run("fib_block", n) == float(a)
            a, b = b, a + b
        assert inst.run("fsel", 0, 1.5) == (3.0, 2.75)
        assert inst.run("fsel", 1, 1.5) == (3.0, -2.5)
        assert inst.run("fsel", 7, 1.5) == (3.0, -2.5)


def test_run_entry_points(region):
    """run, run_bits and run_func_index share one return area per instance; a wrong call
    is refused before it reaches the guest."""
    wat = """(module
      (func (export "three") (param i64) (result i64 i32 f32)
        (local.get 0) (i32.wrap_i64 (local.get 0)) (f32.convert_i64_s (local.get 0)))
      (func (export "none")))"""
    with _instance(region, wat) as inst:
        assert inst.run("three", -2) == (-2, -2, -2.0)
        assert inst.run_func_index(0, 5) == (5, 5, 5.0)
        assert inst.run_bits("three", 3) == (3, 3, struct.unpack("<I", struct.pack("<f", 3.0))[0])
        assert inst.run("none") is None
        with pytest.raises(TypeError):
            inst.run("three")
        with pytest.raises(TypeError):
            inst.run("three", 1, 2)
        assert inst.run("three", 1 << 40) == (1 << 40, 0, float(1 << 40))

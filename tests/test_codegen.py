"""The code generator, run for real: WAT compiled to machine code, loaded with the runtime's
``load_code`` and executed in a region slot; results and traps are compared with a model of
the wasm semantics written in Python.

Every integer operator is checked on edge values (0, ±1, INT_MIN, INT_MAX, shift counts at and
beyond the width) with its operands in each form the code generator treats differently:
registers, frame slots, immediates on either side, and both constant (folded at compile time).
"""

from __future__ import annotations

import itertools

import pytest

from pylucet import Trap, TrapCode, Unsupported
from pylucet.compiler.driver import compile_module, read_source

from .conftest import disassemble, instantiate as instance




# --- a model of the integer operators ---------------------------------------------------------------

def mask(w):
    return (1 << w) - 1


def sx(v, w):
    v &= mask(w)
    return v - (1 << w) if v >> (w - 1) else v


class WasmTrap(Exception):
    def __init__(self, code):
        self.code = code


def _div_s(a, b, w):
    a, b = sx(a, w), sx(b, w)
    if b == 0:
        raise WasmTrap(TrapCode.IntegerDivByZero)
    if a == -(1 << (w - 1)) and b == -1:
        raise WasmTrap(TrapCode.IntegerOverflow)
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem_s(a, b, w):
    a, b = sx(a, w), sx(b, w)
    if b == 0:
        raise WasmTrap(TrapCode.IntegerDivByZero)
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def _div_u(a, b, w):
    if b & mask(w) == 0:
        raise WasmTrap(TrapCode.IntegerDivByZero)
    return (a & mask(w)) // (b & mask(w))


def _rem_u(a, b, w):
    if b & mask(w) == 0:
        raise WasmTrap(TrapCode.IntegerDivByZero)
    return (a & mask(w)) % (b & mask(w))


def _rotl(a, b, w):
    a, n = a & mask(w), b % w
    return (a << n) | (a >> (w - n))


BINARY = {
    "add": lambda a, b, w: a + b,
    "sub": lambda a, b, w: a - b,
    "mul": lambda a, b, w: a * b,
    "div_s": _div_s, "div_u": _div_u, "rem_s": _rem_s, "rem_u": _rem_u,
    "and": lambda a, b, w: a & b,
    "or": lambda a, b, w: a | b,
    "xor": lambda a, b, w: a ^ b,
    "shl": lambda a, b, w: a << (b % w),
    "shr_s": lambda a, b, w: sx(a, w) >> (b % w),
    "shr_u": lambda a, b, w: (a & mask(w)) >> (b % w),
    "rotl": _rotl,
    "rotr": lambda a, b, w: _rotl(a, w - b % w, w),
    "eq": lambda a, b, w: a & mask(w) == b & mask(w),
    "ne": lambda a, b, w: a & mask(w) != b & mask(w),
    "lt_s": lambda a, b, w: sx(a, w) < sx(b, w),
    "lt_u": lambda a, b, w: a & mask(w) < b & mask(w),
    "gt_s": lambda a, b, w: sx(a, w) > sx(b, w),
    "gt_u": lambda a, b, w: a & mask(w) > b & mask(w),
    "le_s": lambda a, b, w: sx(a, w) <= sx(b, w),
    "le_u": lambda a, b, w: a & mask(w) <= b & mask(w),
    "ge_s": lambda a, b, w: sx(a, w) >= sx(b, w),
    "ge_u": lambda a, b, w: a & mask(w) >= b & mask(w),
}
COMPARES = {"eq", "ne", "lt_s", "lt_u", "gt_s", "gt_u", "le_s", "le_u", "ge_s", "ge_u"}
UNARY = {
    "clz": lambda a, w: w - (a & mask(w)).bit_length(),
    "ctz": lambda a, w: ((a & -a) & mask(w)).bit_length() - 1 if a & mask(w) else w,
    "popcnt": lambda a, w: bin(a & mask(w)).count("1"),
    "eqz": lambda a, w: a & mask(w) == 0,
    "extend8_s": lambda a, w: sx(a, 8),
    "extend16_s": lambda a, w: sx(a, 16),
    "extend32_s": lambda a, w: sx(a, 32),
}
CONVERSIONS = {  # name: (source type, result type, model)
    "i32.wrap_i64": ("i64", "i32", lambda a: a),
    "i64.extend_i32_s": ("i32", "i64", lambda a: sx(a, 32)),
    "i64.extend_i32_u": ("i32", "i64", lambda a: a & mask(32)),
}
EDGE = {
    "i32": [0, 1, 2, 3, 7, 31, 32, 33, 100, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF_FFFE,
            0x1234_5678, 0xFFFF_FFF9],
    "i64": [0, 1, 2, 3, 7, 63, 64, 65, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF_FFFF_FFFF,
            0x8000_0000_0000_0000, mask(64), mask(64) - 1, 0x1234_5678_9ABC_DEF0,
            0x1_0000_0000],
}
WIDTH = {"i32": 32, "i64": 64}


def expect(model, *args):
    """(result bits, None) or (None, trap code) for the model applied to ``args``."""
    try:
        return model(*args), None
    except WasmTrap as t:
        return None, t.code


def check_call(inst, name, args, rtype, want):
    value, trap = want
    if trap is not None:
        with pytest.raises(Trap) as info:
            inst.run_bits(name, *args)
        assert info.value.code == trap, (name, args)
    else:
        (got,) = inst.run_bits(name, *args)
        assert got == int(value) & mask(WIDTH[rtype]), (name, [hex(a) for a in args])


# Operand shapes: how the two operands reach the operator. "slots" keeps the parameters in frame
# slots by giving six busier locals the registers; "computed" makes them scratch registers.
_BUSY = "".join(f"(local $l{i} i32)" for i in range(6))
_BUSY_USE = "".join(f"(local.set $l{i} (i32.add (local.get $l{i}) (i32.const 1)))" * 4 for i in range(6))


def _operand_forms(t):
    return {
        "params": ("(param $a {t}) (param $b {t})", "", "(local.get $a)", "(local.get $b)"),
        "slots": ("(param $a {t}) (param $b {t})", _BUSY + _BUSY_USE, "(local.get $a)",
                  "(local.get $b)"),
        "computed": ("(param $a {t}) (param $b {t})", "",
                     "({t}.add (local.get $a) ({t}.const 0))", "({t}.or (local.get $b) ({t}.const 0))"),
    }


@pytest.mark.parametrize("t", ["i32", "i64"])
def test_binary_operators(region, t):
    w = WIDTH[t]
    funcs, cases = [], []
    for op, model in BINARY.items():
        rtype = "i32" if op in COMPARES else t
        for form, (params, prelude, a, b) in _operand_forms(t).items():
            name = f"{op}_{form}"
            funcs.append(f'(func (export "{name}") {params.format(t=t)} (result {rtype}) '
                         f'{prelude} ({t}.{op} {a.format(t=t)} {b.format(t=t)}))')
            cases.extend((name, (x, y), rtype, expect(model, x, y, w))
                         for x, y in itertools.product(EDGE[t], EDGE[t]))
        for c in EDGE[t]:
            # a constant on either side (immediates, swapped compares), and both (folded)
            for side, expr in (("r", f"({t}.{op} (local.get 0) ({t}.const {c}))"),
                               ("l", f"({t}.{op} ({t}.const {c}) (local.get 0))")):
                name = f"{op}_{side}{c}"
                funcs.append(f'(func (export "{name}") (param {t}) (result {rtype}) {expr})')
                for x in EDGE[t]:
                    args = (x, c) if side == "r" else (c, x)
                    cases.append((name, (x,), rtype, expect(model, *args, w)))
            for x in EDGE[t][::3]:
                name = f"{op}_k{x}_{c}"
                funcs.append(f'(func (export "{name}") (result {rtype}) '
                             f'({t}.{op} ({t}.const {x}) ({t}.const {c})))')
                cases.append((name, (), rtype, expect(model, x, c, w)))
    with instance(region, "(module " + "\n".join(funcs) + ")") as inst:
        for name, args, rtype, want in cases:
            check_call(inst, name, args, rtype, want)


@pytest.mark.parametrize("t", ["i32", "i64"])
def test_unary_operators_and_conversions(region, t):
    w = WIDTH[t]
    funcs, cases = [], []
    for op, model in UNARY.items():
        if op == "extend32_s" and t == "i32":
            continue
        rtype = "i32" if op == "eqz" else t
        for form, arg in (("p", "(local.get 0)"), ("r", f"({t}.xor (local.get 0) ({t}.const 0))")):
            funcs.append(f'(func (export "{op}_{form}") (param {t}) (result {rtype}) ({t}.{op} {arg}))')
            cases.extend((f"{op}_{form}", (x,), rtype, (model(x, w), None)) for x in EDGE[t])
        for x in EDGE[t]:
            funcs.append(f'(func (export "{op}_k{x}") (result {rtype}) ({t}.{op} ({t}.const {x})))')
            cases.append((f"{op}_k{x}", (), rtype, (model(x, w), None)))
    for conv, (src, dst, model) in CONVERSIONS.items():
        if src != t:
            continue
        for form, arg in (("p", "(local.get 0)"), ("r", f"({t}.xor (local.get 0) ({t}.const 0))"),
                          ("s", "(local.get 0)")):
            prelude = _BUSY + _BUSY_USE if form == "s" else ""
            funcs.append(f'(func (export "{conv}_{form}") (param {t}) (result {dst}) {prelude} '
                         f'({conv} {arg}))')
            cases.extend((f"{conv}_{form}", (x,), dst, (model(x), None)) for x in EDGE[t])
        for x in EDGE[t]:
            funcs.append(f'(func (export "{conv}_k{x}") (result {dst}) ({conv} ({t}.const {x})))')
            cases.append((f"{conv}_k{x}", (), dst, (model(x), None)))
    with instance(region, "(module " + "\n".join(funcs) + ")") as inst:
        for name, args, rtype, want in cases:
            check_call(inst, name, args, rtype, want)
        features = inst.compiled.data.features
        assert {"lzcnt", "bmi1", "popcnt"} <= features


@pytest.mark.parametrize("t", ["i32", "i64"])
def test_compares_fused_into_branches_and_selects(region, t):
    funcs = []
    for op in sorted(COMPARES):
        funcs.append(f'(func (export "sel_{op}") (param {t} {t}) (result i32) '
                     f'(select (i32.const 11) (i32.const 22) ({t}.{op} (local.get 0) (local.get 1))))')
        funcs.append(f'(func (export "brif_{op}") (param {t} {t}) (result i32) (block $l (result i32) '
                     f'(drop (br_if $l (i32.const 33) ({t}.{op} (local.get 0) (local.get 1)))) '
                     f'(i32.const 44)))')
        funcs.append(f'(func (export "if_{op}") (param {t} {t}) (result i32) '
                     f'(if (result i32) ({t}.{op} (local.get 0) (local.get 1)) '
                     f'(then (i32.const 55)) (else (i32.const 66))))')
    funcs.append(f'(func (export "brif_eqz") (param {t} {t}) (result i32) (block $l (result i32) '
                 f'(drop (br_if $l (i32.const 33) ({t}.eqz (local.get 0)))) (i32.const 44)))')
    w = WIDTH[t]
    with instance(region, "(module " + "\n".join(funcs) + ")") as inst:
        for op in sorted(COMPARES):
            for x, y in itertools.product(EDGE[t][::2], EDGE[t][::2]):
                hit = BINARY[op](x, y, w)
                assert inst.run_bits(f"sel_{op}", x, y) == (11 if hit else 22,)
                assert inst.run_bits(f"brif_{op}", x, y) == (33 if hit else 44,)
                assert inst.run_bits(f"if_{op}", x, y) == (55 if hit else 66,)
        for x in EDGE[t]:
            assert inst.run_bits("brif_eqz", x, 0) == (33 if x == 0 else 44,)


PROGRAMS = r"""
(module
  (memory 1 3)
  (global $g (mut i32) (i32.const 5))
  (global $h (mut i64) (i64.const -3))
  (global $k i64 (i64.const 0x123456789))
  (type $i2i (func (param i32) (result i32)))
  (type $i2i_again (func (param i32) (result i32)))
  (type $v2i (func (result i32)))
  (table 6 funcref)
  (elem (i32.const 0) $dbl $inc $seven)
  (func $dbl (type $i2i) (i32.mul (local.get 0) (i32.const 2)))
  (func $inc (type $i2i_again) (i32.add (local.get 0) (i32.const 1)))
  (func $seven (type $v2i) (i32.const 7))
  (func (export "call_slot") (param i32 i32) (result i32)
    (call_indirect (type $i2i) (local.get 1) (local.get 0)))
  (func (export "call_slot_v") (param i32) (result i32)
    (call_indirect (type $v2i) (local.get 0)))
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func $fact (export "fact") (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0)) (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fact (i64.sub (local.get 0) (i64.const 1)))))))
  (func $recurse (export "recurse") (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "switch") (param i32) (result i32)
    (block $d (result i32)
      (block $c (result i32)
        (block $b (result i32)
          (block $a (result i32)
            (i32.const 100) (local.get 0) (br_table $a $b $c $d))
          (i32.add (i32.const 1)) (br $d))
        (i32.add (i32.const 2)) (br $d))
      (i32.add (i32.const 3))))
  (func (export "digits") (param i32) (result i32)
    (local $count i32)
    (loop $next
      (block $zero (block $small
        (br_table $zero $small $small $small (i32.rem_u (local.get 0) (i32.const 10))))
        (local.set $count (i32.add (local.get $count) (i32.const 1))))
      (local.set 0 (i32.div_u (local.get 0) (i32.const 10)))
      (br_if $next (local.get 0)))
    (local.get $count))
  (func $many (export "many") (param i32 i64 i32 i64 i32 i64 i32 i64 i32) (result i64)
    (i64.add (i64.add (i64.add (i64.extend_i32_u (local.get 0)) (local.get 1))
                      (i64.add (i64.extend_i32_s (local.get 2)) (local.get 3)))
      (i64.add (i64.add (i64.extend_i32_u (local.get 4)) (local.get 5))
        (i64.add (i64.mul (i64.extend_i32_u (local.get 6)) (local.get 7))
                 (i64.extend_i32_s (local.get 8))))))
  (func (export "call_many") (param i32) (result i64)
    (call $many (local.get 0) (i64.const -1) (i32.const -5) (i64.const 0x100000000)
      (i32.add (local.get 0) (i32.const 7)) (i64.const 9) (i32.const 3)
      (i64.extend_i32_u (local.get 0)) (i32.const -9)))
  (func (export "pressure") (param i32) (result i32)
    (i32.add (local.get 0) (i32.add (i32.mul (local.get 0) (i32.const 3)) (i32.add (i32.mul (local.get 0) (i32.const 5))
     (i32.add (i32.mul (local.get 0) (i32.const 7)) (i32.add (i32.mul (local.get 0) (i32.const 9)) (i32.add (i32.mul (local.get 0) (i32.const 11))
      (i32.add (i32.mul (local.get 0) (i32.const 13)) (i32.add (i32.mul (local.get 0) (i32.const 15)) (i32.add (i32.mul (local.get 0) (i32.const 17))
       (i32.add (i32.mul (local.get 0) (i32.const 19)) (i32.add (i32.mul (local.get 0) (i32.const 21))
        (call $dbl (i32.mul (local.get 0) (i32.const 23)))))))))))))))
  (func (export "widths") (param i32 i64) (result i64)
    (i64.store (local.get 0) (local.get 1))
    (i64.add (i64.add (i64.add (i64.load8_s offset=1 (local.get 0)) (i64.load8_u offset=1 (local.get 0)))
                      (i64.add (i64.load16_s offset=2 (local.get 0)) (i64.load16_u offset=2 (local.get 0))))
      (i64.add (i64.add (i64.load32_s offset=4 (local.get 0)) (i64.load32_u offset=4 (local.get 0)))
               (i64.add (i64.extend_i32_u (i32.add (i32.add (i32.load8_s (local.get 0)) (i32.load8_u offset=3 (local.get 0)))
                                                   (i32.add (i32.load16_s offset=6 (local.get 0)) (i32.load16_u offset=5 (local.get 0)))))
                        (i64.extend_i32_u (i32.load offset=2 (local.get 0)))))))
  (func (export "stores") (param i32 i64)
    (i32.store8 (local.get 0) (i32.wrap_i64 (local.get 1)))
    (i32.store16 offset=2 (local.get 0) (i32.wrap_i64 (local.get 1)))
    (i64.store32 offset=4 (local.get 0) (local.get 1))
    (i64.store8 offset=8 (local.get 0) (local.get 1))
    (i64.store16 offset=10 (local.get 0) (local.get 1))
    (i32.store offset=12 (local.get 0) (i32.wrap_i64 (local.get 1)))
    (i64.store offset=16 (local.get 0) (local.get 1))
    (i32.store8 offset=24 (local.get 0) (i32.const 0xab))
    (i32.store16 offset=26 (local.get 0) (i32.const 0xbeef))
    (i64.store offset=32 (local.get 0) (i64.const -2))
    (i64.store offset=40 (local.get 0) (i64.const 0x123456789abcdef)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "load_far") (param i32) (result i32) (i32.load offset=0xFFFFFFF0 (local.get 0)))
  (func (export "load8_at_max") (result i32) (i32.load8_u (i32.const 0xFFFFFFFF)))
  (func (export "store_far") (param i32) (i64.store offset=0x80000000 (local.get 0) (i64.const 1)))
  (func (export "load_const_far") (result i64) (i64.load offset=0x7FFFFFFF (i32.const 0x10000)))
  (func (export "globals") (param i32) (result i64)
    (global.set $g (i32.add (global.get $g) (local.get 0)))
    (global.set $h (i64.sub (global.get $h) (i64.extend_i32_s (global.get $g))))
    (i64.add (i64.add (global.get $h) (i64.extend_i32_u (global.get $g))) (global.get $k)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "sum_squares") (param $n i32) (result i64)
    (local $i i32) (local $s i64)
    (block $out (loop $fill
      (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
      (i64.store (i32.shl (local.get $i) (i32.const 3))
                 (i64.mul (i64.extend_i32_u (local.get $i)) (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $fill)))
    (local.set $i (i32.const 0))
    (block $out (loop $add
      (br_if $out (i32.eqz (i32.lt_u (local.get $i) (local.get $n))))
      (local.set $s (i64.add (local.get $s) (i64.load (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $add)))
    (local.get $s))
  (func (export "branches") (param i32 i32) (result i32)
    (local $x i32)
    (if (i32.gt_s (local.get 0) (local.get 1)) (then (local.set $x (i32.const 1))) (else (local.set $x (i32.const 2))))
    (if (local.get 0) (then (local.set $x (i32.add (local.get $x) (i32.const 10)))))
    (if (i32.eqz (local.get 1)) (then (local.set $x (i32.add (local.get $x) (i32.const 100)))))
    (i32.add (local.get $x)
      (if (result i32) (i32.and (local.get 0) (i32.const 1)) (then (i32.const 1000)) (else (i32.const 2000)))))
  (func (export "lazy_locals") (param i32) (result i32)
    (local $y i32)
    (local.set $y (local.get 0))
    (local.get $y)
    (local.set $y (i32.const 7))
    (local.get $y)
    (local.tee $y (i32.const 9))
    (i32.add) (i32.add))
  (func (export "select") (param i32 i32 i32) (result i32)
    (i32.add (select (local.get 0) (local.get 1) (local.get 2))
             (select (i32.const 5) (local.get 1) (i32.lt_u (local.get 2) (i32.const 3)))))
  (func (export "early_return") (param i32) (result i32)
    (if (local.get 0) (then (return (i32.const 42))))
    (block (drop (br_if 1 (i32.const 43) (i32.eq (local.get 0) (i32.const 0)))))
    (i32.const 44))
  (func (export "dead_code") (param i32) (result i32)
    (block $b (result i32)
      (br $b (i32.const 1))
      (i32.add (unreachable) (call $fib (i32.const 3)))
      (loop (br 0)))
    (if (result i32) (local.get 0) (then (return (i32.const 2)) (i32.const 5)) (else (i32.const 3)))
    (i32.add))
  (func (export "loop_result") (param i32) (result i32)
    (i32.add (loop (result i32) (i32.const 1)) (loop $l (result i32) (local.get 0))))
  (func (export "boom") (unreachable))
  (func (export "div_s") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "rem_s_neg1") (param i32) (result i32) (i32.rem_s (local.get 0) (i32.const -1)))
  (func (export "div_s_neg1") (param i64) (result i64) (i64.div_s (local.get 0) (i64.const -1)))
  (func (export "many_locals") (param $n i32) (result i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d i64) (local $e i64) (local $f i64) (local $g i64)
    (loop $l1
      (local.set $a (i64.add (local.get $a) (i64.extend_i32_u (local.get $n))))
      (local.set $b (i64.xor (local.get $b) (local.get $a)))
      (local.set $c (i64.add (local.get $c) (i64.rotl (local.get $b) (local.get $a))))
      (local.set $d (i64.sub (local.get $d) (local.get $c)))
      (local.set $e (i64.add (local.get $e) (i64.mul (local.get $d) (local.get $b))))
      (local.set $f (i64.add (local.get $f) (i64.shr_s (local.get $e) (local.get $c))))
      (local.set $g (i64.add (local.get $g) (i64.shr_u (local.get $f) (i64.const 3))))
      (br_if $l1 (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (i64.add (i64.add (i64.add (local.get $a) (local.get $b)) (i64.add (local.get $c) (local.get $d)))
             (i64.add (i64.add (local.get $e) (local.get $f)) (local.get $g))))
)
"""


def _many_locals(n):
    M = mask(64)
    a = b = c = d = e = f = g = 0
    while True:
        a = (a + n) & M
        b ^= a
        c = (c + _rotl(b, a, 64)) & M
        d = (d - c) & M
        e = (e + d * b) & M
        f = (f + (sx(e, 64) >> (c % 64))) & M
        g = (g + (f >> 3)) & M
        n = (n - 1) & mask(32)
        if not n:
            break
    return sx(a + b + c + d + e + f + g, 64)


@pytest.fixture(scope="module")
def programs(region):
    with instance(region, PROGRAMS) as inst:
        yield inst


def test_recursion_and_loops(programs):
    fib = [0, 1]
    while len(fib) < 25:
        fib.append(fib[-1] + fib[-2])
    assert [programs.run("fib", n) for n in range(25)] == fib
    assert programs.run("fact", 20) == 2432902008176640000
    assert programs.run("sum_squares", 1000) == sum(i * i for i in range(1000))
    assert programs.run("sum_squares", 0) == 0
    for n in (1, 5, 40):
        assert programs.run("many_locals", n) == _many_locals(n)


def test_branch_tables(programs):
    assert [programs.run("switch", i) for i in range(-1, 6)] == [100, 101, 102, 103, 100, 100, 100]
    for n in (0, 7, 10, 101, 1234567, 0xFFFFFFFF):
        expected, v = 0, n
        while True:
            expected += v % 10 != 0
            v //= 10
            if not v:
                break
        assert programs.run("digits", n) == expected, n


def test_calls(programs):
    for x in (0, 1, 100, 0xFFFFFFFD):
        args = (x, -1, -5, 1 << 32, (x + 7) & mask(32), 9, 3, x, -9)
        expected = (args[0] + args[1] + args[2] + args[3] + args[4] + args[5]
                    + args[6] * args[7] + args[8])
        assert programs.run("call_many", x) == sx(expected, 64)
        assert programs.run("pressure", x) == sx(x * (1 + sum(range(3, 23, 2)) + 46), 32)


def test_call_indirect(programs):
    assert programs.run("call_slot", 0, 21) == 42
    assert programs.run("call_slot", 1, 21) == 22     # an equal type with another index
    assert programs.run("call_slot_v", 2) == 7
    for slot, args, code in ((2, (5,), TrapCode.BadSignature),
                             (0, (), TrapCode.BadSignature),
                             (3, (5,), TrapCode.IndirectCallToNull),
                             (6, (5,), TrapCode.TableOutOfBounds),
                             (0xFFFFFFFF, (5,), TrapCode.TableOutOfBounds)):
        with pytest.raises(Trap) as info:
            if args:
                programs.run("call_slot", slot, *args)
            else:
                programs.run("call_slot_v", slot)
        assert info.value.code == code
    assert programs.run("call_slot", 1, 1) == 2      # still usable after traps


def test_memory_widths(programs):
    for addr, v in ((0, 0x0102030405060708), (100, -1), (1000, 0x8081828384858687 - (1 << 64))):
        b = (v & mask(64)).to_bytes(8, "little")

        def le(lo, n, signed):
            return int.from_bytes(b[lo:lo + n], "little", signed=signed)
        expected = (le(1, 1, True) + le(1, 1, False) + le(2, 2, True) + le(2, 2, False)
                    + le(4, 4, True) + le(4, 4, False)
                    + ((le(0, 1, True) + le(3, 1, False) + le(6, 2, True) + le(5, 2, False)) & mask(32))
                    + le(2, 4, False))
        assert programs.run("widths", addr, v) == sx(expected, 64)
    programs.run("stores", 256, 0x1122334455667788)
    heap = programs.heap
    assert heap[256] == 0x88 and heap[258:260] == b"\x88\x77"
    assert heap[260:264] == bytes.fromhex("88776655")
    assert heap[264] == 0x88 and heap[266:268] == b"\x88\x77"
    assert heap[268:272] == bytes.fromhex("88776655")
    assert heap[272:280] == (0x1122334455667788).to_bytes(8, "little")
    assert heap[280] == 0xAB and heap[282:284] == b"\xef\xbe"
    assert heap[288:296] == b"\xfe" + b"\xff" * 7
    assert heap[296:304] == (0x123456789abcdef).to_bytes(8, "little")


def test_heap_out_of_bounds(programs):
    size = programs.run("size") * 65536
    assert programs.run("load", size - 4) == 0
    for name, args in (("load", (size - 3,)), ("load", (0xFFFFFFFF,)), ("load_far", (0x20,)),
                       ("load_far", (0xFFFFFFFF,)), ("load8_at_max", ()), ("store_far", (0,)),
                       ("load_const_far", ())):
        with pytest.raises(Trap) as info:
            programs.run(name, *args)
        assert info.value.code == TrapCode.HeapOutOfBounds, name


def test_traps(programs):
    cases = [("div_s", (1, 0), TrapCode.IntegerDivByZero),
             ("div_s", (-(1 << 31), -1), TrapCode.IntegerOverflow),
             ("div_s_neg1", (-(1 << 63),), TrapCode.IntegerOverflow),
             ("boom", (), TrapCode.Unreachable),
             ("recurse", (0,), TrapCode.StackOverflow)]
    for name, args, code in cases:
        with pytest.raises(Trap) as info:
            programs.run(name, *args)
        assert info.value.code == code, name
    assert programs.run("div_s", -(1 << 31), 1) == -(1 << 31)
    assert programs.run("div_s", -7, 2) == -3
    assert programs.run("rem_s_neg1", -(1 << 31)) == 0
    assert programs.run("div_s_neg1", 5) == -5
    assert programs.run("fib", 10) == 55      # still usable after all those traps


def test_trap_sites_name_the_wasm_instruction(programs):
    with pytest.raises(Trap) as info:
        programs.run("boom")
    wasm = read_source(PROGRAMS)
    assert wasm[info.value.wasm_offset] == 0x00    # unreachable
    with pytest.raises(Trap) as info:
        programs.run("div_s", 1, 0)
    assert wasm[info.value.wasm_offset] == 0x6D    # i32.div_s


def test_globals_and_memory_growth(programs):
    g, h = 5, -3
    for x in (1, 2, -7):
        g = sx(g + x, 32)
        h = sx(h - g, 64)
        assert programs.run("globals", x) == sx(h + (g & mask(32)) + 0x123456789, 64)
    before = programs.run("size")
    assert programs.run("grow", 0) == before
    assert programs.run("grow", 1) == before
    assert programs.run("size") == before + 1
    assert programs.run("grow", 10) == -1          # beyond the declared maximum of 3
    assert programs.run("size") == before + 1


def test_control_flow(programs):
    for x, y in itertools.product((0, 1, -1, 5), (0, 1, -1, 5)):
        v = 1 if x > y else 2
        v += 10 if x else 0
        v += 100 if y == 0 else 0
        v += 1000 if x & 1 else 2000
        assert programs.run("branches", x, y) == v
    assert [programs.run("lazy_locals", x) for x in (0, 3)] == [16, 19]
    for a, b, c in itertools.product((0, 7), (9, 0), (0, 1, 2, 3, 4)):
        assert programs.run("select", a, b, c) == (a if c else b) + (5 if c < 3 else b)
    assert [programs.run("early_return", x) for x in (0, 1, 2)] == [43, 42, 42]
    assert [programs.run("dead_code", x) for x in (0, 1)] == [4, 2]
    assert programs.run("loop_result", 41) == 42


# --- what the code looks like -----------------------------------------------------------------------

def _disassemble(wat: str, interrupt_checks: bool = False):
    return disassemble(wat, interrupt_checks=interrupt_checks)


def test_code_shape():
    """Compares (even negated) fuse into jumps, constants into immediates, hot locals live in
    registers and `x = x + c` updates x's register in place: the loop is three instructions."""
    insns = _disassemble("""(module (func (param i32) (result i32) (local $s i32)
        (loop $l
          (local.set $s (i32.add (local.get $s) (i32.const 3)))
          (br_if $l (i32.eqz (i32.ge_s (local.get $s) (local.get 0)))))
        (local.get $s)))""")
    mnemonics = [m for m, _ in insns]
    loop = mnemonics.index("xor") + 1
    assert mnemonics[loop:loop + 3] == ["add", "cmp", "jl"], insns
    assert not any("ptr [rsp" in ops for _, ops in insns), insns   # no frame traffic


def test_interrupt_checks_at_entry_and_loop_headers():
    """With interrupt checks, a function entry and each loop iteration poll the poll page with
    one load (and nothing else changes); without, no poll is emitted at all."""
    from pylucet.module.abi import VMCTX_POLL
    wat = """(module (func (param i32) (result i32) (local $s i32)
        (loop $l
          (local.set $s (i32.add (local.get $s) (i32.const 3)))
          (br_if $l (i32.eqz (i32.ge_s (local.get $s) (local.get 0)))))
        (local.get $s)))"""
    check = ("mov", f"r11d, dword ptr [r14 - {-VMCTX_POLL:#x}]")
    insns = _disassemble(wat, interrupt_checks=True)
    assert insns.count(check) == 2, insns
    at = [k for k, i in enumerate(insns) if i == check]
    mnemonics = [m for m, _ in insns]
    assert mnemonics[at[1] + 1:at[1] + 4] == ["add", "cmp", "jl"], insns   # the loop body
    assert check not in _disassemble(wat, interrupt_checks=False)


def test_unsupported():
    with pytest.raises(Unsupported, match="v128 parameters are not supported yet"):
        compile_module("(module (func (param v128)))")


ARGS_EVERYWHERE = r"""
(module (memory 1 10)
  (type $m (func (param i32 i64 i32 i64 i32 i64 i32 i64 i32) (result i64)))
  (table 2 funcref) (elem (i32.const 0) $many)
  (func $many (type $m)
    (i64.add (i64.add (i64.add (i64.extend_i32_u (local.get 0)) (i64.mul (local.get 1) (i64.const 3)))
                      (i64.add (i64.extend_i32_s (local.get 2)) (i64.mul (local.get 3) (i64.const 5))))
      (i64.add (i64.add (i64.extend_i32_u (local.get 4)) (i64.mul (local.get 5) (i64.const 7)))
        (i64.add (i64.mul (i64.extend_i32_u (local.get 6)) (local.get 7))
                 (i64.mul (i64.extend_i32_s (local.get 8)) (i64.const 11))))))
  (func (export "f") (param $x i32) (result i64)
    (local $a i32) (local $b i64) (local $c i32) (local $d i64) (local $e i32) (local $f i64)
    (local $g i32) (local $h i64)
    (local.set $a (i32.add (local.get $x) (i32.const 1))) (local.set $b (i64.const -7))
    (local.set $c (i32.const 9)) (local.set $d (i64.extend_i32_u (local.get $x)))
    (local.set $e (i32.const -3)) (local.set $f (i64.const 0x100000000))
    (local.set $g (i32.mul (local.get $x) (local.get $x))) (local.set $h (i64.const 12345))
    (i64.add
      (i64.add (i64.extend_i32_u (local.get $x)) (i64.extend_i32_u (memory.grow (i32.const 1))))
      (i64.add
        (call $many (local.get $a) (local.get $b) (local.get $c) (local.get $d) (local.get $e)
                    (local.get $f) (local.get $g) (local.get $h) (local.get $a))
        (i64.add (i64.extend_i32_u (i32.add (local.get $a) (memory.size)))
          (call_indirect (type $m) (local.get $g) (local.get $h) (local.get $e) (local.get $f)
             (local.get $c) (local.get $d) (local.get $a) (local.get $b) (local.get $x)
             (i32.and (local.get $x) (i32.const 0)))))))
)"""


def test_stack_arguments_from_frame_locals_across_growth(region):
    """Nine-argument calls (three on the stack), direct and indirect, fed from locals of which
    some live in frame slots, with values held across a memory.grow libcall."""
    def many(*p):
        p0, p1, p2, p3, p4, p5, p6, p7, p8 = p
        return (p0 + 3 * p1 + sx(p2, 32) + 5 * p3 + p4 + 7 * p5 + p6 * p7 + 11 * sx(p8, 32))

    with instance(region, ARGS_EVERYWHERE) as inst:
        pages = 1
        for x in (0, 1, 5, 1000, 0xFFFFFFFF):
            a, b, c, d, e, f, g, h = ((x + 1) & mask(32), -7, 9, x, 0xFFFFFFFD, 1 << 32,
                                      (x * x) & mask(32), 12345)
            expected = (x + pages + many(a, b, c, d, e, f, g, h, a) + ((a + pages + 1) & mask(32))
                        + many(g, h, e, f, c, d, a, b, x))
            pages += 1
            assert inst.run_bits("f", x) == (expected & mask(64),), x

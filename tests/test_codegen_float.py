"""f32/f64 code generation at its edges: exact bits (NaN payloads, signed zeros), the wasm rules
x86 does not follow by itself (min/max, unordered compares), the exact trap bounds of the
float-to-integer conversions and correct rounding of the unsigned ones, and float values
through register pressure, calls (SysV xmm and stack arguments) and control flow."""

from __future__ import annotations

import math
import struct

import pytest

from pylucet import Trap, TrapCode
from pylucet.compiler.driver import compile_module

from .conftest import instantiate as run_module




def f32(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


def f64(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def bits(w, v):
    return f32(v) if w == 32 else f64(v)


def is_nan(w, b):
    exp = 0xFF << 23 if w == 32 else 0x7FF << 52
    return b & exp == exp and b & ((1 << (23 if w == 32 else 52)) - 1) != 0


F32_NAN_PAYLOAD = 0x7FA0_0001          # a signalling NaN with a payload
F64_NAN_PAYLOAD = 0xFFF4_0000_0000_0123


@pytest.mark.parametrize("w", (32, 64))
def test_min_max_and_sign_ops(region, w):
    t = f"f{w}"
    wat = f"""(module
      (func (export "min") (param {t} {t}) (result {t}) (t.min (local.get 0) (local.get 1)))
      (func (export "max") (param {t} {t}) (result {t}) (t.max (local.get 0) (local.get 1)))
      (func (export "min_c") (param {t}) (result {t}) (t.min (local.get 0) (t.const -0)))
      (func (export "max_c") (param {t}) (result {t}) (t.max (t.const 0) (local.get 0)))
      (func (export "abs") (param {t}) (result {t}) (t.abs (local.get 0)))
      (func (export "neg") (param {t}) (result {t}) (t.neg (local.get 0)))
      (func (export "copysign") (param {t} {t}) (result {t})
        (t.copysign (local.get 0) (local.get 1)))
      (func (export "copysign_neg") (param {t}) (result {t})
        (t.copysign (local.get 0) (t.const -1)))
    )""".replace("t.", f"{t}.")
    B = lambda v: bits(w, v)   # noqa: E731
    nan = F32_NAN_PAYLOAD if w == 32 else F64_NAN_PAYLOAD
    sign = 1 << (w - 1)
    with run_module(region, wat) as inst:
        for a, b, lo, hi in ((1.0, 2.0, 1.0, 2.0), (2.0, 1.0, 1.0, 2.0),
                             (-0.0, 0.0, -0.0, 0.0), (0.0, -0.0, -0.0, 0.0),
                             (-0.0, -0.0, -0.0, -0.0), (-5.0, math.inf, -5.0, math.inf)):
            assert inst.run_bits("min", B(a), B(b)) == (B(lo),)
            assert inst.run_bits("max", B(a), B(b)) == (B(hi),)
        for a, b in ((nan, B(1.0)), (B(1.0), nan), (nan, nan), (B(-0.0), nan)):
            for op in ("min", "max"):
                assert is_nan(w, inst.run_bits(op, a, b)[0])
        assert inst.run_bits("min_c", B(0.0)) == (B(-0.0),)
        assert inst.run_bits("max_c", B(-0.0)) == (B(0.0),)
        assert is_nan(w, inst.run_bits("min_c", nan)[0])
        # sign operations leave every other bit, NaN payloads included, alone
        assert inst.run_bits("abs", nan | sign) == (nan & ~sign,)
        assert inst.run_bits("neg", nan) == (nan ^ sign,)
        assert inst.run_bits("copysign", nan, B(-2.0)) == (nan | sign,)
        assert inst.run_bits("copysign", B(-3.0), nan & ~sign) == (B(3.0),)
        assert inst.run_bits("copysign_neg", nan & ~sign) == (nan | sign,)


@pytest.mark.parametrize("w", (32, 64))
def test_compares_with_nan_fused_and_not(region, w):
    t = f"f{w}"
    funcs = []
    for op in ("eq", "ne", "lt", "gt", "le", "ge"):
        cmp = f"({t}.{op} (local.get 0) (local.get 1))"
        funcs.append(f"""
          (func (export "v_{op}") (param {t} {t}) (result i32) {cmp})
          (func (export "z_{op}") (param {t} {t}) (result i32) (i32.eqz {cmp}))
          (func (export "br_{op}") (param {t} {t}) (result i32)
            (block (br_if 0 {cmp}) (return (i32.const 0))) (i32.const 1))
          (func (export "if_{op}") (param {t} {t}) (result i32)
            (if (result i32) {cmp} (then (i32.const 1)) (else (i32.const 0))))
          (func (export "sel_{op}") (param {t} {t}) (result i32)
            (select (i32.const 1) (i32.const 0) {cmp}))""")
    nan = bits(w, math.nan)
    vals = [bits(w, v) for v in (-1.0, -0.0, 0.0, 1.0, math.inf)] + [nan]
    model = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
             "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "ge": lambda a, b: a >= b}
    fmt = "<f" if w == 32 else "<d"
    size = "<I" if w == 32 else "<Q"
    with run_module(region, f"(module {''.join(funcs)})") as inst:
        for a in vals:
            for b in vals:
                fa = struct.unpack(fmt, struct.pack(size, a))[0]
                fb = struct.unpack(fmt, struct.pack(size, b))[0]
                for op, f in model.items():
                    want = int(f(fa, fb))
                    for form in ("v", "br", "if", "sel"):
                        assert inst.run_bits(f"{form}_{op}", a, b) == (want,), (form, op, fa, fb)
                    assert inst.run_bits(f"z_{op}", a, b) == (1 - want,), (op, fa, fb)


TRUNC_CASES = [  # (op, argument, expected result or trap)
    ("i32.trunc_f32_s", -2147483904.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f32_s", -2147483648.0, -2147483648),
    ("i32.trunc_f32_s", 2147483520.0, 2147483520),
    ("i32.trunc_f32_s", 2147483648.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f64_s", -2147483648.9, -2147483648),
    ("i32.trunc_f64_s", -2147483649.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f64_s", 2147483647.9, 2147483647),
    ("i32.trunc_f64_s", 2147483648.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f64_u", -0.9, 0),
    ("i32.trunc_f64_u", -1.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f64_u", 4294967295.9, 4294967295),
    ("i32.trunc_f64_u", 4294967296.0, TrapCode.IntegerOverflow),
    ("i32.trunc_f32_u", 4294967040.0, 4294967040),
    ("i64.trunc_f64_s", -9223372036854775808.0, -(1 << 63)),
    ("i64.trunc_f64_s", 9223372036854775808.0, TrapCode.IntegerOverflow),
    ("i64.trunc_f32_s", -9223373136366403584.0, TrapCode.IntegerOverflow),
    ("i64.trunc_f64_u", 9223372036854775808.0, 1 << 63),
    ("i64.trunc_f64_u", 18446744073709549568.0, 18446744073709549568),
    ("i64.trunc_f64_u", 18446744073709551616.0, TrapCode.IntegerOverflow),
    ("i64.trunc_f64_u", 9223372036854774784.0, 9223372036854774784),
    ("i64.trunc_f32_u", 18446742974197923840.0, 18446742974197923840),
    ("i64.trunc_f64_u", -0.5, 0),
    ("i64.trunc_f64_u", math.nan, TrapCode.BadConversionToInteger),
    ("i32.trunc_f32_s", math.nan, TrapCode.BadConversionToInteger),
    ("i64.trunc_f32_u", -math.inf, TrapCode.IntegerOverflow),
]


@pytest.mark.parametrize("op,arg,want", TRUNC_CASES)
def test_trunc_bounds(region, op, arg, want):
    rt, ft = op[:3], op[-5:-2]
    iw = int(rt[1:])
    sat_op = op.replace("trunc_", "trunc_sat_")
    wat = f"""(module
      (func (export "t") (param {ft}) (result {rt}) ({op} (local.get 0)))
      (func (export "s") (param {ft}) (result {rt}) ({sat_op} (local.get 0))))"""
    with run_module(region, wat) as inst:
        arg_bits = bits(int(ft[1:]), arg)
        if isinstance(want, TrapCode):
            with pytest.raises(Trap) as e:
                inst.run_bits("t", arg_bits)
            assert e.value.code == want
            signed = op.endswith("_s")
            if math.isnan(arg):
                sat = 0
            elif arg < 0:
                sat = (1 << (iw - 1)) if signed else 0      # INT_MIN's bits, or 0
            else:
                sat = (1 << (iw - 1)) - 1 if signed else (1 << iw) - 1
            assert inst.run_bits("s", arg_bits) == (sat,)
        else:
            assert inst.run_bits("t", arg_bits) == (want & ((1 << iw) - 1),)
            assert inst.run_bits("s", arg_bits) == (want & ((1 << iw) - 1),)


def _round_int_to_f32(n: int) -> float:
    """n correctly rounded (to nearest, ties to even) to an f32, as an exact Python float."""
    neg, n = n < 0, abs(n)
    shift = max(n.bit_length() - 24, 0)
    if shift:
        q, r = divmod(n, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
        n = q << shift
    return -float(n) if neg else float(n)


U64_CASES = [0, 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, (1 << 64) - 1,
             # ties and near-ties at the f64 and f32 rounding positions, with the top bit set
             0x8000_0000_0000_0401, 0x8000_0000_0000_0400, 0x8000_0000_0000_0C00,
             0x8000_0080_0000_0001, 0x8000_0080_0000_0000, 0x8000_0180_0000_0000,
             0xFFFF_FFFF_7FFF_FFFF, 0x0020_0000_0000_0001, 0xFFFF_FF7F_FFFF_FFFF]


def test_integer_to_float_rounding(region):
    wat = """(module
      (func (export "f64_u64") (param i64) (result f64) (f64.convert_i64_u (local.get 0)))
      (func (export "f32_u64") (param i64) (result f32) (f32.convert_i64_u (local.get 0)))
      (func (export "f64_s64") (param i64) (result f64) (f64.convert_i64_s (local.get 0)))
      (func (export "f32_s64") (param i64) (result f32) (f32.convert_i64_s (local.get 0)))
      (func (export "f64_u32") (param i32) (result f64) (f64.convert_i32_u (local.get 0)))
      (func (export "f32_u32") (param i32) (result f32) (f32.convert_i32_u (local.get 0)))
      (func (export "f32_s32") (param i32) (result f32) (f32.convert_i32_s (local.get 0)))
      (func (export "f32_u32_c") (result f32) (f32.convert_i32_u (i32.const -1)))
      (func (export "f64_u32_mem") (param i32) (result f64) (local i32)
        (local.set 1 (local.get 0)) (f64.convert_i32_u (local.get 1))))"""
    with run_module(region, wat) as inst:
        for n in U64_CASES:
            assert inst.run_bits("f64_u64", n) == (f64(float(n)),), hex(n)
            assert inst.run_bits("f32_u64", n) == (f32(_round_int_to_f32(n)),), hex(n)
            s = n - (1 << 64) if n >> 63 else n
            assert inst.run_bits("f64_s64", n) == (f64(float(s)),), hex(n)
            assert inst.run_bits("f32_s64", n) == (f32(_round_int_to_f32(s)),), hex(n)
        for n in (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x0100_0001, 0xFFFF_FF7F):
            assert inst.run_bits("f64_u32", n) == (f64(float(n)),)
            assert inst.run_bits("f64_u32_mem", n) == (f64(float(n)),)
            assert inst.run_bits("f32_u32", n) == (f32(_round_int_to_f32(n)),)
            s = n - (1 << 32) if n >> 31 else n
            assert inst.run_bits("f32_s32", n) == (f32(_round_int_to_f32(s)),)
        assert inst.run_bits("f32_u32_c") == (f32(4294967296.0),)


def test_bits_survive_moves(region):
    """Constants, locals, globals, memory, select, block results and reinterpret keep NaN
    payloads exactly."""
    wat = f"""(module (memory 1)
      (global $g (mut f32) (f32.const 0)) (global $h (mut f64) (f64.const 0))
      (func (export "const32") (result f32) (f32.const nan:0x200001))
      (func (export "global") (param f32 f64) (result i64)
        (global.set $g (local.get 0)) (global.set $h (local.get 1))
        (i64.xor (i64.extend_i32_u (i32.reinterpret_f32 (global.get $g)))
                 (i64.reinterpret_f64 (global.get $h))))
      (func (export "mem") (param f64) (result f64)
        (f64.store offset=8 (i32.const 0) (local.get 0)) (f64.load offset=8 (i32.const 0)))
      (func (export "mem_const") (result i64)
        (f64.store (i32.const 16) (f64.const -nan:0x4000000000123))
        (i64.load (i32.const 16)))
      (func (export "select") (param f64 f64 i32) (result f64)
        (select (local.get 0) (local.get 1) (local.get 2)))
      (func (export "select_t") (param f32 i32) (result f32)
        (select (result f32) (f32.const nan:0x200001) (local.get 0) (local.get 1)))
      (func (export "block") (param f64 i32) (result f64)
        (block (result f64) (br_if 0 (local.get 0) (local.get 1)) (drop) (f64.const 7)))
      (func (export "reinterpret") (param i32) (result i32)
        (i32.reinterpret_f32 (f32.reinterpret_i32 (local.get 0)))))"""
    with run_module(region, wat) as inst:
        assert inst.run_bits("const32") == (0x7FA0_0001,)
        assert inst.run_bits("global", F32_NAN_PAYLOAD, F64_NAN_PAYLOAD) == (
            F32_NAN_PAYLOAD ^ F64_NAN_PAYLOAD,)
        assert inst.run_bits("mem", F64_NAN_PAYLOAD) == (F64_NAN_PAYLOAD,)
        assert inst.run_bits("mem_const") == (F64_NAN_PAYLOAD,)
        assert inst.run_bits("select", F64_NAN_PAYLOAD, f64(2.0), 1) == (F64_NAN_PAYLOAD,)
        assert inst.run_bits("select", F64_NAN_PAYLOAD, f64(2.0), 0) == (f64(2.0),)
        assert inst.run_bits("select_t", f32(3.0), 1) == (F32_NAN_PAYLOAD,)
        assert inst.run_bits("select_t", F32_NAN_PAYLOAD ^ 1, 0) == (F32_NAN_PAYLOAD ^ 1,)
        assert inst.run_bits("block", F64_NAN_PAYLOAD, 1) == (F64_NAN_PAYLOAD,)
        assert inst.run_bits("block", F64_NAN_PAYLOAD, 0) == (f64(7.0),)
        assert inst.run_bits("reinterpret", F32_NAN_PAYLOAD) == (F32_NAN_PAYLOAD,)


def test_register_pressure_and_calls(region):
    """More live floats than xmm registers, across a call; more float arguments than xmm
    argument registers, mixed with integers, direct and indirect."""
    n = 20
    kinds = ["f64", "i32", "f32", "i64", "f32"] * 4   # 12 floats, 8 ints: both overflow
    params = " ".join(kinds)
    body = "(f64.const 0)"
    for i, kind in enumerate(kinds):
        conv = {"f64": "", "i32": "f64.convert_i32_s", "f32": "f64.promote_f32",
                "i64": "f64.convert_i64_s"}[kind]
        term = f"(local.get {i})" if not conv else f"({conv} (local.get {i}))"
        body = f"(f64.add (f64.mul {body} (f64.const 3)) {term})"
    nested = "(f64.const 0)"
    for i in range(n):
        nested = f"(f64.add (f64.const {i + 1}) {nested})"
    # a deep left operand chain keeps n values live; a call in the middle spills them
    deep = "(call $id (f64.const 0.5))"
    for i in range(n):
        deep = f"(f64.sub (f64.add (f64.const {i + 1}) (f64.const 0.25)) {deep})"
    args = " ".join(f"({t}.const {i + 1})" for i, t in enumerate(kinds))
    wat = f"""(module (table 1 funcref) (elem (i32.const 0) $many)
      (type $t (func (param {params}) (result f64)))
      (func $id (param f64) (result f64) (local.get 0))
      (func $many (type $t) {body})
      (func (export "direct") (result f64) (call $many {args}))
      (func (export "indirect") (result f64) (call_indirect (type $t) {args} (i32.const 0)))
      (func (export "forward") (type $t)
        (call $many {" ".join(f"(local.get {i})" for i in range(len(kinds)))}))
      (func (export "forward_indirect") (type $t)
        (call_indirect (type $t) {" ".join(f"(local.get {i})" for i in range(len(kinds)))}
                       (i32.const 0)))
      (func (export "nested") (result f64) {nested})
      (func (export "deep") (result f64) {deep}))"""
    want = 0.0
    for i in range(len(kinds)):
        want = want * 3 + (i + 1)
    expect_deep = 0.5
    for i in range(n):
        expect_deep = (i + 1.25) - expect_deep
    with run_module(region, wat) as inst:
        assert inst.run("direct") == want
        assert inst.run("indirect") == want
        values = [i + 1 for i in range(len(kinds))]
        assert inst.run("forward", *values) == want
        assert inst.run("forward_indirect", *values) == want
        assert inst.run("nested") == n * (n + 1) / 2
        assert inst.run("deep") == expect_deep


def test_rounding_records_sse41():
    compiled = compile_module(
        "(module (func (param f32) (result f32) (f32.nearest (local.get 0))))")
    assert "sse4.1" in compiled.data.features

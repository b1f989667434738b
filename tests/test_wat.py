"""Tests for the WAT compiler: exact bytes where the encoding is the point, decoded structure where
the meaning is, float rounding edge cases, and errors with their positions."""

from __future__ import annotations

import random
import struct
import time
from fractions import Fraction

import pytest

from pylucet.errors import MalformedModule
from pylucet.wasm.opcodes import OPS, Imm, Op
from pylucet.wasm.types import ExternKind, SegmentMode, SizeLimits, ValType
from pylucet.wasm.wat import F32, F64, ConstantOutOfRange, float_bits, parse_int, parse_wat

try:
    from pylucet.wasm.decoder import decode_body, decode_module
except ImportError:  # pragma: no cover - the decoder is written in parallel
    decode_module = decode_body = None

needs_decoder = pytest.mark.skipif(decode_module is None, reason="pylucet.wasm.decoder not available")

HEADER = bytes.fromhex("0061736d01000000")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def decode(text: str):
    return decode_module(parse_wat(text))


def body_ops(module, func: int = 0):
    """The ``(op, imm)`` pairs of a defined function, final ``end`` dropped."""
    return [(op, imm) for op, imm, _ in decode_body(module, module.codes[func])][:-1]


# --- exact bytes ---------------------------------------------------------------------------------

def test_empty_module():
    assert parse_wat("(module)") == HEADER
    assert parse_wat("") == HEADER
    assert parse_wat("  ;; nothing\n (; at (; all ;) ;) ") == HEADER


def test_smallest_function():
    assert parse_wat("(module (func))") == HEADER + h("01 04 01 60 00 00  03 02 01 00  0a 04 01 02 00 0b")


def test_bare_fields_equal_module():
    assert parse_wat("(func)") == parse_wat("(module (func))")


def test_export_and_names():
    wasm = parse_wat('(module (func $f (export "f") (param $x i32) (result i32) local.get $x))')
    assert wasm == HEADER + h("""
        01 06 01 60 01 7f 01 7f
        03 02 01 00
        07 05 01 01 66 00 00
        0a 06 01 04 00 20 00 0b
        00 13 04 6e 61 6d 65  01 04 01 00 01 66  02 06 01 00 01 00 01 78""")


def test_module_name():
    assert parse_wat("(module $hello)") == HEADER + h("00 0d 04 6e616d65 00 06 05 68656c6c6f")


def test_locals_grouped_in_runs():
    wasm = parse_wat("(func (local i32 i32) (local i64) (local $a i32))")
    assert h("0a 0a 01 08 03 02 7f 01 7e 01 7f 0b") in wasm


def test_folded_and_flat_instructions_agree():
    flat = parse_wat("(func (result i32) i32.const 1 i32.const 2 i32.add)")
    folded = parse_wat("(func (result i32) (i32.add (i32.const 1) (i32.const 2)))")
    assert flat == folded
    assert h("41 01 41 02 6a 0b") in flat


def test_folded_if_and_labels():
    wasm = parse_wat("""
      (func (param i32) (result i32)
        (block $out (result i32)
          (if $l (result i32) (local.get 0)
            (then (br $out (i32.const 1)))
            (else (loop $top (br_if $top (i32.const 0))) (i32.const 2)))))""")
    # block i32 | local.get 0 | if i32 | i32.const 1 br 1 | else loop br_if 0 end i32.const 2 end | end
    assert h("02 7f 20 00 04 7f 41 01 0c 01 05 03 40 41 00 0d 00 0b 41 02 0b 0b 0b") in wasm


def test_datacount_only_when_code_needs_it():
    assert bytes([12]) + h("01 01") not in parse_wat('(memory 1) (data "x")')[8:20]
    wasm = parse_wat('(memory 1) (data $d "x") (func (data.drop $d))')
    assert h("0c 01 01") in wasm


# --- structure -----------------------------------------------------------------------------------

@needs_decoder
def test_every_mnemonic_in_the_opcode_table():
    """Each row of the opcode table, written in text, decodes back to that row."""
    samples = {
        Imm.NONE: "", Imm.LABEL: "0", Imm.BR_TABLE: "0 0", Imm.FUNC: "0",
        Imm.CALL_INDIRECT: "(type 0)", Imm.LOCAL: "0", Imm.GLOBAL: "0", Imm.TABLE: "1",
        Imm.MEMARG: "offset=8 align=1", Imm.MEMORY: "", Imm.I32: "-1", Imm.I64: "-1",
        Imm.F32: "1.5", Imm.F64: "1.5", Imm.SELECT_T: "(result i32)", Imm.REFTYPE: "extern",
        Imm.DATA: "0", Imm.ELEM: "1", Imm.MEMORY_INIT: "0", Imm.MEMORY_COPY: "",
        Imm.TABLE_INIT: "1 0", Imm.TABLE_COPY: "1 0", Imm.BLOCKTYPE: "(result i32)",
    }
    expected_imm = {
        Imm.NONE: None, Imm.LABEL: 0, Imm.BR_TABLE: ((0,), 0), Imm.FUNC: 0, Imm.CALL_INDIRECT: (0, 0),
        Imm.LOCAL: 0, Imm.GLOBAL: 0, Imm.TABLE: 1, Imm.MEMARG: (0, 8), Imm.MEMORY: 0, Imm.I32: -1,
        Imm.I64: -1, Imm.F32: 0x3FC00000, Imm.F64: 0x3FF8000000000000, Imm.SELECT_T: (ValType.I32,),
        Imm.REFTYPE: ValType.EXTERNREF, Imm.DATA: 0, Imm.ELEM: 1, Imm.MEMORY_INIT: (0, 0),
        Imm.MEMORY_COPY: (0, 0), Imm.TABLE_INIT: (0, 1), Imm.TABLE_COPY: (1, 0),
        Imm.BLOCKTYPE: ValType.I32,
    }
    checked = 0
    for code, info in OPS.items():
        if code in (Op.END, Op.ELSE):
            continue
        instr = f"{info.name} {samples[info.imm]}"
        if info.imm is Imm.BLOCKTYPE:
            instr += " end" if code != Op.IF else " else end"
        module = decode(f"""(type (func)) (memory 1) (table 1 funcref) (table 2 funcref)
            (global (mut i32) (i32.const 0)) (elem func 0) (elem func 0) (data "")
            (func (local i32) block {instr} end)""")
        ops = body_ops(module)
        found = [imm for op, imm in ops if op == code]
        assert found, info.name
        assert expected_imm[info.imm] in found, info.name
        checked += 1
    assert checked == len(OPS) - 2


@needs_decoder
def test_types_imports_and_inline_forms():
    m = decode("""(module
      (type $v (func))
      (import "env" "f" (func $f (param i32)))
      (func $g (import "env" "g") (type $v))
      (table $t (import "env" "t") 1 2 funcref)
      (memory (import "env" "m") 1)
      (global $gi (import "env" "gi") (mut i64))
      (func $h (export "h") (export "h2") (param i32) (result i32) (local.get 0))
      (table $t2 (export "t2") funcref (elem $h $f))
      (memory $m2 (data "abc" "de"))
      (global $g (export "g") f32 (f32.const 1))
      (start $h)
    )""")
    assert m.types[0].params == () and m.types[1].params == (ValType.I32,)
    assert [(i.module, i.name, i.kind) for i in m.imports] == [
        ("env", "f", ExternKind.FUNC), ("env", "g", ExternKind.FUNC), ("env", "t", ExternKind.TABLE),
        ("env", "m", ExternKind.MEMORY), ("env", "gi", ExternKind.GLOBAL)]
    assert m.imports[1].desc == 0
    assert m.imports[2].desc.limits == SizeLimits(1, 2)
    assert m.imports[4].desc.mutable
    assert [(e.name, e.kind, e.index) for e in m.exports] == [
        ("h", ExternKind.FUNC, 2), ("h2", ExternKind.FUNC, 2), ("t2", ExternKind.TABLE, 1),
        ("g", ExternKind.GLOBAL, 1)]
    assert m.tables[0].limits == SizeLimits(2, 2)
    assert m.elems[0].mode == SegmentMode.ACTIVE and m.elems[0].table == 1
    assert m.elems[0].func_indices() == [2, 0]
    assert m.memories[0].limits == SizeLimits(1, 1)
    assert m.datas[0].data == b"abcde" and m.datas[0].memory == 1
    assert m.start == 2
    assert m.names.functions == {0: "f", 1: "g", 2: "h"}


@needs_decoder
def test_implicit_types_reuse_then_append():
    m = decode("""
      (func $f (result f64) (f64.const 0))
      (func $g (param i32))
      (func $h (result f64) (f64.const 1))
      (type $t (func (param i32)))
      (func (block (param i32) (result i32 i32) (drop) (i32.const 1) (i32.const 2)) (drop) (drop))
    """)
    sig = [(t.params, t.results) for t in m.types]
    assert sig == [((ValType.I32,), ()), ((), (ValType.F64,)), ((), ()),
                   ((ValType.I32,), (ValType.I32,) * 2)]
    assert m.funcs[:3] == [1, 0, 1]


@needs_decoder
def test_type_use_must_match_inline_signature():
    decode("(type $t (func (param i32))) (func (type $t) (param $x i32) (local.get $x) (drop))")
    with pytest.raises(MalformedModule, match="inline function type"):
        parse_wat("(type $t (func (param i32))) (func (type $t) (param i64))")


@needs_decoder
def test_local_and_label_scopes():
    m = decode("""(func $f (param $a i32) (param i64) (local $b f32)
        (block $x (block $x (br $x)) (br $x))
        (local.get $b) (drop) (local.get $a) (drop))""")
    assert body_ops(m)[2:5] == [(Op.BR, 0), (Op.END, None), (Op.BR, 0)]
    assert (Op.LOCAL_GET, 2) in body_ops(m)
    assert m.names.locals == {0: {0: "a", 2: "b"}}


@needs_decoder
def test_elem_segment_forms():
    m = decode("""(module
      (table $t1 1 funcref) (table $t2 1 externref) (func $f)
      (elem (i32.const 0) $f)
      (elem $p func $f $f)
      (elem declare func $f)
      (elem (table $t1) (offset (i32.const 0)) funcref (ref.func $f) (item ref.null func))
      (elem (table $t2) (i32.const 0) externref (ref.null extern))
      (elem funcref (item (ref.func $f)))
      (func (table.init $t1 $p (i32.const 0) (i32.const 0) (i32.const 0)) (elem.drop 5))
    )""")
    modes = [(e.mode, e.table, e.elem_type) for e in m.elems]
    assert modes == [(SegmentMode.ACTIVE, 0, ValType.FUNCREF), (SegmentMode.PASSIVE, 0, ValType.FUNCREF),
                     (SegmentMode.DECLARATIVE, 0, ValType.FUNCREF), (SegmentMode.ACTIVE, 0, ValType.FUNCREF),
                     (SegmentMode.ACTIVE, 1, ValType.EXTERNREF), (SegmentMode.PASSIVE, 0, ValType.FUNCREF)]
    assert m.elems[3].func_indices() == [0, None]
    assert (Op.TABLE_INIT, (1, 0)) in body_ops(m, 1)


@needs_decoder
def test_data_segment_forms():
    m = decode("""(memory $m 1)
      (data (i32.const 8) "a" "\\62")
      (data $p "passive")
      (data (memory $m) (offset (i32.const 1)) "\\t\\n\\r\\"\\'\\\\\\00\\ff\\u{41}\\u{1F600}")""")
    assert [(d.mode, d.data) for d in m.datas] == [
        (SegmentMode.ACTIVE, b"ab"), (SegmentMode.PASSIVE, b"passive"),
        (SegmentMode.ACTIVE, b"\t\n\r\"'\\\x00\xffA" + "\U0001F600".encode())]
    assert [(op, imm) for op, imm, _ in m.datas[0].offset] == [(Op.I32_CONST, 8)]


@needs_decoder
def test_block_types():
    m = decode("""(type $two (func (result i32 i32)))
      (func (block) (block (result i64) (i64.const 0) (drop))
            (block (type $two) (i32.const 1) (i32.const 2)) (drop) (drop)
            (block (result i32 i32) (i32.const 1) (i32.const 2)) (drop) (drop))""")
    blocks = [imm for op, imm in body_ops(m) if op == Op.BLOCK]
    assert blocks == [None, ValType.I64, 0, 0]


@needs_decoder
def test_call_indirect_and_select():
    m = decode("""(type $t (func (param i32)))
      (table 1 funcref) (table $u 1 funcref)
      (func (call_indirect $u (type $t) (i32.const 0) (i32.const 0))
            (call_indirect (param i32) (i32.const 0) (i32.const 0))
            (select (i32.const 1) (i32.const 2) (i32.const 0)) (drop)
            (select (result i64) (i64.const 1) (i64.const 2) (i32.const 0)) (drop))""")
    ops = body_ops(m)
    assert [imm for op, imm in ops if op == Op.CALL_INDIRECT] == [(0, 1), (0, 0)]
    assert (Op.SELECT, None) in ops and (Op.SELECT_T, (ValType.I64,)) in ops


@needs_decoder
def test_memarg_defaults_to_natural_alignment():
    m = decode("""(memory 1) (func
      (i64.load (i32.const 0)) (drop) (i32.load16_u offset=0x10 (i32.const 0)) (drop)
      (i32.store8 offset=1_000 align=1 (i32.const 0) (i32.const 0)))""")
    assert [imm for op, imm in body_ops(m) if op in (Op.I64_LOAD, Op.I32_LOAD16_U, Op.I32_STORE8)] == [
        (3, 0), (1, 16), (0, 1000)]


@needs_decoder
def test_forward_references_and_numeric_indices():
    m = decode("""(func $a (call $b) (call 1) (global.get $g) (drop))
                  (func $b) (global $g i32 (i32.const 0))""")
    assert body_ops(m)[:2] == [(Op.CALL, 1), (Op.CALL, 1)]


# --- literals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tok, value", [
    ("0", 0), ("-0", 0), ("+17", 17), ("1_000_000", 1000000), ("0xFF", 255), ("-0x8000_0000", -2**31),
    ("007", 7),
])
def test_int_literals(tok, value):
    assert parse_int(tok) == value


@pytest.mark.parametrize("tok", ["1__0", "_1", "1_", "0x", "0x_1", "1.0", "--1", "$x", "0b1"])
def test_not_int_literals(tok):
    assert parse_int(tok) is None


@pytest.mark.parametrize("text, encoded", [
    ("i32.const 0xffffffff", "41 7f"), ("i32.const -0x80000000", "41 80 80 80 80 78"),
    ("i32.const 2147483648", "41 80 80 80 80 78"), ("i64.const 0xffffffffffffffff", "42 7f"),
    ("i64.const -9223372036854775808", "42 80 80 80 80 80 80 80 80 80 7f"),
])
def test_int_const_range_edges(text, encoded):
    assert h(encoded) in parse_wat(f"(func {text} drop)")


@pytest.mark.parametrize("text", ["i32.const 0x1_0000_0000", "i32.const -2147483649",
                                  "i64.const 18446744073709551616", "i64.const -0x8000000000000001"])
def test_int_const_out_of_range(text):
    with pytest.raises(MalformedModule, match="constant out of range"):
        parse_wat(f"(func {text} drop)")


F32_CASES = [
    ("0", 0), ("-0", 0x80000000), ("1", 0x3F800000), ("0x1.8p3", 0x41400000), ("1.5e1", 0x41700000),
    ("inf", 0x7F800000), ("-inf", 0xFF800000), ("nan", 0x7FC00000), ("-nan", 0xFFC00000),
    ("nan:0x200000", 0x7FA00000), ("nan:0x7f_ffff", 0x7FFFFFFF), ("+nan:0x1", 0x7F800001),
    # smallest subnormal, and the ties around it
    ("0x1p-149", 0x00000001), ("0x1p-150", 0), ("0x1.000002p-150", 0x00000001), ("0x1.8p-149", 2),
    ("1.4e-45", 1), ("7e-46", 0), ("8e-46", 1), ("1e-46", 0),
    # subnormal rounding up into the smallest normal
    ("0x1.fffffep-127", 0x00800000), ("0x1p-126", 0x00800000),
    # largest finite, and values that still round down to it
    ("0x1.fffffep127", 0x7F7FFFFF), ("0x1.fffffefffffffffffp127", 0x7F7FFFFF),
    ("3.4028235e38", 0x7F7FFFFF), ("340282356779733661637539395458142568447", 0x7F7FFFFF),
    # ties to even between 1 and its neighbours
    ("1.000000059604644775390625", 0x3F800000), ("1.00000005960464477539062499", 0x3F800000),
    ("1.00000005960464477539062501", 0x3F800001), ("1.000000178813934326171875", 0x3F800002),
    ("0x1.000001p0", 0x3F800000), ("0x1.000003p0", 0x3F800002), ("0x1.0000010000000001p0", 0x3F800001),
    # rounding through f64 first would land exactly on the tie and round down: wrong
    ("1.00000005960464478", 0x3F800001),
    ("1_000.000_1", 0x447A0002), ("0x1_0.8", 0x41840000), ("1.", 0x3F800000), ("0x1.", 0x3F800000),
    ("1e1", 0x41200000), ("1E+1", 0x41200000), ("1.e-1", 0x3DCCCCCD), ("0x1P-1", 0x3F000000),
    ("1e-1000000000", 0),
]

F64_CASES = [
    ("0x1p-1074", 1), ("0x1p-1075", 0), ("0x1.0000000000001p-1075", 1), ("0x1.8p-1074", 2),
    ("0x1.fffffffffffffp1023", 0x7FEFFFFFFFFFFFFF), ("0x1.fffffffffffff7ffp1023", 0x7FEFFFFFFFFFFFFF),
    ("1.7976931348623157e308", 0x7FEFFFFFFFFFFFFF), ("0x1.00000000000008p0", 0x3FF0000000000000),
    ("0x1.00000000000018p0", 0x3FF0000000000002), ("0x1.8p3", 0x4028000000000000),
    ("nan:0xfffffffffffff", 0x7FFFFFFFFFFFFFFF), ("-nan", 0xFFF8000000000000), ("4.9e-324", 1),
    ("0.1", 0x3FB999999999999A), ("-0.0", 0x8000000000000000), ("0x.8p1", None),
]


@pytest.mark.parametrize("tok, bits", F32_CASES)
def test_f32_literals(tok, bits):
    assert float_bits(tok, F32) == bits


@pytest.mark.parametrize("tok, bits", F64_CASES)
def test_f64_literals(tok, bits):
    assert float_bits(tok, F64) == bits


@pytest.mark.parametrize("tok, fmt", [
    ("0x1p128", F32), ("0x1.ffffffp127", F32), ("1e39", F32), ("340282356779733661637539395458142568448", F32),
    ("0x1p1024", F64), ("0x1.fffffffffffff8p1023", F64), ("1e309", F64), ("1e1000000000", F64),
    ("nan:0x0", F32), ("nan:0x800000", F32), ("nan:0x10000000000000", F64),
])
def test_float_constants_out_of_range(tok, fmt):
    with pytest.raises(ConstantOutOfRange):
        float_bits(tok, fmt)


def test_f32_hex_rounding_matches_hardware():
    """Hex literals exact in a double: the C cast from double to float is a correct oracle."""
    rng = random.Random(1234)
    for _ in range(3000):
        mant = rng.getrandbits(52) | 1 << 52
        exp = rng.randint(-180, 127)
        tok = f"{'-' if rng.random() < 0.5 else ''}0x{mant:x}p{exp - 52}"
        value = float(Fraction(mant) * Fraction(2) ** (exp - 52))
        if abs(value) >= 2.0 ** 128 * (1 - 2.0 ** -25):
            continue
        expected = struct.unpack("<I", struct.pack("<f", value if tok[0] != "-" else -value))[0]
        assert float_bits(tok, F32) == expected, tok


def test_f64_decimal_rounding_matches_python():
    rng = random.Random(99)
    for _ in range(2000):
        tok = f"{rng.getrandbits(60)}.{rng.getrandbits(40)}e{rng.randint(-340, 290)}"
        assert float_bits(tok, F64) == struct.unpack("<Q", struct.pack("<d", float(tok)))[0]


def test_float_consts_in_code():
    assert h("43 00 00 c0 7f 1a  44 00 00 00 00 00 00 f8 ff 1a") in parse_wat(
        "(func (f32.const nan) drop (f64.const -nan) drop)")


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason, line, column", [
    ("(module\n  (func (i32.cnst 1)))", "unknown operator i32.cnst", 2, 10),
    ("(func br 0drop)", "unknown operator", 1, 10),
    ('(data"a")', "unknown operator", 1, 2),
    ("(func (local i32) (drop (get_local 0)))", "unknown operator get_local", 1, 26),
    ("(func (result i32) (i32.const 0) (local i32))", "unexpected token", 1, 35),
    ("(func (br $nowhere))", "unknown label $nowhere", 1, 11),
    ("(func block $a end $b)", "mismatching label", 1, 20),
    ("(func (call $g))", "unknown function $g", 1, 13),
    ("(func (global.get $g))", "unknown global", 1, 19),
    ("(func (type $t))", "unknown type", 1, 13),
    ("(func (local.get $x))", "unknown local", 1, 18),
    ("(func $f)\n(func $f)", "duplicate func $f", 2, 7),
    ("(func (param $x i32) (local $x i32))", "duplicate local", 1, 29),
    ("(global $g i32 (i32.const 0)) (global $g i32 (i32.const 0))", "duplicate global", 1, 39),
    ("(func (i32.const 4294967296))", "constant out of range", 1, 18),
    ("(func (f32.const 1e39))", "constant out of range", 1, 18),
    ("(memory 0x1_0000_0000)", "i32 constant out of range", 1, 9),
    ("(memory 1) (func (i32.load align=3 (i32.const 0)))", "alignment", 1, 28),
    ("(memory 1) (func (i32.load offset=4294967296 (i32.const 0)))", "i32 constant", 1, 28),
    ("(type $t (func (param i32))) (func (type $t) (param i64))", "inline function type", 1, 36),
    ("(func (call_indirect (result i32) (param i32)))", "unexpected token", 1, 36),
    ("(func) (import \"\" \"\" (func))", "import after function", 1, 8),
    ("(func) (start 0) (start 0)", "multiple start sections", 1, 18),
    ('(func (export "\\ff"))', "malformed UTF-8 encoding", 1, 15),
    ("(func (i32.const 0)", "unclosed parenthesis", 1, 1),
    ("(func) (; open", "unclosed comment", 1, 8),
    ('(data "\\q")', "illegal escape", 1, 8),
    ("(module) (func)", "unexpected token", 1, 10),
])
def test_errors_carry_reason_and_position(text, reason, line, column):
    with pytest.raises(MalformedModule) as info:
        parse_wat(text)
    err = info.value
    assert err.reason.startswith(reason)
    assert (err.line, err.column) == (line, column)
    assert f"{line}:{column}" in str(err)
    assert text.count("\n", 0, err.offset) + 1 == line


# --- other entry points and speed ----------------------------------------------------------------

def test_module_binary_and_quote():
    assert parse_wat('(module binary "\\00asm" "\\01\\00\\00\\00")') == HEADER
    assert parse_wat('(module quote "(func)")') == parse_wat("(func)")


def test_many_functions_quickly():
    funcs = "\n".join(f"(func $f{i} (export \"f{i}\") (param $x i32) (result i32)"
                      f" (i32.add (local.get $x) (i32.const {i})))" for i in range(2000))
    start = time.perf_counter()
    wasm = parse_wat(f"(module {funcs})")
    assert time.perf_counter() - start < 3.0
    assert wasm.count(b"\x20\x00\x41") == 2000


def test_line_comment_ends_at_carriage_return():
    """The spec's newline is LF, CR or CRLF: a line comment ended by a bare CR must not swallow
    the next line (comments.wast)."""
    from pylucet.wasm.decoder import decode_body, decode_module
    from pylucet.wasm.opcodes import Op
    m = decode_module(parse_wat('(module (func (result i32) (i32.const 1) ;; note\r'
                                ' (return (i32.const 2))))'))
    ops = [op for op, _, _ in decode_body(m, m.codes[0])]
    assert Op.RETURN in ops

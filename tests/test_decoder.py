"""Tests for the binary decoder: the spec suite's binary modules, plus what the suite cannot see
(decoded structure, immediates, offsets, robustness against arbitrary bytes)."""

from __future__ import annotations

import random
import re
import struct
import time
from pathlib import Path
from typing import Iterator, List, Tuple, Union

import pytest

from pylucet.errors import MalformedModule, UnsupportedProposal
from pylucet.wasm.decoder import MAX_LOCALS, decode_body, decode_module
from pylucet.wasm.leb128 import encode_s, encode_u
from pylucet.wasm.opcodes import Op
from pylucet.wasm.types import ExternKind, SegmentMode, SizeLimits, ValType

from .conftest import suite_path as _suite_root

# --- a minimal .wast reader: just enough for `(module binary "...")` ----------------------------

Sexpr = Union[str, bytes, list]
_TOKEN = re.compile(r'\s+|;;[^\n]*|\(;|"(?:[^"\\]|\\.)*"|\(|\)|[^\s()";]+', re.S)
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", '"': b'"', "'": b"'"}


def _unescape(body: str) -> bytes:
    """A wast string literal's bytes: ``\\hh`` is a raw byte, other characters are UTF-8."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
        elif body[i + 1] in _ESCAPES:
            out += _ESCAPES[body[i + 1]]
            i += 2
        elif body[i + 1] == "u":
            close = body.index("}", i)
            out += chr(int(body[i + 3:close].replace("_", ""), 16)).encode("utf-8")
            i = close + 1
        else:
            out.append(int(body[i + 1:i + 3], 16))
            i += 3
    return bytes(out)


def _parse_wast(text: str) -> Iterator[Tuple[int, list]]:
    """Top-level commands as nested lists (strings decoded to bytes), with their line."""
    stack: List[list] = [[]]
    starts: List[int] = []
    pos = 0
    while pos < len(text):
        if text.startswith("(;", pos):   # block comments nest
            depth = 0
            while True:
                if text.startswith("(;", pos):
                    depth, pos = depth + 1, pos + 2
                elif text.startswith(";)", pos):
                    depth, pos = depth - 1, pos + 2
                    if not depth:
                        break
                else:
                    pos += 1
            continue
        m = _TOKEN.match(text, pos)
        tok = m.group()
        pos = m.end()
        if tok[0].isspace() or tok.startswith(";;"):
            continue
        if tok == "(":
            stack.append([])
            starts.append(m.start())
        elif tok == ")":
            done = stack.pop()
            start = starts.pop()
            stack[-1].append(done)
            if len(stack) == 1:
                yield text.count("\n", 0, start) + 1, done
        elif tok[0] == '"':
            stack[-1].append(_unescape(tok[1:-1]))
        else:
            stack[-1].append(tok)


def _binary_module(form: Sexpr):
    """The bytes of a ``(module [$id] binary "..."*)`` form, else None."""
    if not (isinstance(form, list) and form and form[0] == "module"):
        return None
    rest = form[2:] if len(form) > 1 and isinstance(form[1], str) and form[1].startswith("$") \
        else form[1:]
    if not rest or rest[0] != "binary":
        return None
    return b"".join(rest[1:])


def _spec_cases(files) -> Tuple[list, list]:
    """(valid, malformed) binary modules of the given .wast files, as pytest params."""
    root = _suite_root() / "spec"
    valid, malformed = [], []
    if not root.is_dir():
        skip = pytest.mark.skip(reason=f"conformance data not found at {root} "
                                       f"(set PYLUCET_TESTSUITE to run these)")
        return [pytest.param(b"", marks=skip)], [pytest.param(b"", "", marks=skip)]
    for path in sorted(root.glob(files)):
        if path.name.startswith("simd_"):
            continue   # SIMD is not decoded yet
        for line, cmd in _parse_wast(path.read_text(encoding="utf-8")):
            case_id = f"{path.name}:{line}"
            binary = _binary_module(cmd)
            if binary is not None:
                valid.append(pytest.param(binary, id=case_id))
            elif cmd[0] in ("assert_invalid", "assert_unlinkable", "assert_uninstantiable",
                            "assert_trap") and _binary_module(cmd[1]) is not None:
                valid.append(pytest.param(_binary_module(cmd[1]), id=case_id))
            elif cmd[0] == "assert_malformed" and _binary_module(cmd[1]) is not None:
                malformed.append(pytest.param(_binary_module(cmd[1]), cmd[2].decode(),
                                              id=case_id))
    return valid, malformed


_VALID, _MALFORMED = _spec_cases("*.wast")


@pytest.fixture
def suite(testsuite: Path) -> Path:   # skips, with the reason, when the suite is absent
    return testsuite


def _decode_all(binary: bytes):
    module = decode_module(binary, check_bodies=True)
    return module, [decode_body(module, b) for b in module.codes]


def test_suite_cases_were_found(suite):
    names = {p.id.split(":")[0] for p in _MALFORMED}
    assert {"binary.wast", "binary-leb128.wast", "custom.wast"} <= names
    assert len(_MALFORMED) > 100 and len(_VALID) > 50


@pytest.mark.parametrize("binary", _VALID)
def test_spec_binary_module_decodes(suite, binary):
    _decode_all(binary)


@pytest.mark.parametrize("binary,message", _MALFORMED)
def test_spec_malformed_binary(suite, binary, message):
    """Messages are compared by prefix, as the spec's own runner does: the suite writes
    "unexpected end" for what the reference decoder calls "unexpected end of section or
    function"."""
    with pytest.raises(MalformedModule) as info:
        _decode_all(binary)
    assert info.value.reason.startswith(message), info.value


def test_unescape():
    assert _unescape(r"\00asm\n\t\\\"\'\u{1F600}é") == \
        b"\x00asm\n\t\\\"'" + "\U0001F600é".encode()


# --- building modules by hand --------------------------------------------------------------------

def vec(items) -> bytes:
    items = list(items)
    return encode_u(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    raw = text.encode()
    return encode_u(len(raw)) + raw


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + encode_u(len(payload)) + payload


def module(*sections: bytes) -> bytes:
    return b"\0asm\x01\0\0\0" + b"".join(sections)


def func_module(code: bytes, locals_: bytes = b"\x00", params=b"", results=b"",
                extra_before_code: bytes = b"", extra_after_code: bytes = b"") -> bytes:
    """One function of type [params] -> [results] with body ``code`` (``end`` not added)."""
    body = locals_ + code
    return module(section(1, vec([b"\x60" + vec(bytes([p]) for p in params)
                                  + vec(bytes([r]) for r in results)])),
                  section(3, vec([b"\x00"])),
                  extra_before_code,
                  section(10, vec([encode_u(len(body)) + body])),
                  extra_after_code)


def body_of(code: bytes, **kw):
    m = decode_module(func_module(code, **kw))
    return m, decode_body(m, m.codes[0])


def ops(instrs):
    return [(op, imm) for op, imm, _ in instrs]


I32, I64, F32, F64, FUNCREF, EXTERNREF = 0x7F, 0x7E, 0x7D, 0x7C, 0x70, 0x6F
END = b"\x0b"


# --- structure -----------------------------------------------------------------------------------

def test_empty_module():
    m = decode_module(module())
    assert m.types == [] and m.codes == [] and m.start is None and m.data_count is None


def test_types_imports_exports_start():
    binary = module(
        section(1, vec([b"\x60" + vec([bytes([I32]), bytes([I64])]) + vec([bytes([F64])]),
                        b"\x60\x00\x00"])),
        section(2, vec([name("env") + name("f") + b"\x00\x01",
                        name("env") + name("t") + b"\x01\x70\x01\x02\x03",
                        name("env") + name("m") + b"\x02\x00\x05",
                        name("env") + name("g") + b"\x03\x7e\x01"])),
        section(3, vec([b"\x01"])),
        section(7, vec([name("run") + b"\x00\x01", name("mem") + b"\x02\x00"])),
        section(8, b"\x01"),
        section(10, vec([b"\x02\x00\x0b"])),
    )
    m = decode_module(binary)
    assert [str(t) for t in m.types] == ["[i32 i64] -> [f64]", "[] -> []"]
    assert [(i.module, i.name, i.kind) for i in m.imports] == [
        ("env", "f", ExternKind.FUNC), ("env", "t", ExternKind.TABLE),
        ("env", "m", ExternKind.MEMORY), ("env", "g", ExternKind.GLOBAL)]
    assert m.imports[0].desc == 1
    assert m.imports[1].desc.elem is ValType.FUNCREF
    assert m.imports[1].desc.limits == SizeLimits(2, 3)
    assert m.imports[2].desc.limits == SizeLimits(5, None)
    assert m.imports[3].desc.valtype is ValType.I64 and m.imports[3].desc.mutable
    assert m.funcs == [1] and m.start == 1
    assert [(e.name, e.kind, e.index) for e in m.exports] == [
        ("run", ExternKind.FUNC, 1), ("mem", ExternKind.MEMORY, 0)]
    assert m.func_type(1) == m.types[1]


def test_function_body_range_and_locals():
    code = b"\x20\x00" + b"\x1a" + END
    binary = func_module(code, locals_=vec([b"\x02\x7f", b"\x01\x7c", b"\x00\x7e"]))
    m = decode_module(binary)
    body = m.codes[0]
    assert body.locals == (ValType.I32, ValType.I32, ValType.F64)
    assert binary[body.start:body.end] == code
    assert body.end == len(binary)


def test_globals_and_const_exprs():
    f32_bits = 0x7FA00001   # a NaN with a payload: must come back bit for bit
    binary = module(section(6, vec([
        b"\x7f\x00" + b"\x41" + encode_s(-5) + END,
        b"\x7e\x01" + b"\x42" + encode_s(-(1 << 63)) + END,
        b"\x7d\x00" + b"\x43" + struct.pack("<I", f32_bits) + END,
        b"\x7c\x00" + b"\x44" + struct.pack("<Q", 0xFFF8000000000001) + END,
        b"\x70\x00" + b"\xd0\x70" + END,
        b"\x6f\x00" + b"\xd0\x6f" + END,
        b"\x7f\x00" + b"\x23\x00" + END,
        b"\x70\x00" + b"\xd2\x07" + END,
        b"\x7f\x00" + b"\x41\x01\x41\x02\x6a" + END,   # extended-const style; validator's call
    ])))
    m = decode_module(binary)
    inits = [g.init for g in m.globals]
    assert [ops(i) for i in inits] == [
        [(Op.I32_CONST, -5)], [(Op.I64_CONST, -(1 << 63))], [(Op.F32_CONST, f32_bits)],
        [(Op.F64_CONST, 0xFFF8000000000001)], [(Op.REF_NULL, ValType.FUNCREF)],
        [(Op.REF_NULL, ValType.EXTERNREF)], [(Op.GLOBAL_GET, 0)], [(Op.REF_FUNC, 7)],
        [(Op.I32_CONST, 1), (Op.I32_CONST, 2), (Op.I32_ADD, None)]]
    assert [g.type.mutable for g in m.globals][:2] == [False, True]
    op, imm, offset = inits[0][0]
    assert binary[offset] == 0x41


def test_memory_and_table_limits():
    m = decode_module(module(section(4, vec([b"\x70\x00\x0a", b"\x6f\x01\x00\x80\x02"])),
                             section(5, vec([b"\x01\x01\x02"]))))
    assert m.tables[0].elem is ValType.FUNCREF and m.tables[0].limits == SizeLimits(10)
    assert m.tables[1].elem is ValType.EXTERNREF and m.tables[1].limits == SizeLimits(0, 256)
    assert m.memories[0].limits == SizeLimits(1, 2)


@pytest.mark.parametrize("payload,message", [
    (b"\x02\x00", "integer too large"),
    (b"\x81\x00\x00", "integer representation too long"),
])
def test_limits_flags(payload, message):
    with pytest.raises(MalformedModule, match=message):
        decode_module(module(section(5, vec([payload]))))


def _elem_module(*segments: bytes) -> bytes:
    return module(section(1, vec([b"\x60\x00\x00"])), section(3, vec([b"\x00", b"\x00"])),
                  section(4, vec([b"\x70\x00\x0a", b"\x70\x00\x0a"])),
                  section(9, vec(segments)),
                  section(10, vec([b"\x02\x00\x0b", b"\x02\x00\x0b"])))


OFFSET_3 = b"\x41\x03" + END
REF_FUNC_1 = b"\xd2\x01" + END
REF_NULL = b"\xd0\x70" + END


@pytest.mark.parametrize("encoding,mode,table,has_offset,elem_type,kinds", [
    (b"\x00" + OFFSET_3 + vec([b"\x01", b"\x00"]),
     SegmentMode.ACTIVE, 0, True, ValType.FUNCREF, [1, 0]),
    (b"\x01\x00" + vec([b"\x01"]), SegmentMode.PASSIVE, 0, False, ValType.FUNCREF, [1]),
    (b"\x02\x01" + OFFSET_3 + b"\x00" + vec([b"\x00"]),
     SegmentMode.ACTIVE, 1, True, ValType.FUNCREF, [0]),
    (b"\x03\x00" + vec([b"\x01"]), SegmentMode.DECLARATIVE, 0, False, ValType.FUNCREF, [1]),
    (b"\x04" + OFFSET_3 + vec([REF_FUNC_1, REF_NULL]),
     SegmentMode.ACTIVE, 0, True, ValType.FUNCREF, [1, None]),
    (b"\x05\x70" + vec([REF_NULL]), SegmentMode.PASSIVE, 0, False, ValType.FUNCREF, [None]),
    (b"\x06\x01" + OFFSET_3 + b"\x70" + vec([REF_FUNC_1]),
     SegmentMode.ACTIVE, 1, True, ValType.FUNCREF, [1]),
    (b"\x07\x6f" + vec([b"\xd0\x6f" + END]),
     SegmentMode.DECLARATIVE, 0, False, ValType.EXTERNREF, [None]),
])
def test_every_elem_encoding(encoding, mode, table, has_offset, elem_type, kinds):
    seg, = decode_module(_elem_module(encoding)).elems
    assert (seg.mode, seg.table, seg.elem_type) == (mode, table, elem_type)
    assert ops(seg.offset) == [(Op.I32_CONST, 3)] if has_offset else seg.offset is None
    assert seg.func_indices() == kinds


def test_elem_global_get_item_is_kept_as_an_expression():
    seg, = decode_module(_elem_module(b"\x05\x70" + vec([b"\x23\x00" + END]))).elems
    assert ops(seg.init[0]) == [(Op.GLOBAL_GET, 0)] and seg.func_indices() is None


@pytest.mark.parametrize("encoding,message", [
    (b"\x08", "malformed elements segment kind"),
    (b"\x01\x01" + vec([b"\x00"]), "malformed element kind"),
    (b"\x05\x7f" + vec([REF_NULL]), "malformed reference type"),
])
def test_bad_elem_segments(encoding, message):
    with pytest.raises(MalformedModule, match=message):
        decode_module(_elem_module(encoding))


def test_data_segments_all_modes():
    m = decode_module(module(
        section(5, vec([b"\x00\x01"])),
        section(12, b"\x03"),
        section(11, vec([b"\x00" + OFFSET_3 + name("abc"), b"\x01" + name("xy"),
                         b"\x02\x00" + b"\x41\x08" + END + vec([b"\xff"])]))))
    d0, d1, d2 = m.datas
    assert (d0.mode, d0.data, ops(d0.offset)) == (SegmentMode.ACTIVE, b"abc", [(Op.I32_CONST, 3)])
    assert (d1.mode, d1.data, d1.offset) == (SegmentMode.PASSIVE, b"xy", None)
    assert (d2.mode, d2.memory, d2.data) == (SegmentMode.ACTIVE, 0, b"\xff")
    assert m.data_count == 3


def test_bad_data_segment_kind():
    with pytest.raises(MalformedModule, match="malformed data segment kind"):
        decode_module(module(section(11, vec([b"\x03"]))))


@pytest.mark.parametrize("payload,message", [
    (name("m") + name("g") + b"\x03\x7f\x02", "malformed mutability"),
    (name("m") + name("f") + b"\x04\x00", "malformed import kind"),
    (name("m") + b"\x01\xff" + b"\x00\x00", "malformed UTF-8 encoding"),
    (name("m") + b"\x03\xed\xa0\x80" + b"\x00\x00", "malformed UTF-8 encoding"),  # surrogate
    (name("m") + b"\x02\xc0\x80" + b"\x00\x00", "malformed UTF-8 encoding"),      # overlong
])
def test_bad_imports(payload, message):
    with pytest.raises(MalformedModule, match=message):
        decode_module(module(section(2, vec([payload]))))


def test_custom_sections_anywhere_and_kept():
    binary = module(section(0, name("a") + b"1"), section(1, vec([])),
                    section(0, name("b") + b"22"), section(3, vec([])),
                    section(0, name("a") + b""))
    assert decode_module(binary).customs == [("a", b"1"), ("b", b"22"), ("a", b"")]


def _name_section(*subsections: Tuple[int, bytes]) -> bytes:
    return section(0, name("name") + b"".join(bytes([i]) + encode_u(len(p)) + p
                                              for i, p in subsections))


def _two_funcs(*extra: bytes) -> bytes:
    """Two functions of type [i32] -> [], the first with one declared local."""
    return module(section(1, vec([b"\x60\x01\x7f\x00"])), section(3, vec([b"\x00", b"\x00"])),
                  section(10, vec([b"\x04\x01\x01\x7f\x0b", b"\x02\x00\x0b"])),
                  *extra)


def test_name_section():
    binary = _two_funcs(_name_section(
        (0, name("mod")),
        (1, vec([b"\x00" + name("first"), b"\x01" + name("second")])),
        (2, vec([b"\x00" + vec([b"\x00" + name("x"), b"\x01" + name("tmp")])])),
        (7, b"whatever")))
    m = decode_module(binary)
    assert m.names.module == "mod"
    assert m.names.functions == {0: "first", 1: "second"}
    assert m.names.locals == {0: {0: "x", 1: "tmp"}}
    assert m.func_name(1) == "second"


@pytest.mark.parametrize("subsections", [
    [(1, vec([b"\x00" + b"\x05ab"]))],                 # name runs past the subsection
    [(1, vec([b"\x00" + b"\x01\xff"]))],               # not UTF-8
    [(1, vec([b"\x00" + name("a")]) + b"junk")],       # subsection longer than its map
    [(1, vec([])), (0, name("late"))],                 # out of order
    [(0, b"\x80")],                                    # truncated LEB
])
def test_malformed_name_section_is_ignored(subsections):
    m = decode_module(_two_funcs(_name_section(*subsections)))
    assert m.names.module is None and m.names.functions == {} and m.names.locals == {}
    assert m.customs[0][0] == "name"


# --- instructions --------------------------------------------------------------------------------

def test_body_offsets_and_nested_structure():
    code = (b"\x02\x40"            # block
            b"\x03\x7f"            # loop (result i32)
            b"\x41\x01"
            b"\x04\x00"            # if (type 0)
            b"\x05"                # else
            b"\x0b"                # end if
            b"\x0b"                # end loop
            b"\x1a\x0b"            # drop, end block
            b"\x0b")
    binary = func_module(code)
    m = decode_module(binary)
    instrs = decode_body(m, m.codes[0])
    assert ops(instrs) == [
        (Op.BLOCK, None), (Op.LOOP, ValType.I32), (Op.I32_CONST, 1), (Op.IF, 0), (Op.ELSE, None),
        (Op.END, None), (Op.END, None), (Op.DROP, None), (Op.END, None), (Op.END, None)]
    for op, _, offset in instrs:
        assert binary[offset] == op


@pytest.mark.parametrize("code,expected", [
    (b"\x0c\x02", (Op.BR, 2)),
    (b"\x0d\x80\x01", (Op.BR_IF, 128)),
    (b"\x0e\x02\x00\x01\x02", (Op.BR_TABLE, ((0, 1), 2))),
    (b"\x0e\x00\x05", (Op.BR_TABLE, ((), 5))),
    (b"\x10\x09", (Op.CALL, 9)),
    (b"\x11\x03\x00", (Op.CALL_INDIRECT, (3, 0))),
    (b"\x11\x03\x80\x80\x80\x80\x00", (Op.CALL_INDIRECT, (3, 0))),   # LLVM's padded zero
    (b"\x11\x83\x80\x80\x80\x00\x01", (Op.CALL_INDIRECT, (3, 1))),
    (b"\x1b", (Op.SELECT, None)),
    (b"\x1c\x01\x7e", (Op.SELECT_T, (ValType.I64,))),
    (b"\x20\xff\x01", (Op.LOCAL_GET, 255)),
    (b"\x21\x00", (Op.LOCAL_SET, 0)),
    (b"\x22\x01", (Op.LOCAL_TEE, 1)),
    (b"\x23\x02", (Op.GLOBAL_GET, 2)),
    (b"\x24\x02", (Op.GLOBAL_SET, 2)),
    (b"\x25\x01", (Op.TABLE_GET, 1)),
    (b"\x26\x01", (Op.TABLE_SET, 1)),
    (b"\x28\x02\x10", (Op.I32_LOAD, (2, 16))),
    (b"\x29\x83\x80\x80\x00\xff\xff\xff\xff\x0f", (Op.I64_LOAD, (3, 0xFFFFFFFF))),
    (b"\x3e\x02\x00", (Op.I64_STORE32, (2, 0))),
    (b"\x3f\x00", (Op.MEMORY_SIZE, 0)),
    (b"\x40\x00", (Op.MEMORY_GROW, 0)),
    (b"\x41\x3f", (Op.I32_CONST, 63)),
    (b"\x41\x40", (Op.I32_CONST, -64)),
    (b"\x41\x7f", (Op.I32_CONST, -1)),
    (b"\x41\x80\x01", (Op.I32_CONST, 128)),
    (b"\x41\x80\x80\x80\x80\x78", (Op.I32_CONST, -(1 << 31))),
    (b"\x42\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00", (Op.I64_CONST, (1 << 63) - 1)),
    (b"\x43\x00\x00\xc0\x7f", (Op.F32_CONST, 0x7FC00000)),
    (b"\x43\x01\x00\x80\xff", (Op.F32_CONST, 0xFF800001)),   # signalling NaN payload
    (b"\x44" + struct.pack("<Q", 0x7FF0000000000001), (Op.F64_CONST, 0x7FF0000000000001)),
    (b"\x6a", (Op.I32_ADD, None)),
    (b"\xc4", (Op.I64_EXTEND32_S, None)),
    (b"\xd0\x6f", (Op.REF_NULL, ValType.EXTERNREF)),
    (b"\xd1", (Op.REF_IS_NULL, None)),
    (b"\xd2\x00", (Op.REF_FUNC, 0)),
    (b"\xfc\x00", (Op.I32_TRUNC_SAT_F32_S, None)),
    (b"\xfc\x87\x00", (Op.I64_TRUNC_SAT_F64_U, None)),   # sub-opcode is a LEB
    (b"\xfc\x08\x01\x00", (Op.MEMORY_INIT, (1, 0))),
    (b"\xfc\x09\x01", (Op.DATA_DROP, 1)),
    (b"\xfc\x0a\x00\x00", (Op.MEMORY_COPY, (0, 0))),
    (b"\xfc\x0b\x00", (Op.MEMORY_FILL, 0)),
    (b"\xfc\x0c\x02\x01", (Op.TABLE_INIT, (2, 1))),
    (b"\xfc\x0d\x02", (Op.ELEM_DROP, 2)),
    (b"\xfc\x0e\x01\x02", (Op.TABLE_COPY, (1, 2))),
    (b"\xfc\x0f\x01", (Op.TABLE_GROW, 1)),
    (b"\xfc\x10\x01", (Op.TABLE_SIZE, 1)),
    (b"\xfc\x11\x01", (Op.TABLE_FILL, 1)),
])
def test_instruction_immediates(code, expected):
    _, instrs = body_of(code + END, extra_before_code=section(12, b"\x02"),
                        extra_after_code=section(11, vec([b"\x01\x00", b"\x01\x00"])))
    assert ops(instrs) == [expected, (Op.END, None)]
    assert isinstance(instrs[0][0], Op)


@pytest.mark.parametrize("code,message", [
    (b"\x27", "illegal opcode"),
    (b"\xfc\x12", "illegal opcode"),
    (b"\xff", "illegal opcode"),       # (0x06 try, 0xFD SIMD... are Unsupported: test_proposals)
    (b"\x3f\x01", "zero byte expected"),
    (b"\x40\x80\x00", "zero byte expected"),
    (b"\xfc\x0a\x00\x01", "zero byte expected"),
    (b"\x28\x20\x00", "malformed memop flags"),
    (b"\x41\x80\x80\x80\x80\x80\x00", "integer representation too long"),
    (b"\x41\x80\x80\x80\x80\x70", "integer too large"),
    (b"\xd0\x7f", "malformed reference type"),
    (b"\x05", "END opcode expected"),                        # else outside an if
    (b"\x04\x40\x05\x05\x0b", "END opcode expected"),        # two elses
    (b"\x02\x40\x05\x0b", "END opcode expected"),            # else in a block
    (b"\x0b\x0b", "section size mismatch"),                  # bytes after the final end
    (b"\x02\x40\x0b", "unexpected end"),                     # no final end, at end of file
    (b"\x0e\xff\xff\x03\x00", "length out of bounds"),
    (b"\x43\x00\x00", "unexpected end"),
])
def test_malformed_instructions(code, message):
    with pytest.raises(MalformedModule) as info:
        body_of(code)
    assert info.value.reason.startswith(message)


def test_error_offset_points_at_the_culprit():
    binary = func_module(b"\x01\x01\x27" + END)   # nop, nop, illegal
    with pytest.raises(MalformedModule) as info:
        decode_module(binary, check_bodies=True)
    assert info.value.offset == binary.rindex(b"\x27")


@pytest.mark.parametrize("code", [b"\xfc\x08\x00\x00", b"\xfc\x09\x00"])
def test_data_count_required(code):
    with pytest.raises(MalformedModule, match="data count section required"):
        body_of(code + END)


def test_too_many_locals_implementation_limit():
    body_of(END, locals_=vec([encode_u(MAX_LOCALS) + b"\x7f"]))
    with pytest.raises(MalformedModule, match="too many locals"):
        body_of(END, locals_=vec([encode_u(MAX_LOCALS) + b"\x7f", b"\x01\x7e"]))


def test_bodies_are_decoded_lazily_unless_checked():
    binary = func_module(b"\x27" + END)   # illegal opcode
    decode_module(binary)
    with pytest.raises(MalformedModule, match="illegal opcode"):
        decode_module(binary, check_bodies=True)


# --- robustness ----------------------------------------------------------------------------------

def _rich_module() -> bytes:
    """A module touching every section kind and most immediate shapes."""
    code = (b"\x02\x40\x41\x01\x04\x7f\x41\x02\x05\x41\x03\x0b\x1a\x0b"
            b"\x20\x00\x28\x02\x04\x1a\x42\x80\x7f\x1a\x43\x00\x00\xc0\x7f\x1a"
            b"\x44" + b"\x00" * 8 + b"\x1a\x0e\x01\x00\x00\x11\x00\x80\x80\x80\x80\x00"
            b"\xfc\x08\x00\x00\xfc\x0e\x00\x00\x1c\x01\x7f\x3f\x00\x1a\x0b")
    return module(
        section(1, vec([b"\x60\x01\x7f\x00", b"\x60\x00\x01\x7f"])),
        section(2, vec([name("env") + name("f") + b"\x00\x00"])),
        section(3, vec([b"\x00"])),
        section(4, vec([b"\x70\x01\x01\x10"])),
        section(5, vec([b"\x01\x01\x02"])),
        section(6, vec([b"\x7f\x01\x41\x05\x0b"])),
        section(7, vec([name("run") + b"\x00\x01"])),
        section(8, b"\x01"),
        section(9, vec([b"\x00" + OFFSET_3 + vec([b"\x01"]), b"\x05\x70" + vec([REF_NULL])])),
        section(12, b"\x01"),
        section(10, vec([encode_u(len(code) + 3) + b"\x01\x01\x7e" + code])),
        section(11, vec([b"\x00" + OFFSET_3 + name("hello")])),
        _name_section((1, vec([b"\x01" + name("run")]))),
    )


def test_rich_module_decodes():
    m, bodies = _decode_all(_rich_module())
    assert len(bodies[0]) == 26 and m.names.functions == {1: "run"}


def _mutants(seed: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """Every truncation, then ``count`` random byte flips, insertions and deletions."""
    for i in range(len(seed)):
        yield seed[:i]
    for _ in range(count):
        data = bytearray(seed)
        how = rng.randrange(3)
        at = rng.randrange(len(data))
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            del data[at:at + rng.randint(1, 4)]
        yield bytes(data)


def test_fuzz_raises_only_malformed():
    """No IndexError, struct.error, ValueError... may escape, whatever the bytes."""
    rng = random.Random(1234)
    seeds = [_rich_module(), _elem_module(b"\x06\x01" + OFFSET_3 + b"\x70" + vec([REF_FUNC_1])),
             _two_funcs(_name_section((0, name("m")), (1, vec([b"\x00" + name("f")]))))]
    seeds += [p.values[0] for p in _VALID if p.values[0]]   # none without the suite
    tried = 0
    for seed in seeds:
        for data in _mutants(seed, rng, 150):
            tried += 1
            try:
                _decode_all(data)
            except (MalformedModule, UnsupportedProposal):   # a flip may land on a 0xFD...
                pass
    assert tried >= 150 * len(seeds)


# --- speed ---------------------------------------------------------------------------------------

def _big_body(n_groups: int) -> bytes:
    """A realistic instruction mix: locals, constants, arithmetic, loads/stores, branches."""
    group = (b"\x20\x00\x41\x04\x6a\x28\x02\x00\x20\x01\x6c\x21\x01"     # 7 instrs
             b"\x02\x40\x20\x01\x41\xe4\x00\x48\x0d\x00\x0b"           # 6
             b"\x20\x00\x20\x01\x36\x02\x08\x42\x80\x80\x04\x1a"       # 5
             b"\x10\x00")                                             # 1  -> 19
    return group * n_groups + END


def test_decode_body_throughput(capsys):
    code = _big_body(20_000)
    m = decode_module(func_module(code, locals_=vec([b"\x02\x7f"])))
    started = time.perf_counter()
    instrs = decode_body(m, m.codes[0])
    seconds = time.perf_counter() - started
    assert len(instrs) == 19 * 20_000 + 1
    rate = len(instrs) / seconds
    with capsys.disabled():
        print(f"\ndecode_body: {len(instrs):,} instructions in {seconds * 1e3:.0f} ms "
              f"= {rate / 1e6:.2f} M instructions/s")
    assert rate > 300_000   # a generous floor: catches an accidental quadratic, not noise

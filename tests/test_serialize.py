"""The module-data format: exact round trips, scale, and corruption always ending in LoadError."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from pylucet.errors import LoadError
from pylucet.module import serialize
from pylucet.module.serialize import (FORMAT_VERSION, HEADER_SIZE, ArtifactHeader, dumps, loads,
                                      pack_header, sparse_page_offsets, unpack_header)
from pylucet.module.spec import (DataSpec, ElemSpec, ExportSpec, FunctionSpec, GlobalSpec,
                                 HeapSpec, ImportSpec, ModuleData, TableSpec)
from pylucet.module.traps import TrapCode, TrapSite, TrapTable
from pylucet.wasm.types import ExternKind, FuncType, SegmentMode, ValType

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64


def full_module() -> ModuleData:
    """Every field set, with the awkward values: None next to 0, all-ones, negatives, UTF-8."""
    types = [FuncType((), ()), FuncType((I32, I64), (F32,)), FuncType((F64,) * 20, (I32, I32))]
    fns = [
        FunctionSpec(2, "main", 1, 0, 40, TrapTable([
            TrapSite(3, TrapCode.HeapOutOfBounds, 0x41),
            TrapSite(17, TrapCode.IntegerDivByZero, 0x50),
            TrapSite(39, TrapCode.Unreachable, 0xFFFF_FFFF)]), wasm_offset=0x40),
        FunctionSpec(3, "naïve name ✓", 0, 48, 1, TrapTable([]), wasm_offset=0),
        FunctionSpec(4, "", 2, 64, 0, TrapTable([TrapSite(0, TrapCode.StackOverflow, 7)])),
    ]
    return ModuleData(
        name="møde",
        heap=HeapSpec(initial_size=65536, max_size=1 << 32, reserved_size=8 << 30,
                      guard_size=4 << 30, imported=True),
        types=types,
        globals=[
            GlobalSpec(I32, True, 0xFFFF_FFFF, 0),
            GlobalSpec(I64, False, -1, 8),
            GlobalSpec(F64, True, 0x7FF8_0000_0000_0001, 16, import_from=("env", "g")),
            GlobalSpec(ValType.V128, False, (1 << 128) - 1, 32, init_global=0),
            GlobalSpec(I32, False, 0, 48),
            GlobalSpec(ValType.FUNCREF, True, 0, 56, init_func=3),
        ],
        functions=fns,
        imports=[ImportSpec("env", "f", ExternKind.FUNC, 1),
                 ImportSpec("wasi", "f2", ExternKind.FUNC, 0),
                 ImportSpec("env", "mem", ExternKind.MEMORY),
                 ImportSpec("env", "tab", ExternKind.TABLE,
                            table=TableSpec(ValType.EXTERNREF, 2, None))],
        exports=[ExportSpec("main", ExternKind.FUNC, 2), ExportSpec("memory", ExternKind.MEMORY, 0),
                 ExportSpec("", ExternKind.GLOBAL, 1)],
        tables=[TableSpec(ValType.FUNCREF, 10, None),
                TableSpec(ValType.FUNCREF, 0, 0xFFFF_FFFF),
                TableSpec(ValType.EXTERNREF, 5, 0)],
        funcrefs=[2, 3],
        elems=[ElemSpec(SegmentMode.ACTIVE, ValType.FUNCREF, (2, None, 0, 3), 0, 0),
               ElemSpec(SegmentMode.PASSIVE, ValType.FUNCREF, (3,)),
               ElemSpec(SegmentMode.ACTIVE, ValType.EXTERNREF, (None,), 2, None, 1),
               ElemSpec(SegmentMode.DECLARATIVE, ValType.FUNCREF, ())],
        sparse_data={0: bytes(range(256)) * 16, 17: b"\x01\x02\x03", 3: bytes(4096)},
        start=0,
        features=frozenset({"popcnt", "lzcnt", "bmi1"}),
        data_error="out of bounds memory access",
        passive_data=[b"", b"passive\0", b"", bytes(range(256)) * 40],
        active_data=[DataSpec(0xFFFF_FFFF, None, b"at the end"), DataSpec(0, 2, b""),
                     DataSpec(0, 0, bytes(range(256)))],
    )


def empty_module() -> ModuleData:
    return ModuleData(name=None, heap=None, types=[], globals=[], functions=[], imports=[],
                      exports=[], tables=[], sparse_data={})


@pytest.mark.parametrize("make", [full_module, empty_module])
def test_round_trip_is_exact(make):
    md = make()
    back = loads(dumps(md))
    assert back == md
    # == on dataclasses compares field by field; also check what == would forgive.
    for f, g in zip(md.functions, back.functions):
        assert [tuple(s) for s in g.traps.sites] == [tuple(s) for s in f.traps.sites]
        assert all(type(s.code) is TrapCode for s in g.traps.sites)
    assert list(back.sparse_data) == list(md.sparse_data)   # order kept
    assert back.start == md.start and back.features == md.features
    assert [type(g.init) for g in back.globals] == [int] * len(md.globals)
    if md.globals:
        assert back.globals[1].init == -1 and back.globals[0].init == 0xFFFF_FFFF


def test_optional_fields_distinguish_none_from_zero():
    md = full_module()
    md.start = None
    md.data_error = None
    md.name = ""
    md.heap = HeapSpec(0, None, 0, 0)
    back = loads(dumps(md))
    assert back.start is None and back.data_error is None and back.name == ""
    assert back.heap == HeapSpec(0, None, 0, 0)
    assert back.imports[2].type_id is None and back.imports[1].type_id == 0


def test_trap_lookup_works_after_round_trip():
    back = loads(dumps(full_module()))
    assert back.functions[0].traps.lookup(17) == TrapSite(17, TrapCode.IntegerDivByZero, 0x50)
    assert back.functions[0].traps.lookup(18) is None


def test_large_trap_tables_round_trip():
    rng = random.Random(7)
    codes = list(TrapCode)
    fns = []
    offset = 0
    for i in range(10_000):
        n = rng.randrange(0, 60)
        sites = sorted({rng.randrange(1 << 20) for _ in range(n)})
        table = TrapTable([TrapSite(o, rng.choice(codes), rng.randrange(1 << 32)) for o in sites])
        fns.append(FunctionSpec(i + 5, f"func{i}", 0, offset, 1 << 20, table, i * 11))
        offset += 1 << 20
    md = empty_module()
    md.types = [FuncType((), ())]
    md.functions = fns
    assert sum(len(f.traps) for f in fns) > 250_000
    assert loads(dumps(md)) == md


def test_sparse_pages_are_page_aligned_in_the_blob():
    md = full_module()
    blob = dumps(md)
    offsets = sparse_page_offsets(blob)
    assert set(offsets) == set(md.sparse_data)
    for index, (at, length) in offsets.items():
        assert at % 4096 == 0
        assert blob[at:at + length] == md.sparse_data[index]


def test_header_round_trip_and_rejections():
    h = ArtifactHeader(blob_size=123, self_vaddr=0xFD0, text_vaddr=0x3000, text_size=99)
    raw = pack_header(h)
    assert len(raw) == HEADER_SIZE and raw.startswith(b"PYLUCET\0")
    assert unpack_header(raw) == h
    assert unpack_header(raw + b"trailing") == h
    with pytest.raises(LoadError, match="magic"):
        unpack_header(b"X" + raw[1:])
    with pytest.raises(LoadError, match="version"):
        unpack_header(raw[:8] + struct.pack("<I", FORMAT_VERSION + 1) + raw[12:])
    with pytest.raises(LoadError, match="truncated"):
        unpack_header(raw[:-1])


def test_dumps_rejects_what_the_format_cannot_hold():
    md = empty_module()
    md.sparse_data = {0: bytes(4097)}
    with pytest.raises(ValueError):
        dumps(md)
    md = empty_module()
    md.types = [FuncType((), ())]
    too_far = TrapSite(1 << 32, TrapCode.Unreachable, 0)
    md.functions = [FunctionSpec(0, "f", 0, 0, 1, TrapTable([too_far]))]
    with pytest.raises(ValueError):
        dumps(md)


def test_every_truncation_is_a_load_error():
    blob = dumps(full_module())
    meta_end = struct.unpack_from("<Q", blob, 8)[0]
    cuts = list(range(0, meta_end + 1)) + [meta_end + 1, len(blob) - 1]
    for cut in cuts:
        with pytest.raises(LoadError):
            loads(blob[:cut])


def test_every_flipped_metadata_byte_is_a_load_error():
    blob = dumps(full_module())
    meta_end = struct.unpack_from("<Q", blob, 8)[0]
    for i in range(meta_end):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(LoadError):
            loads(bytes(bad))


def _resealed(blob: bytearray) -> bytes:
    """The blob with a correct checksum again: what a crafted (not damaged) blob looks like."""
    meta_end = struct.unpack_from("<Q", blob, 8)[0]
    struct.pack_into("<I", blob, 16, zlib.crc32(blob[24:meta_end]))
    return bytes(blob)


def test_crafted_blobs_never_raise_anything_but_load_error():
    blob = dumps(full_module())
    meta_end = struct.unpack_from("<Q", blob, 8)[0]
    rng = random.Random(1)
    for _ in range(3000):
        bad = bytearray(blob)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(24, meta_end)] = rng.choice([0, 0xFF, rng.randrange(256)])
        try:
            loads(_resealed(bad))
        except LoadError:
            pass


def test_invalid_enum_values_are_load_errors():
    md = empty_module()
    md.types = [FuncType((I32,), ())]
    blob = bytearray(dumps(md))
    i = blob.index(bytes([I32]), 24)
    blob[i] = 0x42
    with pytest.raises(LoadError, match="value type"):
        loads(_resealed(blob))


def test_bad_blob_magic_and_version():
    blob = dumps(empty_module())
    with pytest.raises(LoadError, match="magic"):
        loads(b"XXXX" + blob[4:])
    with pytest.raises(LoadError, match="version"):
        loads(blob[:4] + struct.pack("<I", 99) + blob[8:])
    assert serialize.FORMAT_VERSION == FORMAT_VERSION

"""The artifact's module-data format: what sits behind the ``pylucet_module`` symbol.

Like Lucet's ``lucet-module`` serialised ``ModuleData``, this is the one place where the compiler's
:class:`~pylucet.module.spec.ModuleData` becomes bytes and back. The format is versioned: a
runtime refuses (``LoadError``) what it was not written for instead of misreading it.

Everything is little-endian. ``u32?``/``u64?`` are optional integers whose all-ones value
(``NONE32``/``NONE64``) means None. A ``str`` is a u32 index into the string pool, ``str?`` the same
with ``NONE32`` for None.

Artifact symbol
===============

``pylucet_module`` points at ``Header | Blob``::

    Header (HEADER_SIZE = 48 bytes)
      0   magic        8s   b"PYLUCET\\0"
      8   version      u32  FORMAT_VERSION
      12  header_crc   u32  zlib.crc32 of the header with this field zero
      16  blob_size    u64  bytes of Blob that follow the header
      24  self_vaddr   u64  link-time address of the header (st_value of pylucet_module)
      32  text_vaddr   u64  link-time address of .text
      40  text_size    u64

The runtime address of the header minus ``self_vaddr`` is the load base, so a function's code is
at ``base + text_vaddr + FunctionSpec.code_offset`` with no relocations. The ELF writer places
the header so that the Blob starts page aligned in the file and in memory.

The loader trusts every header field (they say where code and data are), so the header has a
checksum of its own, as the Blob's Meta has: together they cover every field the loader reads.
A checksum catches damage, not malice: :func:`pylucet.elf.reader.read_artifact` also checks the
fields against the ELF's segments. (Version 1 had no header checksum.)

Blob
====

::

    Blob = Prologue | Meta | zero padding to a multiple of 4096 | Page*

    Prologue (24 bytes)
      0   magic      4s   b"PLMD"
      4   version    u32  FORMAT_VERSION
      8   meta_end   u64  offset in Blob where Meta ends
      16  crc32      u32  zlib.crc32 of Blob[24:meta_end]
      20  reserved   u32  0

    Meta, in this order:
      strings    u32 n; u32 char_count[n]; u32 nbytes; nbytes of UTF-8 (surrogatepass): the
                 concatenation of the n strings; string i is the next char_count[i] characters
      name       str?
      start      u32?
      data_error str?
      flags      u32  1: compiled with interrupt checks (version 3 on)
      features   u32 n; str[n]                       sorted
      heap       u8 present (0 none, 1 defined, 2 imported, version 4 on); if present:
                 u64 initial_size, u64? max_size, u64 reserved_size, u64 guard_size
      types      u32 n; u32 nparams[n]; u32 nresults[n]; u32 nbytes; u8 valtype[nbytes]
                 (each type's params then results, types in order)
      globals    u32 n; n x Global
                   Global = u8 valtype, u8 flags, u32 offset, 16-byte init,
                            [str module, str name if flags & 2], [u32 init_global if flags & 4],
                            [u32 init_func if flags & 16]
                   flags: 1 mutable, 2 imported, 4 init_global, 8 init is negative (init is the
                   16-byte two's complement of the Python int, so any i32/i64/v128 bits survive),
                   16 init_func (version 4 on)
      imports    u32 n; n x (str module, str name, u8 kind, u32? type_id,
                 [u8 elem, u64 initial, u64? max if kind is a table (version 4 on)])
      exports    u32 n; n x (str name, u8 kind, u32 index)
      tables     u32 n; n x (u8 elem, u64 initial, u64? max)      (version 4: no contents)
      funcrefs   u32 n; u32 func_index[n]                          (version 4 on)
      elems      u32 n; n x (u8 mode, u8 elem_type, u32 table, u64? offset, u32? offset_global,
                 u32 nitems, u32? item[nitems], u32 ng, ng x (u32 position, u32 global))
                 (version 4 on)
      functions  u32 n; then arrays of n: u32 func_index, str name, u32 type_id,
                 u64 code_offset, u64 code_size, u64 wasm_offset, u32 ntraps
      traps      u32 total (= sum of ntraps); u32 code_offset[total]; u32 wasm_offset[total];
                 u8 trap_code[total]. Function i owns the next ntraps[i] sites.
      sparse     u32 n; n x (u32 page_index, u32 length)
      active     u32 n; n x (u32 offset, u32? offset_global, u32 length, length bytes)
                 (version 4 on: data segments applied at instantiation)
      passive    u32 n; u32 length[n]; the n segments' bytes, concatenated (version 4 on):
                 ``ModuleData.passive_data``, one per data segment, empty for an active one

    Page j (0-based, in the order of ``sparse``) starts at ``align(meta_end, 4096) + 4096 * j``
    and holds ``length`` bytes (at most 4096; the rest of its slot is zero). Pages are 4096
    aligned relative to the start of the Blob so that, with the Blob page aligned in the file,
    the runtime can map them copy-on-write instead of copying.

Arrays go through :mod:`array` in one call each: a module with 10k functions and hundreds of
thousands of trap sites must not be packed field by field.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from itertools import chain
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import LoadError
from ..wasm.types import ExternKind, FuncType, SegmentMode, ValType
from .spec import (SPARSE_PAGE_SIZE, DataSpec, ElemSpec, ExportSpec, FunctionSpec, GlobalSpec,
                   HeapSpec, ImportSpec, ModuleData, TableSpec)
from .traps import TrapCode, TrapTable

MAGIC = b"PYLUCET\0"
BLOB_MAGIC = b"PLMD"
FORMAT_VERSION = 4
NONE32 = 0xFFFF_FFFF
NONE64 = 0xFFFF_FFFF_FFFF_FFFF

_HEADER = struct.Struct("<8sIIQQQQ")
HEADER_SIZE = _HEADER.size
_PROLOGUE = struct.Struct("<4sIQII")

assert array("I").itemsize == 4 and array("Q").itemsize == 8
_SWAP = sys.byteorder != "little"


# --- Header ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactHeader:
    """The fixed header in front of the blob; see the module docstring for its layout."""

    blob_size: int
    self_vaddr: int
    text_vaddr: int
    text_size: int
    version: int = FORMAT_VERSION
    magic: bytes = MAGIC


def pack_header(h: ArtifactHeader) -> bytes:
    fields = (h.blob_size, h.self_vaddr, h.text_vaddr, h.text_size)
    crc = zlib.crc32(_HEADER.pack(h.magic, h.version, 0, *fields))
    return _HEADER.pack(h.magic, h.version, crc, *fields)


def unpack_header(buf: bytes) -> ArtifactHeader:
    if len(buf) < HEADER_SIZE:
        raise LoadError(f"artifact header truncated: {len(buf)} of {HEADER_SIZE} bytes")
    magic, version, crc, *fields = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise LoadError(f"not a pylucet artifact: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise LoadError(f"artifact format version {version} is not supported "
                        f"(this runtime reads version {FORMAT_VERSION}); recompile the module")
    if zlib.crc32(_HEADER.pack(magic, version, 0, *fields)) != crc:
        raise LoadError("artifact header is corrupt (checksum mismatch)")
    return ArtifactHeader(*fields, version=version, magic=magic)


# --- Writing --------------------------------------------------------------------------------------

class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.strings: Dict[str, int] = {}

    def s(self, text: str) -> int:
        """Index of ``text`` in the string pool (added on first use)."""
        i = self.strings.get(text)
        if i is None:
            i = self.strings[text] = len(self.strings)
        return i

    def opt_s(self, text: Optional[str]) -> int:
        return NONE32 if text is None else self.s(text)

    def pack(self, fmt: str, *values: int) -> None:
        try:
            self.out += struct.pack("<" + fmt, *values)
        except struct.error as e:
            raise ValueError(f"module data field out of range: {e}") from None

    def arr(self, typecode: str, values: Sequence[int]) -> None:
        """Append the elements of ``values`` (no count: callers write counts they share)."""
        try:
            a = array(typecode, values)
        except OverflowError as e:
            raise ValueError(f"module data field out of range: {e}") from None
        if _SWAP:
            a.byteswap()
        self.out += a.tobytes()


def _opt(v: Optional[int], none: int) -> int:
    return none if v is None else v


def dumps(md: ModuleData) -> bytes:
    """Serialise ``md``; ``loads(dumps(md)) == md``. Raises ValueError for values the format
    cannot hold (e.g. a sparse page larger than 4096 bytes)."""
    body = _Writer()
    w = body
    w.pack("I", w.opt_s(md.name))
    w.pack("I", _opt(md.start, NONE32))
    w.pack("I", w.opt_s(md.data_error))
    w.pack("I", 1 if md.interrupt_checks else 0)
    features = sorted(md.features)
    w.pack("I", len(features))
    w.arr("I", [w.s(f) for f in features])

    if md.heap is None:
        w.pack("B", 0)
    else:
        h = md.heap
        w.pack("BQQQQ", 2 if h.imported else 1, h.initial_size, _opt(h.max_size, NONE64),
               h.reserved_size, h.guard_size)

    w.pack("I", len(md.types))
    w.arr("I", [len(t.params) for t in md.types])
    w.arr("I", [len(t.results) for t in md.types])
    valtypes = bytes(v for t in md.types for v in (*t.params, *t.results))
    w.pack("I", len(valtypes))
    w.out += valtypes

    w.pack("I", len(md.globals))
    for g in md.globals:
        flags = ((1 if g.mutable else 0) | (2 if g.import_from is not None else 0)
                 | (4 if g.init_global is not None else 0) | (8 if g.init < 0 else 0)
                 | (16 if g.init_func is not None else 0))
        try:
            init = g.init.to_bytes(16, "little", signed=g.init < 0)
        except OverflowError:
            raise ValueError(f"global initial value {g.init:#x} does not fit 128 bits") from None
        w.pack("BBI", g.valtype, flags, g.offset)
        w.out += init
        if g.import_from is not None:
            w.pack("II", w.s(g.import_from[0]), w.s(g.import_from[1]))
        if g.init_global is not None:
            w.pack("I", g.init_global)
        if g.init_func is not None:
            w.pack("I", g.init_func)

    w.pack("I", len(md.imports))
    for imp in md.imports:
        w.pack("IIBI", w.s(imp.module), w.s(imp.name), imp.kind, _opt(imp.type_id, NONE32))
        if imp.kind == ExternKind.TABLE:
            t = imp.table
            w.pack("BQQ", t.elem, t.initial, _opt(t.max, NONE64))  # type: ignore[union-attr]
    w.pack("I", len(md.exports))
    for exp in md.exports:
        w.pack("IBI", w.s(exp.name), exp.kind, exp.index)

    w.pack("I", len(md.tables))
    for t in md.tables:
        w.pack("BQQ", t.elem, t.initial, _opt(t.max, NONE64))
    w.pack("I", len(md.funcrefs))
    w.arr("I", md.funcrefs)
    w.pack("I", len(md.elems))
    for e in md.elems:
        w.pack("BBIQII", e.mode, e.elem_type, e.table, _opt(e.offset, NONE64),
               _opt(e.offset_global, NONE32), len(e.items))
        w.arr("I", [NONE32 if i is None else i for i in e.items])
        w.pack("I", len(e.item_globals))
        w.arr("I", [v for pair in e.item_globals for v in pair])

    fns = md.functions
    w.pack("I", len(fns))
    w.arr("I", [f.func_index for f in fns])
    w.arr("I", [w.s(f.name) for f in fns])
    w.arr("I", [f.type_id for f in fns])
    w.arr("Q", [f.code_offset for f in fns])
    w.arr("Q", [f.code_size for f in fns])
    w.arr("Q", [f.wasm_offset for f in fns])
    w.arr("I", [len(f.traps) for f in fns])
    sites = list(chain.from_iterable(f.traps.sites for f in fns))
    w.pack("I", len(sites))
    w.arr("I", [s.code_offset for s in sites])
    w.arr("I", [s.wasm_offset for s in sites])
    w.arr("B", [s.code for s in sites])

    pages = list(md.sparse_data.items())
    w.pack("I", len(pages))
    for index, data in pages:
        if len(data) > SPARSE_PAGE_SIZE:
            raise ValueError(f"sparse page {index} holds {len(data)} bytes, more than "
                             f"{SPARSE_PAGE_SIZE}")
        w.pack("II", index, len(data))
    w.pack("I", len(md.active_data))
    for seg in md.active_data:
        w.pack("III", seg.offset, _opt(seg.offset_global, NONE32), len(seg.data))
        w.out += seg.data

    w.pack("I", len(md.passive_data))
    w.arr("I", [len(d) for d in md.passive_data])
    for d in md.passive_data:
        w.out += d

    # The string pool goes first in the blob but is only complete now.
    strings = list(w.strings)
    pool = _Writer()
    pool.pack("I", len(strings))
    pool.arr("I", [len(s) for s in strings])
    encoded = "".join(strings).encode("utf-8", "surrogatepass")
    pool.pack("I", len(encoded))
    meta = pool.out + encoded + body.out

    meta_end = _PROLOGUE.size + len(meta)
    out = bytearray(_PROLOGUE.pack(BLOB_MAGIC, FORMAT_VERSION, meta_end, zlib.crc32(meta), 0))
    out += meta
    if pages:
        out += bytes(_align(meta_end) - meta_end)
        for _, data in pages:
            out += data
            out += bytes(SPARSE_PAGE_SIZE - len(data))
    return bytes(out)


def _align(n: int, to: int = SPARSE_PAGE_SIZE) -> int:
    return (n + to - 1) & -to


# --- Reading --------------------------------------------------------------------------------------

class _Reader:
    """Bounds-checked cursor: running off the end is a LoadError, never IndexError."""

    def __init__(self, buf: memoryview, pos: int, end: int, strings: Sequence[str] = ()):
        self.buf, self.pos, self.end = buf, pos, end
        self.strings = strings

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise LoadError("module data is truncated or corrupt")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Tuple[int, ...]:
        st = struct.Struct("<" + fmt)
        return st.unpack(self.take(st.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def arr(self, typecode: str, count: int) -> array:
        a = array(typecode)
        a.frombytes(self.take(count * a.itemsize))
        if _SWAP:
            a.byteswap()
        return a

    def s(self, index: int) -> str:
        if index >= len(self.strings):
            raise LoadError(f"module data names string {index} of {len(self.strings)}")
        return self.strings[index]

    def opt_s(self, index: int) -> Optional[str]:
        return None if index == NONE32 else self.s(index)


def _enum(cls, value: int, what: str):  # type: ignore[no-untyped-def]
    try:
        return cls(value)
    except ValueError:
        raise LoadError(f"module data has an invalid {what}: {value:#x}") from None


_VALTYPES = {int(v): v for v in ValType}


def loads(blob: bytes) -> ModuleData:
    """Parse a blob written by :func:`dumps`. Anything malformed raises LoadError."""
    buf = memoryview(blob).cast("B") if not isinstance(blob, memoryview) else blob.cast("B")
    if len(buf) < _PROLOGUE.size:
        raise LoadError("module data is truncated")
    magic, version, meta_end, crc, reserved = _PROLOGUE.unpack_from(buf)
    if magic != BLOB_MAGIC:
        raise LoadError(f"module data has bad magic {bytes(magic)!r}")
    if version != FORMAT_VERSION:
        raise LoadError(f"module data format version {version} is not supported "
                        f"(this runtime reads version {FORMAT_VERSION})")
    if reserved != 0:
        raise LoadError("module data prologue is corrupt")
    if meta_end > len(buf) or meta_end < _PROLOGUE.size:
        raise LoadError("module data is truncated")
    if zlib.crc32(buf[_PROLOGUE.size:meta_end]) != crc:
        raise LoadError("module data is corrupt (checksum mismatch)")
    try:
        return _parse(buf, meta_end)
    except LoadError:
        raise
    except (ValueError, IndexError, struct.error, UnicodeDecodeError, OverflowError) as e:
        # The checksum matched, so this is a writer bug or a deliberately crafted blob.
        raise LoadError(f"module data is malformed: {e}") from None


def _parse(buf: memoryview, meta_end: int) -> ModuleData:
    r = _Reader(buf, _PROLOGUE.size, meta_end)
    n = r.u32()
    lengths = r.arr("I", n)
    text = bytes(r.take(r.u32())).decode("utf-8", "surrogatepass")
    strings: List[str] = []
    pos = 0
    for length in lengths:
        strings.append(text[pos:pos + length])
        pos += length
    if pos != len(text):
        raise LoadError("module data string pool is inconsistent")
    r.strings = strings

    name = r.opt_s(r.u32())
    start = r.u32()
    data_error = r.opt_s(r.u32())
    module_flags = r.u32()
    if module_flags & ~1:
        raise LoadError(f"module data has unknown flags {module_flags:#x}")
    features = frozenset(map(r.s, r.arr("I", r.u32())))

    heap = None
    heap_kind = r.u8()
    if heap_kind > 2:
        raise LoadError(f"module data has an invalid heap kind {heap_kind}")
    if heap_kind:
        initial, max_size, reserved, guard = r.unpack("QQQQ")
        heap = HeapSpec(initial, None if max_size == NONE64 else max_size, reserved, guard,
                        imported=heap_kind == 2)

    ntypes = r.u32()
    nparams, nresults = r.arr("I", ntypes), r.arr("I", ntypes)
    valtypes = bytes(r.take(r.u32()))
    if sum(nparams) + sum(nresults) != len(valtypes):
        raise LoadError("module data type section is inconsistent")
    try:
        vts = [_VALTYPES[v] for v in valtypes]
    except KeyError as e:
        raise LoadError(f"module data has an invalid value type {e.args[0]:#x}") from None
    types: List[FuncType] = []
    pos = 0
    for np_, nr in zip(nparams, nresults):
        types.append(FuncType(tuple(vts[pos:pos + np_]), tuple(vts[pos + np_:pos + np_ + nr])))
        pos += np_ + nr

    globals_: List[GlobalSpec] = []
    for _ in range(r.u32()):
        vt, flags, offset = r.unpack("BBI")
        init = int.from_bytes(r.take(16), "little", signed=bool(flags & 8))
        import_from = (r.s(r.u32()), r.s(r.u32())) if flags & 2 else None
        init_global = r.u32() if flags & 4 else None
        init_func = r.u32() if flags & 16 else None
        globals_.append(GlobalSpec(_enum(ValType, vt, "global type"), bool(flags & 1), init,
                                   offset, import_from, init_global, init_func))

    imports: List[ImportSpec] = []
    for _ in range(r.u32()):
        mod, nm, kind, type_id = r.unpack("IIBI")
        ekind = _enum(ExternKind, kind, "import kind")
        table = None
        if ekind == ExternKind.TABLE:
            elem, initial, max_ = r.unpack("BQQ")
            table = TableSpec(_enum(ValType, elem, "table element type"), initial,
                              None if max_ == NONE64 else max_)
        imports.append(ImportSpec(r.s(mod), r.s(nm), ekind,
                                  None if type_id == NONE32 else type_id, table))
    exports: List[ExportSpec] = []
    for _ in range(r.u32()):
        nm, kind, index = r.unpack("IBI")
        exports.append(ExportSpec(r.s(nm), _enum(ExternKind, kind, "export kind"), index))

    tables: List[TableSpec] = []
    for _ in range(r.u32()):
        elem, initial, max_ = r.unpack("BQQ")
        tables.append(TableSpec(_enum(ValType, elem, "table element type"), initial,
                                None if max_ == NONE64 else max_))
    funcrefs = list(r.arr("I", r.u32()))
    elems: List[ElemSpec] = []
    for _ in range(r.u32()):
        mode, elem_type, table, offset, offset_global, nitems = r.unpack("BBIQII")
        items = tuple(None if i == NONE32 else i for i in r.arr("I", nitems))
        item_globals = tuple(_pairs(r.arr("I", 2 * r.u32())))
        elems.append(ElemSpec(_enum(SegmentMode, mode, "element segment mode"), _enum(ValType, elem_type, "element type"), items, table,
                              None if offset == NONE64 else offset,
                              None if offset_global == NONE32 else offset_global,
                              item_globals))

    nfuncs = r.u32()
    func_index, names, type_ids = r.arr("I", nfuncs), r.arr("I", nfuncs), r.arr("I", nfuncs)
    code_offset, code_size, wasm_offset = (r.arr("Q", nfuncs), r.arr("Q", nfuncs),
                                           r.arr("Q", nfuncs))
    ntraps = r.arr("I", nfuncs)
    total = r.u32()
    if sum(ntraps) != total:
        raise LoadError("module data trap counts are inconsistent")
    site_offsets, site_wasm = r.arr("I", total), r.arr("I", total)
    site_codes = r.arr("B", total)
    if total and max(site_codes) >= len(TrapCode):
        raise LoadError(f"module data has an invalid trap code {max(site_codes)}")
    functions: List[FunctionSpec] = []
    pos = 0
    for i in range(nfuncs):
        n = ntraps[i]
        functions.append(FunctionSpec(func_index[i], r.s(names[i]), type_ids[i], code_offset[i],
                                      code_size[i],
                                      TrapTable.view(site_offsets, site_codes, site_wasm,
                                                     pos, pos + n),
                                      wasm_offset[i]))
        pos += n

    npages = r.u32()
    page_area = _align(meta_end)
    sparse: Dict[int, bytes] = {}
    for j, (index, length) in enumerate(_pairs(r.arr("I", 2 * npages))):
        if length > SPARSE_PAGE_SIZE:
            raise LoadError(f"module data sparse page {index} is {length} bytes long")
        at = page_area + j * SPARSE_PAGE_SIZE
        if at + length > len(buf):
            raise LoadError("module data is truncated (sparse pages)")
        sparse[index] = bytes(buf[at:at + length])
    active: List[DataSpec] = []
    for _ in range(r.u32()):
        offset, offset_global, length = r.unpack("III")
        active.append(DataSpec(offset, None if offset_global == NONE32 else offset_global,
                               bytes(r.take(length))))
    passive = [bytes(r.take(n)) for n in r.arr("I", r.u32())]
    if r.pos != meta_end:
        raise LoadError("module data has trailing bytes")

    return ModuleData(name=name, heap=heap, types=types, globals=globals_, functions=functions,
                      imports=imports, exports=exports, tables=tables, sparse_data=sparse,
                      start=None if start == NONE32 else start, features=features,
                      data_error=data_error, interrupt_checks=bool(module_flags & 1),
                      funcrefs=funcrefs, elems=elems, passive_data=passive,
                      active_data=active)


def _pairs(a: array) -> Iterator[Tuple[int, int]]:
    it = iter(a)
    return zip(it, it)


def sparse_page_offsets(blob: bytes) -> Dict[int, Tuple[int, int]]:
    """Where each sparse page lies in ``blob``: page index -> (offset in blob, length).

    For a runtime that maps pages from the file instead of copying them: offsets are multiples
    of 4096 (see the module docstring). This validates by parsing the whole blob."""
    md_pages = loads(blob).sparse_data
    meta_end = _PROLOGUE.unpack_from(blob)[2]
    area = _align(meta_end)
    return {index: (area + j * SPARSE_PAGE_SIZE, len(data))
            for j, (index, data) in enumerate(md_pages.items())}

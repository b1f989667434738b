"""The WebAssembly binary decoder: bytes in, a :class:`~pylucet.wasm.types.Module` out.

Two entry points, because modules are large and compilation streams one function at a time:

* :func:`decode_module` reads every section, but leaves function bodies as byte ranges
  (:class:`~pylucet.wasm.types.FunctionBody`), so a 30 MB module costs a few structures, not
  millions of instruction tuples.
* :func:`decode_body` turns one body into its instruction list when the compiler wants it.

Malformation is reported as the reference interpreter reports it, because the spec test suite
checks the message text: every error is a :class:`~pylucet.errors.MalformedModule` whose
``reason`` is the suite's string. Some of the interpreter's quirks are mirrored on purpose so the
suite's verdicts come out the same:

* Reads are bounded by the end of the file, not of the current section or body; a section (or
  body) whose contents do not end exactly at its declared size is a "section size mismatch"
  afterwards. So a body missing its final ``end`` runs on into the next bytes, like the spec's.
* A vector length or byte count larger than what is left of the file is "length out of bounds"
  before anything is read, which also keeps a hostile count from making us loop or allocate.
* Running off the end of the file inside a section or body is "unexpected end of section or
  function"; off the end of the header or a section header, "unexpected end". The suite compares
  messages by prefix (as its own runner does) and uses either spelling for the former, so both
  forms satisfy it.

Instruction decoding is table driven: each opcode's immediate reader is derived from its
:class:`~pylucet.wasm.opcodes.Imm` kind, and the hot loop dispatches on a small per-byte "shape"
so the common instructions (no immediate, an index, an ``i32.const``) never make a call.
"""

from __future__ import annotations

import gc
import struct
from contextlib import contextmanager
from typing import Callable, Dict, List, NoReturn, Optional, Tuple

from ..errors import MalformedModule, UnsupportedProposal
from .leb128 import read_s, read_u
from .opcodes import (LIMITS_PROPOSALS, OPS, PREFIXES, PROPOSAL_PREFIXES, Imm, Op,
                      proposal_of_code)
from .types import (ConstExpr, DataSegment, ElemSegment, Export, ExternKind, FuncType,
                    FunctionBody, Global, GlobalType, Import, Instr, MemoryType, Module, Names,
                    SegmentMode, SizeLimits, TableType, ValType)

__all__ = ["decode_module", "decode_body", "MAX_LOCALS"]

WASM_MAGIC = b"\0asm"
WASM_VERSION = b"\x01\0\0\0"

MAX_LOCALS = 50_000
"""Declared locals one function may have. The format allows 2**32-1; like wasmtime we refuse more
than this as an implementation limit (reported as "too many locals"), since every local becomes a
stack slot and the expanded ``FunctionBody.locals`` tuple would otherwise be unbounded."""

# The suite's messages, spelled once.
END_OF_FILE = "unexpected end"
END_OF_SECTION = "unexpected end of section or function"
SIZE_MISMATCH = "section size mismatch"
LENGTH_OUT_OF_BOUNDS = "length out of bounds"
ILLEGAL_OPCODE = "illegal opcode"
END_EXPECTED = "END opcode expected"
ZERO_BYTE_EXPECTED = "zero byte expected"
TOO_MANY_LOCALS = "too many locals"
DATA_COUNT_REQUIRED = "data count section required"

_VALTYPES: Dict[int, ValType] = {t.value: t for t in ValType}
_REFTYPES: Dict[int, ValType] = {t.value: t for t in ValType if t.is_ref}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _eos(exc: Exception, data: bytes) -> MalformedModule:
    """Running off the end of the bytes, however it surfaced, as the suite's message."""
    if isinstance(exc, MalformedModule) and exc.reason != END_OF_FILE:
        return exc
    return MalformedModule(END_OF_SECTION, len(data))


def _check_length(n: int, data: bytes, at: int) -> None:
    """The interpreter's ``len32`` bound: a count may not exceed what is left of the file,
    counted from the start of the count itself."""
    if n > len(data) - at:
        raise MalformedModule(LENGTH_OUT_OF_BOUNDS, at)


# --- immediate readers ---------------------------------------------------------------------------
# Each takes (data, pos) of the first immediate byte and returns (imm, new_pos). Reading past the
# end of ``data`` may raise IndexError or struct.error; the instruction loop turns that into the
# suite's message, so the readers stay free of bounds checks.

def _read_none(data: bytes, pos: int) -> Tuple[None, int]:
    return None, pos


def _read_u32(data: bytes, pos: int) -> Tuple[int, int]:
    return read_u(data, pos, 32)


def _read_i32(data: bytes, pos: int) -> Tuple[int, int]:
    return read_s(data, pos, 32)


def _read_i64(data: bytes, pos: int) -> Tuple[int, int]:
    return read_s(data, pos, 64)


def _read_f32(data: bytes, pos: int) -> Tuple[int, int]:
    return _U32.unpack_from(data, pos)[0], pos + 4


def _read_f64(data: bytes, pos: int) -> Tuple[int, int]:
    return _U64.unpack_from(data, pos)[0], pos + 8


def _read_zero(data: bytes, pos: int) -> int:
    """A memory index that Wasm 2.0 encodes as one reserved zero byte (not a LEB: ``80 00`` is
    malformed too), per binary.wast."""
    if data[pos] != 0:
        raise MalformedModule(ZERO_BYTE_EXPECTED, pos)
    return pos + 1


def _read_memory(data: bytes, pos: int) -> Tuple[int, int]:
    return 0, _read_zero(data, pos)


def _read_memory_init(data: bytes, pos: int) -> Tuple[Tuple[int, int], int]:
    index, pos = read_u(data, pos, 32)
    return (index, 0), _read_zero(data, pos)


def _read_memory_copy(data: bytes, pos: int) -> Tuple[Tuple[int, int], int]:
    return (0, 0), _read_zero(data, _read_zero(data, pos))


def _read_index_pair(data: bytes, pos: int) -> Tuple[Tuple[int, int], int]:
    """Two u32 indices in binary order: (type, table) for call_indirect, (elem, table) for
    table.init, (dst, src) for table.copy, which is also their ``imm`` order."""
    first, pos = read_u(data, pos, 32)
    second, pos = read_u(data, pos, 32)
    return (first, second), pos


def _read_memarg(data: bytes, pos: int) -> Tuple[Tuple[int, int], int]:
    start = pos
    align, pos = read_u(data, pos, 32)
    if align >= 32:   # Wasm 2.0: no memory-index flag (bit 6) yet
        raise MalformedModule("malformed memop flags", start)
    offset, pos = read_u(data, pos, 32)
    return (align, offset), pos


def _read_type(data: bytes, pos: int, table: Dict[int, ValType], what: str) -> Tuple[ValType, int]:
    """One type byte. The interpreter reads it as a one-byte signed LEB, hence the message for
    a continuation bit."""
    b = data[pos]
    t = table.get(b)
    if t is None:
        raise MalformedModule("integer representation too long" if b & 0x80 else what, pos)
    return t, pos + 1


def _read_valtype(data: bytes, pos: int) -> Tuple[ValType, int]:
    return _read_type(data, pos, _VALTYPES, "malformed value type")


def _read_reftype(data: bytes, pos: int) -> Tuple[ValType, int]:
    return _read_type(data, pos, _REFTYPES, "malformed reference type")


def _read_blocktype(data: bytes, pos: int) -> Tuple[object, int]:
    b = data[pos]
    if b == 0x40:
        return None, pos + 1
    t = _VALTYPES.get(b)
    if t is not None:
        return t, pos + 1
    index, end = read_s(data, pos, 33)
    if index < 0:
        raise MalformedModule("malformed block type", pos)
    return index, end


def _read_br_table(data: bytes, pos: int) -> Tuple[Tuple[Tuple[int, ...], int], int]:
    n, p = read_u(data, pos, 32)
    _check_length(n, data, pos)
    depths = []
    for _ in range(n):
        d, p = read_u(data, p, 32)
        depths.append(d)
    default, p = read_u(data, p, 32)
    return (tuple(depths), default), p


def _read_select_t(data: bytes, pos: int) -> Tuple[Tuple[ValType, ...], int]:
    n, p = read_u(data, pos, 32)
    _check_length(n, data, pos)
    types = []
    for _ in range(n):
        t, p = _read_valtype(data, p)
        types.append(t)
    return tuple(types), p


def _read_v128(data: bytes, pos: int) -> Tuple[int, int]:
    if pos + 16 > len(data):
        raise IndexError   # a short slice would not fail by itself
    return int.from_bytes(data[pos:pos + 16], "little"), pos + 16


def _read_lane(data: bytes, pos: int) -> Tuple[int, int]:
    return data[pos], pos + 1


def _read_memarg_lane(data: bytes, pos: int) -> Tuple[Tuple[Tuple[int, int], int], int]:
    memarg, pos = _read_memarg(data, pos)
    return (memarg, data[pos]), pos + 1


Reader = Callable[[bytes, int], Tuple[object, int]]

_READERS: Dict[str, Reader] = {
    "none": _read_none,
    "blocktype": _read_blocktype,
    "label": _read_u32,
    "br_table": _read_br_table,
    "func": _read_u32,
    "call_indirect": _read_index_pair,
    "local": _read_u32,
    "global": _read_u32,
    "table": _read_u32,
    "memarg": _read_memarg,
    "memory": _read_memory,
    "i32": _read_i32,
    "i64": _read_i64,
    "f32": _read_f32,
    "f64": _read_f64,
    "select_t": _read_select_t,
    "reftype": _read_reftype,
    "data": _read_u32,
    "elem": _read_u32,
    "memory_init": _read_memory_init,
    "memory_copy": _read_memory_copy,
    "table_init": _read_index_pair,
    "table_copy": _read_index_pair,
    # SIMD immediates, ready for when 0xFD rows (and these Imm kinds) join the opcode table.
    "v128": _read_v128,
    "lane": _read_lane,
    "memarg_lane": _read_memarg_lane,
}
"""Immediate reader by :class:`Imm` value. Keyed by the value string so readers for kinds the
table does not use yet can wait here without touching ``opcodes``."""


def _reader_for(imm: Imm) -> Reader:
    try:
        return _READERS[imm.value]
    except KeyError:
        raise RuntimeError(f"decoder has no reader for immediate kind {imm.value!r}; "
                           f"add one to pylucet.wasm.decoder._READERS") from None


# Shapes steer the hot loop; anything without a fast path is _CALL (use the reader).
_INDEX, _NONE, _I32, _MEMARG, _CALL, _BLOCK, _ELSE, _END, _PREFIX, _ILLEGAL = range(10)


def _build_tables():
    """Per-byte op, shape and reader lists for one-byte opcodes, and a dict for prefixed ones."""
    ops: List[Optional[Op]] = [None] * 256
    shapes = [_ILLEGAL] * 256
    readers: List[Optional[Reader]] = [None] * 256
    prefixed: Dict[int, Tuple[Op, Optional[Reader]]] = {}
    fast = {_read_u32: _INDEX, _read_none: _NONE, _read_i32: _I32, _read_memarg: _MEMARG}
    for code, info in OPS.items():
        reader = _reader_for(info.imm)
        if info.prefix is not None:
            prefixed[code] = (Op(code), None if reader is _read_none else reader)
            continue
        ops[code] = Op(code)
        readers[code] = reader
        if code == Op.END:
            shapes[code] = _END
        elif code == Op.ELSE:
            shapes[code] = _ELSE
        elif info.imm is Imm.BLOCKTYPE:
            shapes[code] = _BLOCK
        else:
            shapes[code] = fast.get(reader, _CALL)
    for prefix in PREFIXES:
        shapes[prefix] = _PREFIX
    return ops, shapes, readers, prefixed


_OPS1, _SHAPES1, _READERS1, _PREFIXED = _build_tables()
_PROPOSAL_PREFIXES = frozenset(PROPOSAL_PREFIXES) - frozenset(PREFIXES)
_NEEDS_DATA_COUNT = frozenset({Op.MEMORY_INIT, Op.DATA_DROP})
_IF = 1   # control frame kinds: 0 block/loop/function/else-branch, _IF an if awaiting else


@contextmanager
def _gc_paused():
    """Decoding allocates a tuple per instruction, none of them in a cycle; CPython's collector
    would still rescan the growing list over and over, which halves throughput or worse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode_instrs(data: bytes, pos: int, data_count_known: bool = True) -> Tuple[List[Instr], int]:
    """Instructions from ``pos`` through the ``end`` that closes the outermost frame.

    Returns the list (that final ``end`` included) and the position after it. Bounded only by
    the end of ``data``; callers check that the end landed where it should. The fast paths
    below inline the one-byte LEB case of the readers they stand for.
    """
    out: List[Instr] = []
    append = out.append
    ops, shapes, readers = _OPS1, _SHAPES1, _READERS1
    INDEX, NONE, I32, MEMARG, CALL, BLOCK, ELSE, END, PREFIX = (
        _INDEX, _NONE, _I32, _MEMARG, _CALL, _BLOCK, _ELSE, _END, _PREFIX)
    frames = [0]
    try:
        while True:
            at = pos
            b = data[pos]
            pos += 1
            shape = shapes[b]
            if shape == INDEX:
                v = data[pos]
                if v < 0x80:
                    pos += 1
                else:
                    v, pos = read_u(data, pos, 32)
                append((ops[b], v, at))
            elif shape == NONE:
                append((ops[b], None, at))
            elif shape == I32:
                v = data[pos]
                if v < 0x40:
                    pos += 1
                elif v < 0x80:
                    v -= 0x80
                    pos += 1
                else:
                    v, pos = read_s(data, pos, 32)
                append((ops[b], v, at))
            elif shape == MEMARG:
                align = data[pos]
                offset = data[pos + 1]
                if align < 32 and offset < 0x80:
                    pos += 2
                    append((ops[b], (align, offset), at))
                else:
                    imm, pos = _read_memarg(data, pos)
                    append((ops[b], imm, at))
            elif shape == CALL:
                imm, pos = readers[b](data, pos)
                append((ops[b], imm, at))
            elif shape == END:
                append((ops[b], None, at))
                frames.pop()
                if not frames:
                    return out, pos
            elif shape == BLOCK:
                imm, pos = _read_blocktype(data, pos)
                frames.append(_IF if b == 0x04 else 0)
                append((ops[b], imm, at))
            elif shape == ELSE:
                if frames[-1] != _IF:
                    raise MalformedModule(END_EXPECTED, at)
                frames[-1] = 0
                append((ops[b], None, at))
            elif shape == PREFIX:
                sub, pos = read_u(data, pos, 32)
                entry = _PREFIXED.get(b << 12 | sub)
                if entry is None:
                    _illegal(b << 12 | sub, at)
                op, reader = entry
                if op in _NEEDS_DATA_COUNT and not data_count_known:
                    raise MalformedModule(DATA_COUNT_REQUIRED, at)
                imm = None
                if reader is not None:
                    imm, pos = reader(data, pos)
                append((op, imm, at))
            elif b in _PROPOSAL_PREFIXES:   # a prefix family no row of OPS uses
                sub, pos = read_u(data, pos, 32)
                _illegal(b << 12 | sub, at)
            else:
                _illegal(b, at)
    except (IndexError, struct.error, MalformedModule) as exc:
        raise _eos(exc, data) from None


def _illegal(code: int, at: int) -> NoReturn:
    """An opcode outside OPS: an instruction of a proposal we do not support says so; anything
    else is malformed, as the spec has it."""
    known = proposal_of_code(code)
    if known is not None:
        raise UnsupportedProposal(known[0], known[1].value, at)
    raise MalformedModule(ILLEGAL_OPCODE, at)


def decode_body(module: Module, body: FunctionBody) -> List[Instr]:
    """The instructions of one function, final ``end`` included, as ``(op, imm, offset)``."""
    with _gc_paused():
        instrs, pos = _decode_instrs(module.binary, body.start, module.data_count is not None)
    if pos != body.end:
        raise MalformedModule(SIZE_MISMATCH, body.start)
    return instrs


# --- module structure ----------------------------------------------------------------------------

class _Stream:
    """A cursor over the module bytes for everything outside instruction sequences.

    ``limit`` bounds reads (the file, or a custom section's payload); running past it raises
    ``eos_message``, which changes from the header's spelling to the in-section one once
    sections start.
    """

    __slots__ = ("data", "pos", "limit", "eos_message")

    def __init__(self, data: bytes, pos: int = 0, limit: Optional[int] = None):
        self.data = data
        self.pos = pos
        self.limit = len(data) if limit is None else limit
        self.eos_message = END_OF_SECTION

    def eos(self) -> MalformedModule:
        return MalformedModule(self.eos_message, self.limit)

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.limit:
            raise self.eos()
        self.pos = pos + 1
        return self.data[pos]

    def bytes(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.limit:
            raise self.eos()
        self.pos = pos + n
        return self.data[pos:pos + n]

    def _leb(self, read, bits: int) -> int:
        try:
            value, pos = read(self.data, self.pos, bits)
        except MalformedModule as exc:
            if exc.reason == END_OF_FILE:
                raise self.eos() from None
            raise
        if pos > self.limit:
            raise self.eos()
        self.pos = pos
        return value

    def u32(self) -> int:
        return self._leb(read_u, 32)

    def u(self, bits: int) -> int:
        return self._leb(read_u, bits)

    def length(self) -> int:
        """A vector length or byte count (the interpreter's ``len32``)."""
        at = self.pos
        n = self.u32()
        if n > self.limit - at:
            raise MalformedModule(LENGTH_OUT_OF_BOUNDS, at)
        return n

    def name(self) -> str:
        at = self.pos
        raw = self.bytes(self.length())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedModule("malformed UTF-8 encoding", at) from None

    def _type(self, read: Reader) -> ValType:
        if self.pos >= self.limit:
            raise self.eos()
        t, self.pos = read(self.data, self.pos)
        return t

    def valtype(self) -> ValType:
        return self._type(_read_valtype)

    def reftype(self) -> ValType:
        return self._type(_read_reftype)

    def limits(self) -> SizeLimits:
        if self.pos < self.limit and self.data[self.pos] in LIMITS_PROPOSALS:
            what, proposal = LIMITS_PROPOSALS[self.data[self.pos]]
            raise UnsupportedProposal(what, proposal.value, self.pos)
        has_max = self.u(1)    # a one-bit LEB: 2 is "integer too large", 0x81 "too long"
        minimum = self.u32()
        return SizeLimits(minimum, self.u32() if has_max else None)

    def mutability(self) -> bool:
        b = self.byte()
        if b > 1:
            raise MalformedModule("malformed mutability", self.pos - 1)
        return b == 1

    def global_type(self) -> GlobalType:
        t = self.valtype()
        return GlobalType(t, self.mutability())

    def const_expr(self) -> ConstExpr:
        instrs, self.pos = _decode_instrs(self.data, self.pos)
        return tuple(instrs[:-1])

    def func_index_expr(self) -> ConstExpr:
        """An element given as a bare function index (element encodings 0-3), as the
        ``ref.func`` it stands for; its offset is the index's, there being no opcode."""
        at = self.pos
        return ((Op.REF_FUNC, self.u32(), at),)


_SECTION_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 12: 10, 10: 11, 11: 12}
"""Where each non-custom section id may appear (data count sits between element and code)."""
_CODE_SECTION = 10


def decode_module(data: bytes, *, check_bodies: bool = False) -> Module:
    """Decode a module binary. Function bodies are located and their locals read; with
    ``check_bodies`` their instructions are decoded too (and thrown away), so that every
    malformation surfaces here in the spec's order, as ``assert_malformed`` wants."""
    if not isinstance(data, bytes):
        data = bytes(data)
    with _gc_paused():
        return _decode_sections(data, check_bodies)


def _decode_sections(data: bytes, check_bodies: bool) -> Module:
    s = _Stream(data)
    s.eos_message = END_OF_FILE
    if s.bytes(4) != WASM_MAGIC:
        raise MalformedModule("magic header not detected", 0)
    if s.bytes(4) != WASM_VERSION:
        raise MalformedModule("unknown binary version", 4)

    module = Module(binary=data)
    last_order = 0
    n = len(data)
    while s.pos < n:
        section_id = data[s.pos]
        order = _SECTION_ORDER.get(section_id)
        if order is None and section_id != 0:
            raise MalformedModule("malformed section id", s.pos)
        if order is not None:
            # a repeated or out-of-order section is where the interpreter stops reading
            if order <= last_order:
                raise MalformedModule("unexpected content after last section", s.pos)
            last_order = order
        s.pos += 1
        s.eos_message = END_OF_FILE
        size = s.length()
        start = s.pos
        s.eos_message = END_OF_SECTION
        if section_id == 0:
            _custom_section(s, module, start + size)
        else:
            _SECTIONS[section_id](s, module)
            if section_id == _CODE_SECTION and check_bodies:
                for body in module.codes:
                    decode_body(module, body)
        if s.pos != start + size:
            raise MalformedModule(SIZE_MISMATCH, start)

    if len(module.funcs) != len(module.codes):
        raise MalformedModule("function and code section have inconsistent lengths", n)
    if module.data_count is not None and module.data_count != len(module.datas):
        raise MalformedModule("data count and data section have inconsistent lengths", n)
    return module


def _vec(s: _Stream, item: Callable[[], object]) -> list:
    return [item() for _ in range(s.length())]


def _type_section(s: _Stream, m: Module) -> None:
    def functype() -> FuncType:
        at = s.pos
        form = s.byte()
        if form != 0x60:
            raise MalformedModule("integer representation too long" if form & 0x80
                                  else "malformed function type", at)
        params = tuple(_vec(s, s.valtype))
        return FuncType(params, tuple(_vec(s, s.valtype)))
    m.types = _vec(s, functype)


def _import_section(s: _Stream, m: Module) -> None:
    def import_() -> Import:
        module_name = s.name()
        name = s.name()
        kind = s.byte()
        desc: object
        if kind == ExternKind.FUNC:
            desc = s.u32()
        elif kind == ExternKind.TABLE:
            elem = s.reftype()
            desc = TableType(elem, s.limits())
        elif kind == ExternKind.MEMORY:
            desc = MemoryType(s.limits())
        elif kind == ExternKind.GLOBAL:
            desc = s.global_type()
        else:
            raise MalformedModule("malformed import kind", s.pos - 1)
        return Import(module_name, name, ExternKind(kind), desc)  # type: ignore[arg-type]
    m.imports = _vec(s, import_)


def _function_section(s: _Stream, m: Module) -> None:
    m.funcs = _vec(s, s.u32)


def _table_section(s: _Stream, m: Module) -> None:
    def table() -> TableType:
        elem = s.reftype()
        return TableType(elem, s.limits())
    m.tables = _vec(s, table)


def _memory_section(s: _Stream, m: Module) -> None:
    m.memories = _vec(s, lambda: MemoryType(s.limits()))


def _global_section(s: _Stream, m: Module) -> None:
    def global_() -> Global:
        gt = s.global_type()
        return Global(gt, s.const_expr())
    m.globals = _vec(s, global_)


def _export_section(s: _Stream, m: Module) -> None:
    def export() -> Export:
        name = s.name()
        kind = s.byte()
        if kind > ExternKind.GLOBAL:
            raise MalformedModule("malformed export kind", s.pos - 1)
        return Export(name, ExternKind(kind), s.u32())
    m.exports = _vec(s, export)


def _start_section(s: _Stream, m: Module) -> None:
    m.start = s.u32()


def _elem_section(s: _Stream, m: Module) -> None:
    def elem_kind() -> ValType:
        if s.byte() != 0x00:
            raise MalformedModule("malformed element kind", s.pos - 1)
        return ValType.FUNCREF

    def segment() -> ElemSegment:
        at = s.pos
        flags = s.u32()
        if flags > 7:
            raise MalformedModule("malformed elements segment kind", at)
        # bit 0: passive or declarative; bit 1: explicit table (active) or declarative;
        # bit 2: elements are expressions with a reference type, not function indices
        passive_or_declarative, explicit, exprs = flags & 1, flags & 2, flags & 4
        table, offset = 0, None
        if passive_or_declarative:
            mode = SegmentMode.DECLARATIVE if explicit else SegmentMode.PASSIVE
        else:
            mode = SegmentMode.ACTIVE
            if explicit:
                table = s.u32()
            offset = s.const_expr()
        if exprs:
            elem_type = s.reftype() if flags & 3 else ValType.FUNCREF
            init = _vec(s, s.const_expr)
        else:
            elem_type = elem_kind() if flags & 3 else ValType.FUNCREF
            init = _vec(s, s.func_index_expr)
        return ElemSegment(mode, elem_type, tuple(init), table, offset)
    m.elems = _vec(s, segment)


def _code_section(s: _Stream, m: Module) -> None:
    data = s.data

    def code() -> FunctionBody:
        size = s.length()
        start = s.pos
        locals_: List[ValType] = []
        total = 0
        for _ in range(s.length()):
            at = s.pos
            count = s.u32()
            t = s.valtype()
            total += count
            if total > MAX_LOCALS:
                raise MalformedModule(TOO_MANY_LOCALS, at)
            locals_.extend([t] * count)
        if s.pos > start + size:
            raise MalformedModule(SIZE_MISMATCH, start)
        body = FunctionBody(tuple(locals_), s.pos, start + size)
        s.pos = start + size
        if s.pos > len(data):
            raise s.eos()
        return body
    m.codes = _vec(s, code)


def _data_section(s: _Stream, m: Module) -> None:
    def segment() -> DataSegment:
        at = s.pos
        flags = s.u32()
        memory, offset = 0, None
        if flags == 1:
            mode = SegmentMode.PASSIVE
        elif flags in (0, 2):
            mode = SegmentMode.ACTIVE
            if flags == 2:
                memory = s.u32()
            offset = s.const_expr()
        else:
            raise MalformedModule("malformed data segment kind", at)
        return DataSegment(mode, s.bytes(s.length()), memory, offset)
    m.datas = _vec(s, segment)


def _data_count_section(s: _Stream, m: Module) -> None:
    m.data_count = s.u32()


_SECTIONS: Dict[int, Callable[[_Stream, Module], None]] = {
    1: _type_section, 2: _import_section, 3: _function_section, 4: _table_section,
    5: _memory_section, 6: _global_section, 7: _export_section, 8: _start_section,
    9: _elem_section, 10: _code_section, 11: _data_section, 12: _data_count_section,
}


# --- custom sections -----------------------------------------------------------------------------

def _custom_section(s: _Stream, m: Module, end: int) -> None:
    name = s.name()
    if s.pos > end:
        raise MalformedModule(END_OF_SECTION, end)
    first_names = name == "name" and all(n != "name" for n, _ in m.customs)
    payload_start = s.pos
    m.customs.append((name, s.bytes(end - s.pos)))
    if first_names:
        names = _name_section(s.data, payload_start, end)
        if names is not None:
            m.names = names


def _name_section(data: bytes, start: int, end: int) -> Optional[Names]:
    """The ``name`` section, or None if it is malformed: names are debugging aids, so like
    other engines we drop a broken one rather than reject the module."""
    s = _Stream(data, start, end)
    names = Names()
    last_id = -1
    try:
        while s.pos < end:
            sub_id = s.byte()
            size = s.length()
            sub_end = s.pos + size
            if sub_id <= last_id:   # subsections come at most once, in order
                return None
            last_id = sub_id
            if sub_id == 0:
                names.module = s.name()
            elif sub_id == 1:
                names.functions = _name_map(s)
            elif sub_id == 2:
                for _ in range(s.length()):
                    func = s.u32()
                    names.locals[func] = _name_map(s)
            else:
                s.pos = sub_end   # extended subsections (labels, types...): nothing uses them
            if s.pos != sub_end:
                return None
    except MalformedModule:
        return None
    return names


def _name_map(s: _Stream) -> Dict[int, str]:
    out: Dict[int, str] = {}
    for _ in range(s.length()):
        index = s.u32()
        out[index] = s.name()
    return out

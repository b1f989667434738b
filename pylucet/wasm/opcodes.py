"""The opcode table: one declarative list from which the decoder, the WAT parser, the validator
and the compiler all derive what they know about an instruction.

Each row gives the binary code, the text mnemonic, the kind of immediate, and for instructions
with a fixed stack effect their signature (``params:results``, ``-`` for none). Rows without a
signature (control flow, locals, calls, ``select``, reference and table instructions...) are
checked by hand in the validator.

Codes: a one-byte opcode is its byte; a prefixed opcode is ``prefix << 12 | sub-opcode``, so
``i32.trunc_sat_f32_s`` (0xFC 0) is ``0xFC000`` and SIMD (0xFD) opcodes are ``0xFD000 | n``.

Immediate forms (the ``imm`` of an ``(op, imm, offset)`` instruction):

============== =================================================================================
kind           ``imm``
============== =================================================================================
none           ``None``
blocktype      ``None`` (empty), a :class:`ValType` (one result), or an ``int`` type index
label          ``int`` relative depth
br_table       ``(tuple_of_depths, default_depth)``
func           ``int`` function index
call_indirect  ``(type_index, table_index)``
local          ``int`` local index
global         ``int`` global index
table          ``int`` table index
memarg         ``(align_log2, offset)`` for memory 0
memory         ``int`` memory index (0 in Wasm 2.0)
i32, i64       ``int``, signed, as decoded
f32, f64       ``int``: the raw IEEE bits, so NaN payloads survive
select_t       ``tuple`` of :class:`ValType`
reftype        a :class:`ValType` (FUNCREF or EXTERNREF)
data           ``int`` data index
elem           ``int`` element index
memory_init    ``(data_index, memory_index)``
memory_copy    ``(dst_memory, src_memory)``
table_init     ``(elem_index, table_index)``
table_copy     ``(dst_table, src_table)``
============== =================================================================================
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .types import ValType


class Imm(enum.Enum):
    NONE = "none"
    BLOCKTYPE = "blocktype"
    LABEL = "label"
    BR_TABLE = "br_table"
    FUNC = "func"
    CALL_INDIRECT = "call_indirect"
    LOCAL = "local"
    GLOBAL = "global"
    TABLE = "table"
    MEMARG = "memarg"
    MEMORY = "memory"
    I32 = "i32"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    SELECT_T = "select_t"
    REFTYPE = "reftype"
    DATA = "data"
    ELEM = "elem"
    MEMORY_INIT = "memory_init"
    MEMORY_COPY = "memory_copy"
    TABLE_INIT = "table_init"
    TABLE_COPY = "table_copy"


# code  mnemonic  immediate  signature (params:results; "-" = checked by hand)  [access bytes]
_TABLE = """
0x00 unreachable none -
0x01 nop none :
0x02 block blocktype -
0x03 loop blocktype -
0x04 if blocktype -
0x05 else none -
0x0B end none -
0x0C br label -
0x0D br_if label -
0x0E br_table br_table -
0x0F return none -
0x10 call func -
0x11 call_indirect call_indirect -
0x1A drop none -
0x1B select none -
0x1C select_t select_t -
0x20 local.get local -
0x21 local.set local -
0x22 local.tee local -
0x23 global.get global -
0x24 global.set global -
0x25 table.get table -
0x26 table.set table -
0x28 i32.load memarg i32:i32 4
0x29 i64.load memarg i32:i64 8
0x2A f32.load memarg i32:f32 4
0x2B f64.load memarg i32:f64 8
0x2C i32.load8_s memarg i32:i32 1
0x2D i32.load8_u memarg i32:i32 1
0x2E i32.load16_s memarg i32:i32 2
0x2F i32.load16_u memarg i32:i32 2
0x30 i64.load8_s memarg i32:i64 1
0x31 i64.load8_u memarg i32:i64 1
0x32 i64.load16_s memarg i32:i64 2
0x33 i64.load16_u memarg i32:i64 2
0x34 i64.load32_s memarg i32:i64 4
0x35 i64.load32_u memarg i32:i64 4
0x36 i32.store memarg i32,i32: 4
0x37 i64.store memarg i32,i64: 8
0x38 f32.store memarg i32,f32: 4
0x39 f64.store memarg i32,f64: 8
0x3A i32.store8 memarg i32,i32: 1
0x3B i32.store16 memarg i32,i32: 2
0x3C i64.store8 memarg i32,i64: 1
0x3D i64.store16 memarg i32,i64: 2
0x3E i64.store32 memarg i32,i64: 4
0x3F memory.size memory :i32
0x40 memory.grow memory i32:i32
0x41 i32.const i32 :i32
0x42 i64.const i64 :i64
0x43 f32.const f32 :f32
0x44 f64.const f64 :f64
0x45 i32.eqz none i32:i32
0x46 i32.eq none i32,i32:i32
0x47 i32.ne none i32,i32:i32
0x48 i32.lt_s none i32,i32:i32
0x49 i32.lt_u none i32,i32:i32
0x4A i32.gt_s none i32,i32:i32
0x4B i32.gt_u none i32,i32:i32
0x4C i32.le_s none i32,i32:i32
0x4D i32.le_u none i32,i32:i32
0x4E i32.ge_s none i32,i32:i32
0x4F i32.ge_u none i32,i32:i32
0x50 i64.eqz none i64:i32
0x51 i64.eq none i64,i64:i32
0x52 i64.ne none i64,i64:i32
0x53 i64.lt_s none i64,i64:i32
0x54 i64.lt_u none i64,i64:i32
0x55 i64.gt_s none i64,i64:i32
0x56 i64.gt_u none i64,i64:i32
0x57 i64.le_s none i64,i64:i32
0x58 i64.le_u none i64,i64:i32
0x59 i64.ge_s none i64,i64:i32
0x5A i64.ge_u none i64,i64:i32
0x5B f32.eq none f32,f32:i32
0x5C f32.ne none f32,f32:i32
0x5D f32.lt none f32,f32:i32
0x5E f32.gt none f32,f32:i32
0x5F f32.le none f32,f32:i32
0x60 f32.ge none f32,f32:i32
0x61 f64.eq none f64,f64:i32
0x62 f64.ne none f64,f64:i32
0x63 f64.lt none f64,f64:i32
0x64 f64.gt none f64,f64:i32
0x65 f64.le none f64,f64:i32
0x66 f64.ge none f64,f64:i32
0x67 i32.clz none i32:i32
0x68 i32.ctz none i32:i32
0x69 i32.popcnt none i32:i32
0x6A i32.add none i32,i32:i32
0x6B i32.sub none i32,i32:i32
0x6C i32.mul none i32,i32:i32
0x6D i32.div_s none i32,i32:i32
0x6E i32.div_u none i32,i32:i32
0x6F i32.rem_s none i32,i32:i32
0x70 i32.rem_u none i32,i32:i32
0x71 i32.and none i32,i32:i32
0x72 i32.or none i32,i32:i32
0x73 i32.xor none i32,i32:i32
0x74 i32.shl none i32,i32:i32
0x75 i32.shr_s none i32,i32:i32
0x76 i32.shr_u none i32,i32:i32
0x77 i32.rotl none i32,i32:i32
0x78 i32.rotr none i32,i32:i32
0x79 i64.clz none i64:i64
0x7A i64.ctz none i64:i64
0x7B i64.popcnt none i64:i64
0x7C i64.add none i64,i64:i64
0x7D i64.sub none i64,i64:i64
0x7E i64.mul none i64,i64:i64
0x7F i64.div_s none i64,i64:i64
0x80 i64.div_u none i64,i64:i64
0x81 i64.rem_s none i64,i64:i64
0x82 i64.rem_u none i64,i64:i64
0x83 i64.and none i64,i64:i64
0x84 i64.or none i64,i64:i64
0x85 i64.xor none i64,i64:i64
0x86 i64.shl none i64,i64:i64
0x87 i64.shr_s none i64,i64:i64
0x88 i64.shr_u none i64,i64:i64
0x89 i64.rotl none i64,i64:i64
0x8A i64.rotr none i64,i64:i64
0x8B f32.abs none f32:f32
0x8C f32.neg none f32:f32
0x8D f32.ceil none f32:f32
0x8E f32.floor none f32:f32
0x8F f32.trunc none f32:f32
0x90 f32.nearest none f32:f32
0x91 f32.sqrt none f32:f32
0x92 f32.add none f32,f32:f32
0x93 f32.sub none f32,f32:f32
0x94 f32.mul none f32,f32:f32
0x95 f32.div none f32,f32:f32
0x96 f32.min none f32,f32:f32
0x97 f32.max none f32,f32:f32
0x98 f32.copysign none f32,f32:f32
0x99 f64.abs none f64:f64
0x9A f64.neg none f64:f64
0x9B f64.ceil none f64:f64
0x9C f64.floor none f64:f64
0x9D f64.trunc none f64:f64
0x9E f64.nearest none f64:f64
0x9F f64.sqrt none f64:f64
0xA0 f64.add none f64,f64:f64
0xA1 f64.sub none f64,f64:f64
0xA2 f64.mul none f64,f64:f64
0xA3 f64.div none f64,f64:f64
0xA4 f64.min none f64,f64:f64
0xA5 f64.max none f64,f64:f64
0xA6 f64.copysign none f64,f64:f64
0xA7 i32.wrap_i64 none i64:i32
0xA8 i32.trunc_f32_s none f32:i32
0xA9 i32.trunc_f32_u none f32:i32
0xAA i32.trunc_f64_s none f64:i32
0xAB i32.trunc_f64_u none f64:i32
0xAC i64.extend_i32_s none i32:i64
0xAD i64.extend_i32_u none i32:i64
0xAE i64.trunc_f32_s none f32:i64
0xAF i64.trunc_f32_u none f32:i64
0xB0 i64.trunc_f64_s none f64:i64
0xB1 i64.trunc_f64_u none f64:i64
0xB2 f32.convert_i32_s none i32:f32
0xB3 f32.convert_i32_u none i32:f32
0xB4 f32.convert_i64_s none i64:f32
0xB5 f32.convert_i64_u none i64:f32
0xB6 f32.demote_f64 none f64:f32
0xB7 f64.convert_i32_s none i32:f64
0xB8 f64.convert_i32_u none i32:f64
0xB9 f64.convert_i64_s none i64:f64
0xBA f64.convert_i64_u none i64:f64
0xBB f64.promote_f32 none f32:f64
0xBC i32.reinterpret_f32 none f32:i32
0xBD i64.reinterpret_f64 none f64:i64
0xBE f32.reinterpret_i32 none i32:f32
0xBF f64.reinterpret_i64 none i64:f64
0xC0 i32.extend8_s none i32:i32
0xC1 i32.extend16_s none i32:i32
0xC2 i64.extend8_s none i64:i64
0xC3 i64.extend16_s none i64:i64
0xC4 i64.extend32_s none i64:i64
0xD0 ref.null reftype -
0xD1 ref.is_null none -
0xD2 ref.func func -
0xFC000 i32.trunc_sat_f32_s none f32:i32
0xFC001 i32.trunc_sat_f32_u none f32:i32
0xFC002 i32.trunc_sat_f64_s none f64:i32
0xFC003 i32.trunc_sat_f64_u none f64:i32
0xFC004 i64.trunc_sat_f32_s none f32:i64
0xFC005 i64.trunc_sat_f32_u none f32:i64
0xFC006 i64.trunc_sat_f64_s none f64:i64
0xFC007 i64.trunc_sat_f64_u none f64:i64
0xFC008 memory.init memory_init i32,i32,i32:
0xFC009 data.drop data :
0xFC00A memory.copy memory_copy i32,i32,i32:
0xFC00B memory.fill memory i32,i32,i32:
0xFC00C table.init table_init i32,i32,i32:
0xFC00D elem.drop elem :
0xFC00E table.copy table_copy i32,i32,i32:
0xFC00F table.grow table -
0xFC010 table.size table :i32
0xFC011 table.fill table -
"""

_VT = {t.text: t for t in ValType}


@dataclass(frozen=True)
class OpInfo:
    code: int
    name: str                      # WAT mnemonic
    imm: Imm
    params: Optional[Tuple[ValType, ...]]   # None: stack effect checked by hand
    results: Optional[Tuple[ValType, ...]]
    access_size: int = 0           # bytes a load/store touches (natural alignment = log2 of it)

    @property
    def prefix(self) -> Optional[int]:
        return self.code >> 12 if self.code > 0xFF else None

    @property
    def subcode(self) -> int:
        return self.code & 0xFFF if self.code > 0xFF else self.code


def _parse_table(text: str) -> Dict[int, OpInfo]:
    out: Dict[int, OpInfo] = {}
    for line in text.strip().splitlines():
        parts = line.split()
        code, name, imm, sig = int(parts[0], 16), parts[1], Imm(parts[2]), parts[3]
        size = int(parts[4]) if len(parts) > 4 else 0
        if sig == "-":
            params = results = None
        else:
            p, r = sig.split(":")
            params = tuple(_VT[t] for t in p.split(",") if t)
            results = tuple(_VT[t] for t in r.split(",") if t)
        # select_t shares the mnemonic "select" in text; the row name only disambiguates the code.
        out[code] = OpInfo(code, "select" if name == "select_t" else name, imm, params, results, size)
    return out


OPS: Dict[int, OpInfo] = _parse_table(_TABLE)
"""Every opcode pylucet knows, by code."""

Op = enum.IntEnum("Op", {  # type: ignore[misc]
    ("SELECT_T" if info.imm is Imm.SELECT_T else info.name.upper().replace(".", "_")): code
    for code, info in OPS.items()
})
Op.__doc__ = ("Opcodes by name: the mnemonic upper-cased with '.' as '_' "
              "(``i32.add`` is ``Op.I32_ADD``; typed select is ``Op.SELECT_T``).")

BY_NAME: Dict[str, OpInfo] = {info.name: info for info in OPS.values() if info.imm is not Imm.SELECT_T}
"""Mnemonic to opcode, for the WAT parser (``select`` maps to the untyped form; the parser picks
``SELECT_T`` when a ``(result ...)`` follows)."""

PREFIXES = (0xFC, 0xFD)


_MNEMONIC = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")

# --- instructions of proposals beyond Wasm 2.0 ---------------------------------------------------
# Known so that they are refused as pylucet.errors.UnsupportedProposal, naming the instruction
# and its proposal, instead of as a malformed opcode. They are deliberately not in OPS: nothing
# decodes, validates or compiles them; when a proposal lands, its rows move into _TABLE with
# their immediates.

class Proposal(enum.Enum):
    SIMD = "fixed-width SIMD (0xFD prefix)"
    TAIL_CALL = "tail call"
    THREADS = "threads (atomics, 0xFE prefix)"
    EXCEPTIONS = "exception handling"
    FUNCTION_REFERENCES = "typed function references"
    GC = "GC (0xFB prefix)"
    MEMORY64 = "memory64"


LIMITS_PROPOSALS: Dict[int, Tuple[str, Proposal]] = {
    0x03: ("shared memory", Proposal.THREADS),
    0x04: ("64-bit limits", Proposal.MEMORY64),
    0x05: ("64-bit limits", Proposal.MEMORY64),
    0x06: ("shared 64-bit memory", Proposal.THREADS),
    0x07: ("shared 64-bit memory", Proposal.THREADS),
}
"""Limits flag bytes of memory and table types that later proposals define (Wasm 2.0 has 0 and 1;
the spec suite expects 2 and others to be "integer too large"). Multiple memories cannot be told
apart the same way: Wasm 2.0 requires them to be invalid ("multiple memories")."""


# code  mnemonic  proposal. Not throw_ref (0x0A): a constant expression missing its `end` runs
# into the code section's id 0x0A, which the spec suite expects to be an "illegal opcode".
_PROPOSAL_TABLE = """
0x06 try EXCEPTIONS
0x07 catch EXCEPTIONS
0x08 throw EXCEPTIONS
0x09 rethrow EXCEPTIONS
0x12 return_call TAIL_CALL
0x13 return_call_indirect TAIL_CALL
0x14 call_ref FUNCTION_REFERENCES
0x15 return_call_ref FUNCTION_REFERENCES
0x18 delegate EXCEPTIONS
0x19 catch_all EXCEPTIONS
0x1F try_table EXCEPTIONS
0xD3 ref.eq GC
0xD4 ref.as_non_null FUNCTION_REFERENCES
0xD5 br_on_null FUNCTION_REFERENCES
0xD6 br_on_non_null FUNCTION_REFERENCES
0xFD00C v128.const SIMD
0xFE003 atomic.fence THREADS
"""


@dataclass(frozen=True)
class ProposalOp:
    code: int
    name: str
    proposal: Proposal


PROPOSAL_OPS: Dict[int, ProposalOp] = {}
for _line in _PROPOSAL_TABLE.strip().splitlines():
    _code, _name, _prop = _line.split()
    PROPOSAL_OPS[int(_code, 16)] = ProposalOp(int(_code, 16), _name, Proposal[_prop])

PROPOSAL_PREFIXES: Dict[int, Proposal] = {0xFD: Proposal.SIMD, 0xFE: Proposal.THREADS,
                                          0xFB: Proposal.GC}
"""Whole prefix families: every sub-opcode of these belongs to the proposal (listed one by one
above only where a name is needed)."""

PROPOSAL_NAMESPACES: Dict[str, Proposal] = {
    **{shape: Proposal.SIMD for shape in ("v128", "i8x16", "i16x8", "i32x4", "i64x2", "f32x4",
                                          "f64x2")},
    "memory.atomic": Proposal.THREADS, "i32.atomic": Proposal.THREADS,
    "i64.atomic": Proposal.THREADS,
    "struct": Proposal.GC, "array": Proposal.GC, "i31": Proposal.GC, "any": Proposal.GC,
    "extern.convert_any": Proposal.GC,
}
"""Text-format namespaces the proposals reserve (``i32x4.add``, ``i64.atomic.rmw.add``...), so the
WAT parser can name the proposal of a mnemonic without a row for each of its hundreds of
instructions."""


def proposal_of_code(code: int) -> Optional[Tuple[str, Proposal]]:
    """``(instruction, proposal)`` for an opcode (``prefix << 12 | sub`` if prefixed) that belongs
    to a proposal pylucet does not support, or None."""
    row = PROPOSAL_OPS.get(code)
    if row is not None:
        return row.name, row.proposal
    prefix = code >> 12 if code > 0xFF else None
    if prefix in PROPOSAL_PREFIXES:
        return f"opcode {prefix:#04x} {code & 0xFFF}", PROPOSAL_PREFIXES[prefix]
    return None


def proposal_of_name(name: str) -> Optional[Proposal]:
    """The unsupported proposal a WAT mnemonic belongs to, or None. Only what is spelled like a
    mnemonic counts: obsolete names such as ``f32x4.convert_s/i32x4`` stay unknown operators."""
    if not _MNEMONIC.fullmatch(name):
        return None
    for row in PROPOSAL_OPS.values():
        if row.name == name:
            return row.proposal
    head, dot, rest = name.partition(".")
    if not dot:
        return None
    for key in (head, f"{head}.{rest.partition('.')[0]}", name):
        if key in PROPOSAL_NAMESPACES:
            return PROPOSAL_NAMESPACES[key]
    return None

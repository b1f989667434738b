"""The WebAssembly text format, compiled to the binary format.

There is one in-memory form of a module in pylucet, the decoded binary, so WAT is not given an AST
of its own: :func:`parse_wat` writes binary sections directly while it reads, and the decoder
takes it from there.

Reading happens in two passes over the fields. The first gives every symbolic ``$id`` its index
(a function may call one defined further down) and reads the explicit type definitions, which
inline type uses must be matched against before any implicit type is appended. The second reads
each field and encodes it.

Every instruction mnemonic and its immediate kind come from ``wasm.opcodes``; the only
instruction names spelled out here are the structured ones (``block``, ``loop``, ``if``), whose
text syntax is not a plain mnemonic followed by immediates.

Error messages use the wording of the spec suite's ``assert_malformed`` tests, so a script runner
can compare them.
"""

from __future__ import annotations

import re
import struct
from typing import Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

from .leb128 import encode_s, encode_u
from ..errors import UnsupportedProposal
from .opcodes import BY_NAME, Imm, Op, OpInfo, proposal_of_name
from .sexpr import ATOM, EOF, ID_RE, LPAR, RESERVED, RPAR, STRING, Cursor, Tokens, WatError, fail
from .types import ValType

__all__ = ["parse_wat", "parse_int", "float_bits", "WatError"]


# --- literals --------------------------------------------------------------------------------------

_NUM = r"[0-9](?:_?[0-9])*"
_HEXNUM = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_INT_RE = re.compile(rf"([+-]?)(?:0x({_HEXNUM})|({_NUM}))\Z")
_FLOAT_RE = re.compile(rf"""([+-]?)(?:
      ({_NUM})(?:\.({_NUM})?)?(?:[eE]([+-]?{_NUM}))?
    | 0x({_HEXNUM})(?:\.({_HEXNUM})?)?(?:[pP]([+-]?{_NUM}))?
    | (inf)
    | (nan)(?::0x({_HEXNUM}))?
    )\Z""", re.X)
_MEMARG_RE = re.compile(r"(?:offset|align)=")

F32 = (23, 8)
F64 = (52, 11)
"""(mantissa bits, exponent bits) of the two float formats, for :func:`float_bits`."""

# Exponents past these bounds round to zero or infinity in both formats whatever the digits are;
# clamping them keeps a literal like 1e1000000000 from building a billion-digit integer.
_DEC_EXP_LIMIT = 400
_BIN_EXP_LIMIT = 2000


class ConstantOutOfRange(ValueError):
    """A well-formed literal whose value the target type cannot hold."""


def parse_int(tok: str) -> Optional[int]:
    """The value of an integer literal (``_`` separators, hex, sign), or None if ``tok`` is not
    one."""
    m = _INT_RE.match(tok)
    if m is None:
        return None
    sign, hexdigits, decdigits = m.groups()
    value = int(hexdigits.replace("_", ""), 16) if hexdigits else int(decdigits.replace("_", ""))
    return -value if sign == "-" else value


def parse_nat(tok: str) -> Optional[int]:
    """An unsigned literal (no sign allowed), as indices, limits and memargs are written."""
    return parse_int(tok) if tok[:1].isdigit() else None


def float_bits(tok: str, fmt: Tuple[int, int] = F64) -> Optional[int]:
    """The IEEE bits of a float literal in format ``fmt`` (:data:`F32` or :data:`F64`), correctly
    rounded to nearest-even; None if ``tok`` is not a float literal.

    Raises :class:`ConstantOutOfRange` for a NaN payload that does not fit, and for a finite
    literal that rounds to infinity.
    """
    m = _FLOAT_RE.match(tok)
    if m is None:
        return None
    sign, dint, dfrac, dexp, hint, hfrac, hexp, inf, nan, payload = m.groups()
    mant, expw = fmt
    signbit = 1 << (mant + expw) if sign == "-" else 0
    inf_bits = ((1 << expw) - 1) << mant
    if inf:
        return signbit | inf_bits
    if nan:
        if payload is None:
            return signbit | inf_bits | 1 << (mant - 1)
        p = int(payload.replace("_", ""), 16)
        if not 0 < p < 1 << mant:
            raise ConstantOutOfRange(tok)
        return signbit | inf_bits | p
    if dint is not None and fmt == F64:  # CPython's float() of a decimal is correctly rounded
        magnitude = struct.unpack("<Q", struct.pack("<d", abs(float(tok.replace("_", "")))))[0]
    else:
        magnitude = _finite_literal_bits(dint, dfrac, dexp, hint, hfrac, hexp, mant, expw)
    if magnitude == inf_bits:
        raise ConstantOutOfRange(tok)
    return signbit | magnitude


def _finite_literal_bits(dint, dfrac, dexp, hint, hfrac, hexp, mant: int, expw: int) -> int:
    inf_bits = ((1 << expw) - 1) << mant
    if dint is not None:
        frac = (dfrac or "").replace("_", "")
        digits = int(dint.replace("_", "") + frac)
        exp = (int(dexp.replace("_", "")) if dexp else 0) - len(frac)
        if digits == 0 or exp + len(str(digits)) < -_DEC_EXP_LIMIT:
            return 0
        if exp > _DEC_EXP_LIMIT:
            return inf_bits
        num, den = (digits * 10 ** exp, 1) if exp >= 0 else (digits, 10 ** -exp)
    else:
        frac = (hfrac or "").replace("_", "")
        digits = int(hint.replace("_", "") + frac, 16)
        exp = (int(hexp.replace("_", "")) if hexp else 0) - 4 * len(frac)
        if digits == 0 or digits.bit_length() + exp < -_BIN_EXP_LIMIT:
            return 0
        if digits.bit_length() + exp > _BIN_EXP_LIMIT:
            return inf_bits
        num, den = (digits << exp, 1) if exp >= 0 else (digits, 1 << -exp)
    return _round_to_float(num, den, mant, expw)


def _round_to_float(num: int, den: int, mant: int, expw: int) -> int:
    """The bits of the positive rational num/den rounded to nearest-even, in integer arithmetic so
    there is no double rounding; overflows to infinity only past the rounding boundary."""
    bias = (1 << (expw - 1)) - 1
    e = num.bit_length() - den.bit_length()
    if (num << -e if e < 0 else num) < (den << e if e > 0 else den):
        e -= 1                                   # now 2**e <= num/den < 2**(e+1)
    emin = 1 - bias
    ulp_exp = max(e, emin) - mant
    if ulp_exp >= 0:
        q, r = divmod(num, den << ulp_exp)
        half = den << ulp_exp
    else:
        q, r = divmod(num << -ulp_exp, den)
        half = den
    if 2 * r > half or (2 * r == half and q & 1):
        q += 1
    if e < emin:
        return q      # subnormal; rounding up to 2**mant gives exactly the smallest normal's bits
    if q >> (mant + 1):
        q >>= 1
        e += 1
    if e + bias >= (1 << expw) - 1:
        return ((1 << expw) - 1) << mant
    return (e + bias) << mant | (q & ((1 << mant) - 1))


_Nested = Iterator["_Nested"]
"""A nested construct being parsed: yields the constructs nested in it (see _run)."""

# --- tables derived from the opcode table -------------------------------------------------------

def _opcode_bytes(code: int) -> bytes:
    return bytes([code]) if code <= 0xFF else bytes([code >> 12]) + encode_u(code & 0xFFF)


_INSTRS: Dict[str, Tuple[bytes, OpInfo]] = {name: (_opcode_bytes(info.code), info)
                                            for name, info in BY_NAME.items()}
_SELECT_T = _opcode_bytes(Op.SELECT_T)
_BLOCKS = {"block": Op.BLOCK, "loop": Op.LOOP, "if": Op.IF}
_END, _ELSE = bytes([Op.END]), bytes([Op.ELSE])

_VALTYPES = {t.text: t for t in ValType}
_REFTYPES = {"funcref": ValType.FUNCREF, "externref": ValType.EXTERNREF}
_HEAPTYPES = {"func": ValType.FUNCREF, "extern": ValType.EXTERNREF}

_SYNTAX_KEYWORDS = set("""
    module type func param result local import export table memory global mut elem data start
    offset item declare then else end extern binary quote register invoke get script input output
    assert_return assert_trap assert_exhaustion assert_invalid assert_malformed assert_unlinkable
    assert_uninstantiable assert_return_canonical_nan assert_return_arithmetic_nan
    ref.extern ref.host nan:canonical nan:arithmetic
""".split())
_KEYWORDS = _SYNTAX_KEYWORDS | set(_INSTRS) | set(_VALTYPES)

# Index spaces, with the spec's words for "duplicate X" and "unknown X".
FUNC, TABLE, MEMORY, GLOBAL, TYPE, ELEM, DATA, LOCAL = (
    "func", "table", "memory", "global", "type", "elem", "data", "local")
_UNKNOWN = {FUNC: "unknown function", TABLE: "unknown table", MEMORY: "unknown memory",
            GLOBAL: "unknown global", TYPE: "unknown type", ELEM: "unknown elem segment",
            DATA: "unknown data segment", LOCAL: "unknown local"}
_EXTERN_KINDS = {FUNC: 0, TABLE: 1, MEMORY: 2, GLOBAL: 3}
_DEFINITION_NAMES = {FUNC: "function", TABLE: "table", MEMORY: "memory", GLOBAL: "global"}

_SECTION_TYPE, _SECTION_IMPORT, _SECTION_FUNC, _SECTION_TABLE = 1, 2, 3, 4
_SECTION_MEMORY, _SECTION_GLOBAL, _SECTION_EXPORT, _SECTION_START = 5, 6, 7, 8
_SECTION_ELEM, _SECTION_CODE, _SECTION_DATA, _SECTION_DATACOUNT = 9, 10, 11, 12

FuncSig = Tuple[Tuple[ValType, ...], Tuple[ValType, ...]]


def _vec(items: Sequence[bytes]) -> bytes:
    return encode_u(len(items)) + b"".join(items)


def _name(s: str) -> bytes:
    b = s.encode("utf-8")
    return encode_u(len(b)) + b


def _section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + encode_u(len(payload)) + payload


def _limits(lo: int, hi: Optional[int]) -> bytes:
    return b"\x00" + encode_u(lo) if hi is None else b"\x01" + encode_u(lo) + encode_u(hi)


def _i32_const(value: int) -> bytes:
    return bytes([Op.I32_CONST]) + encode_s(value) + _END


# --- the parser ----------------------------------------------------------------------------------

class _Parser(Cursor):
    """Reads one module from a token stream and writes its binary."""

    def __init__(self, toks: Tokens):
        super().__init__(toks)
        self.names: Dict[str, Dict[str, int]] = {s: {} for s in _UNKNOWN}
        self.counts: Dict[str, int] = {s: 0 for s in _UNKNOWN}
        self.types: List[FuncSig] = []
        self.type_index: Dict[FuncSig, int] = {}
        self.labels: List[Optional[str]] = []
        self.module_name: Optional[str] = None
        self.func_names: Dict[int, str] = {}
        self.local_names: Dict[int, Dict[int, str]] = {}
        self.imports: List[bytes] = []
        self.funcs: List[int] = []
        self.codes: List[bytes] = []
        self.tables: List[bytes] = []
        self.memories: List[bytes] = []
        self.globals: List[bytes] = []
        self.exports: List[bytes] = []
        self.start: Optional[int] = None
        self.elems: List[bytes] = []
        self.datas: List[bytes] = []
        self.uses_data_count = False

    # --- errors ---------------------------------------------------------------------------------

    def unexpected(self, i: Optional[int] = None) -> NoReturn:
        """Reject the token at ``i``: as the reference interpreter's lexer does, a token that is
        no keyword, number or id at all is an "unknown operator"; a real token in the wrong
        place is an "unexpected token"."""
        i = self.i if i is None else i
        kind, tok = self.k[i], self.v[i]
        if kind == RESERVED or (kind == ATOM and not _is_token(tok)):
            self.error(f"unknown operator {tok}", i)
        if kind == EOF:
            self.error("unexpected end of input", i)
        self.error(f"unexpected token {tok}", i)

    # --- cursor ---------------------------------------------------------------------------------

    def peek_kw(self) -> Optional[str]:
        """The keyword after a '(' at the cursor, if any."""
        i = self.i
        return self.v[i + 1] if self.k[i] == LPAR and self.k[i + 1] == ATOM else None

    def open(self, kw: str) -> bool:
        if self.k[self.i] == LPAR and self.v[self.i + 1] == kw and self.k[self.i + 1] == ATOM:
            self.i += 2
            return True
        return False

    def expect_open(self, kw: str) -> None:
        if not self.open(kw):
            self.unexpected(self.i + 1 if self.k[self.i] == LPAR else self.i)

    def keyword(self, kw: str) -> bool:
        if self.k[self.i] == ATOM and self.v[self.i] == kw:
            self.i += 1
            return True
        return False

    def name(self) -> str:
        at = self.i
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            self.error("malformed UTF-8 encoding", at)

    def u32(self) -> int:
        n = parse_nat(self.v[self.i]) if self.k[self.i] == ATOM else None
        if n is None:
            self.unexpected()
        if n >= 1 << 32:
            self.error("i32 constant out of range")
        self.i += 1
        return n

    def at_index(self, ahead: int = 0) -> bool:
        """Whether the token ``ahead`` of the cursor can only be an index (``$id`` or a nat)."""
        i = self.i + ahead
        tok = self.v[i]
        return self.k[i] == ATOM and (tok[0] == "$" or tok[0].isdigit())

    def index(self, space: str) -> int:
        tok = self.v[self.i]
        if self.k[self.i] == ATOM and tok[0] == "$":
            idx = self.names[space].get(tok)
            if idx is None:
                self.error(f"{_UNKNOWN[space]} {tok}")
            self.i += 1
            return idx
        return self.u32()

    def index_opt(self, space: str, default: int = 0) -> int:
        return self.index(space) if self.at_index() else default

    def next_index(self, space: str) -> int:
        idx = self.counts[space]
        self.counts[space] = idx + 1
        return idx

    def bind(self, space: str, name: Optional[str], at: int) -> int:
        """Give the next index of ``space`` to ``name`` (the first pass)."""
        idx = self.next_index(space)
        if name is not None:
            names = self.names[space]
            if name in names:
                self.error(f"duplicate {space} {name}", at)
            names[name] = idx
        return idx

    # --- types ----------------------------------------------------------------------------------

    def valtype(self) -> ValType:
        t = _VALTYPES.get(self.v[self.i]) if self.k[self.i] == ATOM else None
        if t is None:
            self.unexpected()
        self.i += 1
        return t

    def reftype(self) -> ValType:
        t = _REFTYPES.get(self.v[self.i]) if self.k[self.i] == ATOM else None
        if t is None:
            self.unexpected()
        self.i += 1
        return t

    def signature(self, allow_names: bool):
        """``(param ...)* (result ...)*``: the types, and the param ids (None where absent)."""
        params: List[ValType] = []
        names: List[Optional[Tuple[str, int]]] = []
        while self.open("param"):
            at = self.i
            pid = self.id_opt()
            if pid is not None:
                if not allow_names:
                    self.unexpected(at)
                params.append(self.valtype())
                names.append((pid, at))
            else:
                while self.k[self.i] == ATOM:
                    params.append(self.valtype())
                    names.append(None)
            self.close()
        results: List[ValType] = []
        while self.open("result"):
            while self.k[self.i] == ATOM:
                results.append(self.valtype())
            self.close()
        if self.peek_kw() == "param":
            self.unexpected(self.i + 1)
        return tuple(params), tuple(results), names

    def intern_type(self, sig: FuncSig) -> int:
        """The index of a type equal to ``sig``, appending one if none exists (the spec's rule
        for an inline type use)."""
        idx = self.type_index.get(sig)
        if idx is None:
            idx = len(self.types)
            self.types.append(sig)
            self.type_index[sig] = idx
        return idx

    def typeuse(self, allow_names: bool = True):
        """``(type x)? (param ...)* (result ...)*``: the type index, the param types and the
        param ids."""
        at = self.i
        tidx = None
        if self.open("type"):
            tidx = self.index(TYPE)
            self.close()
        before = self.i
        params, results, names = self.signature(allow_names)
        if tidx is None:
            return self.intern_type((params, results)), params, names
        if self.i != before:
            if tidx >= len(self.types):
                self.error("unknown type", at)
            if self.types[tidx] != (params, results):
                self.error("inline function type", at)
            return tidx, params, names
        params = self.types[tidx][0] if tidx < len(self.types) else ()
        return tidx, params, [None] * len(params)

    def blocktype(self) -> bytes:
        if self.peek_kw() not in ("type", "param", "result"):
            return b"\x40"
        if self.peek_kw() == "result":
            save = self.i
            _, results, _ = self.signature(False)
            if len(results) <= 1 and self.peek_kw() not in ("type", "param"):
                return bytes([results[0]]) if results else b"\x40"
            self.i = save
        return encode_s(self.typeuse(allow_names=False)[0])

    def tabletype(self) -> bytes:
        lo = self.u32()
        hi = self.u32() if self.k[self.i] == ATOM and self.v[self.i][0].isdigit() else None
        return bytes([self.reftype()]) + _limits(lo, hi)

    def memtype(self) -> bytes:
        lo = self.u32()
        hi = self.u32() if self.k[self.i] == ATOM else None
        return _limits(lo, hi)

    def globaltype(self) -> bytes:
        if self.open("mut"):
            t = self.valtype()
            self.close()
            return bytes([t, 1])
        return bytes([self.valtype(), 0])

    # --- pass 1: indices ------------------------------------------------------------------------

    def scan(self, start: int, end: int) -> List[Tuple[str, int]]:
        """Bind every field's id and read the type definitions; return the fields to read."""
        k, v, close = self.k, self.v, self.toks.close
        fields: List[Tuple[str, int]] = []
        defined: List[str] = []
        i = start
        while i < end:
            if k[i] != LPAR:
                self.unexpected(i)
            kw = v[i + 1] if k[i + 1] == ATOM else ""
            fields.append((kw, i))
            j = i + 2
            name = v[j] if k[j] == ATOM and v[j][0] == "$" else None
            if kw == "type":
                self.i = i
                self.type_field()
            elif kw == "import":
                if k[j] == STRING and k[j + 1] == STRING and k[j + 2] == LPAR:
                    space = v[j + 3]
                    if space in _EXTERN_KINDS and k[j + 3] == ATOM:
                        self.check_import_order(defined, i)
                        dname = v[j + 4] if k[j + 4] == ATOM and v[j + 4][0] == "$" else None
                        self.bind(space, dname, j + 4)
            elif kw in _EXTERN_KINDS:
                if name is not None:
                    j += 1
                while k[j] == LPAR and v[j + 1] == "export":
                    j = close[j] + 1
                if k[j] == LPAR and v[j + 1] == "import":
                    self.check_import_order(defined, i)
                else:
                    defined.append(kw)
                    if kw == TABLE and k[j] == ATOM and v[j] in _REFTYPES:
                        self.bind(ELEM, None, i)        # (table funcref (elem ...))
                    elif kw == MEMORY and k[j] == LPAR and v[j + 1] == "data":
                        self.bind(DATA, None, i)        # (memory (data ...))
                self.bind(kw, name, i + 2)
            elif kw in (ELEM, DATA):
                self.bind(kw, name, i + 2)
            i = close[i] + 1
        for space in _EXTERN_KINDS:
            self.counts[space] = 0
        self.counts[ELEM] = self.counts[DATA] = 0
        return fields

    def check_import_order(self, defined: List[str], at: int) -> None:
        if defined:
            self.error(f"import after {_DEFINITION_NAMES[defined[0]]}", at)

    def type_field(self) -> None:
        self.i += 2
        at = self.i
        tid = self.id_opt()
        self.expect_open("func")
        params, results, _ = self.signature(True)
        self.close()
        self.close()
        if tid is not None:
            if tid in self.names[TYPE]:
                self.error(f"duplicate type {tid}", at)
            self.names[TYPE][tid] = len(self.types)
        sig = (params, results)
        self.type_index.setdefault(sig, len(self.types))
        self.types.append(sig)

    # --- pass 2: fields -------------------------------------------------------------------------

    def module_fields(self, start: int, end: int) -> None:
        fields = self.scan(start, end)
        readers: Dict[str, Callable[[], None]] = {
            "type": self.skip_field, "import": self.import_field, FUNC: self.func_field,
            TABLE: self.table_field, MEMORY: self.memory_field, GLOBAL: self.global_field,
            "export": self.export_field, "start": self.start_field, ELEM: self.elem_field,
            DATA: self.data_field,
        }
        for kw, i in fields:
            self.i = i
            reader = readers.get(kw)
            if reader is None:
                self.unexpected(i + 1)
            reader()

    def skip_field(self) -> None:
        self.i = self.toks.close[self.i] + 1

    def inline_exports(self, space: str, idx: int) -> None:
        while self.open("export"):
            self.export_entry(self.name(), space, idx)
            self.close()

    def export_entry(self, name: str, space: str, idx: int) -> None:
        self.exports.append(_name(name) + bytes([_EXTERN_KINDS[space]]) + encode_u(idx))

    def inline_import(self) -> Optional[bytes]:
        """``(import "module" "name")`` on a definition: the encoded names, if present."""
        if not self.open("import"):
            return None
        names = self.import_names()
        self.close()
        return names

    def import_names(self) -> bytes:
        return _name(self.name()) + _name(self.name())

    def extern_kind(self) -> str:
        """The ``func``/``table``/``memory``/``global`` opening an import or export description."""
        space = self.peek_kw()
        if space not in _EXTERN_KINDS:
            self.unexpected(self.i + 1 if self.k[self.i] == LPAR else self.i)
        self.i += 2
        return space

    def import_field(self) -> None:
        self.i += 2
        prefix = self.import_names()
        space = self.extern_kind()
        name = self.id_opt()
        self.import_desc(prefix, space, self.next_index(space), name)
        self.close()
        self.close()

    def import_desc(self, prefix: bytes, space: str, idx: int, name: Optional[str]) -> None:
        """The part after the names of an import, top-level or inline."""
        if space == FUNC:
            tidx, _, pnames = self.typeuse()
            self.record_names(idx, name, pnames)
            desc = encode_u(tidx)
        elif space == TABLE:
            desc = self.tabletype()
        elif space == MEMORY:
            desc = self.memtype()
        else:
            desc = self.globaltype()
        self.imports.append(prefix + bytes([_EXTERN_KINDS[space]]) + desc)

    def record_names(self, idx: int, name: Optional[str], local_names) -> Dict[str, int]:
        """Remember a function's and its locals' ids for the name section; return the locals'
        id-to-index map, rejecting duplicates."""
        if name is not None:
            self.func_names[idx] = name[1:]
        locals_: Dict[str, int] = {}
        for n, entry in enumerate(local_names):
            if entry is not None:
                lid, at = entry
                if lid in locals_:
                    self.error(f"duplicate local {lid}", at)
                locals_[lid] = n
        if locals_:
            self.local_names[idx] = {n: lid[1:] for lid, n in locals_.items()}
        return locals_

    def func_field(self) -> None:
        self.i += 2
        name = self.id_opt()
        idx = self.next_index(FUNC)
        self.inline_exports(FUNC, idx)
        prefix = self.inline_import()
        if prefix is not None:
            self.import_desc(prefix, FUNC, idx, name)
            self.close()
            return
        tidx, params, names = self.typeuse()
        local_types: List[ValType] = []
        while self.open("local"):
            at = self.i
            lid = self.id_opt()
            if lid is not None:
                local_types.append(self.valtype())
                names.append((lid, at))
            else:
                while self.k[self.i] == ATOM:
                    local_types.append(self.valtype())
                    names.append(None)
            self.close()
        self.names[LOCAL] = self.record_names(idx, name, names)
        self.labels = []
        body = bytearray(_encode_locals(local_types))
        self.instrs(body)
        self.close()
        body += _END
        self.names[LOCAL] = {}
        self.funcs.append(tidx)
        self.codes.append(encode_u(len(body)) + bytes(body))

    def table_field(self) -> None:
        self.i += 2
        self.id_opt()
        idx = self.next_index(TABLE)
        self.inline_exports(TABLE, idx)
        prefix = self.inline_import()
        if prefix is not None:
            self.import_desc(prefix, TABLE, idx, None)
        elif self.k[self.i] == ATOM and self.v[self.i] in _REFTYPES:
            rt = self.reftype()
            self.expect_open(ELEM)
            items, as_funcs = self.elem_items(rt, bare_funcs=True)
            self.close()
            self.tables.append(bytes([rt]) + _limits(len(items), len(items)))
            self.next_index(ELEM)
            self.elems.append(_encode_elem("active", idx, _i32_const(0), rt, items, as_funcs))
        else:
            self.tables.append(self.tabletype())
        self.close()

    def memory_field(self) -> None:
        self.i += 2
        self.id_opt()
        idx = self.next_index(MEMORY)
        self.inline_exports(MEMORY, idx)
        prefix = self.inline_import()
        if prefix is not None:
            self.import_desc(prefix, MEMORY, idx, None)
        elif self.open(DATA):
            data = self.strings()
            self.close()
            pages = -(-len(data) // 65536)
            self.memories.append(_limits(pages, pages))
            self.next_index(DATA)
            self.datas.append(_encode_data(idx, _i32_const(0), data))
        else:
            self.memories.append(self.memtype())
        self.close()

    def global_field(self) -> None:
        self.i += 2
        self.id_opt()
        idx = self.next_index(GLOBAL)
        self.inline_exports(GLOBAL, idx)
        prefix = self.inline_import()
        if prefix is not None:
            self.import_desc(prefix, GLOBAL, idx, None)
        else:
            gt = self.globaltype()
            self.globals.append(gt + self.const_expr())
        self.close()

    def export_field(self) -> None:
        self.i += 2
        name = self.name()
        space = self.extern_kind()
        self.export_entry(name, space, self.index(space))
        self.close()
        self.close()

    def start_field(self) -> None:
        if self.start is not None:
            self.error("multiple start sections")
        self.i += 2
        self.start = self.index(FUNC)
        self.close()

    def elem_field(self) -> None:
        self.i += 2
        self.id_opt()
        self.next_index(ELEM)
        if self.keyword("declare"):
            mode, table, offset = "declare", 0, b""
        elif self.k[self.i] in (ATOM, RPAR) and not self.at_index():
            mode, table, offset = "passive", 0, b""
        else:
            mode = "active"
            if self.open(TABLE):
                table = self.index(TABLE)
                self.close()
            else:
                table = self.index_opt(TABLE)
            offset = self.offset_expr()
        if self.keyword("func"):
            rt, items, as_funcs = ValType.FUNCREF, self.func_indices(), True
        elif mode == "active" and self.k[self.i] != ATOM or self.at_index():
            rt, items, as_funcs = ValType.FUNCREF, self.func_indices(), True
        else:
            rt = self.reftype()
            items, as_funcs = self.elem_items(rt, bare_funcs=False)
        self.close()
        self.elems.append(_encode_elem(mode, table, offset, rt, items, as_funcs))

    def func_indices(self) -> List[bytes]:
        out = []
        while self.at_index():
            out.append(encode_u(self.index(FUNC)))
        return out

    def elem_items(self, rt: ValType, bare_funcs: bool) -> Tuple[List[bytes], bool]:
        """The elements of a segment: function indices (where the syntax allows them bare) or
        expressions, each ``(item ...)`` or one folded instruction."""
        if bare_funcs and self.k[self.i] != LPAR:
            return self.func_indices(), True
        items = []
        while self.k[self.i] == LPAR:
            if self.open("item"):
                items.append(self.expr())
                self.close()
            else:
                self.labels = []
                out = bytearray()
                self.folded(out)
                items.append(bytes(out + _END))
        return items, False

    def offset_expr(self) -> bytes:
        if self.open("offset"):
            out = self.expr()
            self.close()
            return out
        if self.k[self.i] != LPAR:
            self.unexpected()
        self.labels = []
        out = bytearray()
        self.folded(out)
        return bytes(out + _END)

    def data_field(self) -> None:
        self.i += 2
        self.id_opt()
        self.next_index(DATA)
        if self.k[self.i] in (STRING, RPAR):
            data = self.strings()
            self.datas.append(b"\x01" + encode_u(len(data)) + data)
        else:
            if self.open(MEMORY):
                mem = self.index(MEMORY)
                self.close()
            else:
                mem = self.index_opt(MEMORY)
            offset = self.offset_expr()
            self.datas.append(_encode_data(mem, offset, self.strings()))
        self.close()

    def strings(self) -> bytes:
        parts = []
        while self.k[self.i] == STRING:
            parts.append(self.string())
        return b"".join(parts)

    def const_expr(self) -> bytes:
        """An expression outside any function: a global's initialiser."""
        self.names[LOCAL] = {}
        return self.expr()

    def expr(self) -> bytes:
        self.labels = []
        out = bytearray()
        self.instrs(out)
        return bytes(out + _END)

    # --- instructions ---------------------------------------------------------------------------

    # Nesting is parsed without Python recursion, so that depth is bounded by memory, as in the
    # binary decoder, and never by the interpreter's recursion limit: _instrs, _operands and
    # _block are generators that yield the generator of a nested construct instead of calling
    # it, and _run drives them from one explicit stack (_open_folded parses a leaf whole).

    def instrs(self, out: bytearray) -> None:
        """Instructions, flat or folded, up to a ``)``, ``end`` or ``else``."""
        self._run(self._instrs(out))

    def folded(self, out: bytearray) -> None:
        nested = self._open_folded(out)
        if nested is not None:
            self._run(nested)

    @staticmethod
    def _run(gen: _Nested) -> None:
        stack = [gen]
        while stack:
            try:
                stack.append(next(stack[-1]))
            except StopIteration:
                stack.pop()

    def _instrs(self, out: bytearray) -> _Nested:
        k, v = self.k, self.v
        while True:
            kind = k[self.i]
            if kind == LPAR:
                nested = self._open_folded(out)
                if nested is not None:
                    yield nested
            elif kind == ATOM:
                name = v[self.i]
                if name in _BLOCKS:
                    yield self._block(out, name, folded=False)
                elif name == "end" or name == "else":
                    return
                else:
                    self.plain(out)
            elif kind == RPAR or kind == EOF:
                return
            else:
                self.unexpected()

    def _open_folded(self, out: bytearray) -> Optional[_Nested]:
        """A folded instruction: parsed whole when it is a leaf (most are: ``(local.get 0)``),
        which spares a generator; otherwise the generator of its nested part."""
        self.i += 1
        name = self.v[self.i]
        if name in _BLOCKS and self.k[self.i] == ATOM:
            return self._block(out, name, folded=True)
        instr = bytearray()
        self.plain(instr)
        if self.k[self.i] == LPAR:
            return self._operands(out, instr)
        self.close()
        out += instr
        return None

    def _operands(self, out: bytearray, instr: bytearray) -> _Nested:
        """The folded operands of ``instr``, then ``instr`` itself."""
        while self.k[self.i] == LPAR:
            nested = self._open_folded(out)
            if nested is not None:
                yield nested
        self.close()
        out += instr

    def _block(self, out: bytearray, name: str, folded: bool) -> _Nested:
        self.i += 1
        label = self.id_opt()
        bt = self.blocktype()
        if name == "if" and folded:
            while self.k[self.i] == LPAR and self.peek_kw() != "then":
                nested = self._open_folded(out)
                if nested is not None:
                    yield nested
            out.append(Op.IF)
            out += bt
            self.labels.append(label)
            self.expect_open("then")
            yield self._instrs(out)
            self.close()
            if self.open("else"):
                out += _ELSE
                yield self._instrs(out)
                self.close()
        else:
            out.append(_BLOCKS[name])
            out += bt
            self.labels.append(label)
            yield self._instrs(out)
            if name == "if" and self.keyword("else"):
                self.end_label(label)
                out += _ELSE
                yield self._instrs(out)
            if not folded:
                if not self.keyword("end"):
                    self.unexpected()
                self.end_label(label)
        if folded:
            self.close()
        self.labels.pop()
        out += _END

    def end_label(self, label: Optional[str]) -> None:
        at = self.i
        closing = self.id_opt()
        if closing is not None and closing != label:
            self.error(f"mismatching label {closing}", at)

    def plain(self, out: bytearray) -> None:
        name = self.v[self.i]
        entry = _INSTRS.get(name) if self.k[self.i] == ATOM else None
        if entry is None or name in ("end", "else"):
            proposal = proposal_of_name(name) if self.k[self.i] == ATOM else None
            if proposal is not None:
                raise UnsupportedProposal(name, proposal.value, self.toks.offs[self.i])
            self.unexpected()
        self.i += 1
        code, info = entry
        imm = info.imm
        if imm is Imm.NONE:
            if name == "select" and self.peek_kw() == "result":
                _, results, _ = self.signature(False)
                out += _SELECT_T + _vec([bytes([t]) for t in results])
            else:
                out += code
            return
        out += code
        self._IMMEDIATES[imm](self, out, info)

    def imm_label(self, out: bytearray, info: OpInfo) -> None:
        out += encode_u(self.label())

    def label(self) -> int:
        tok = self.v[self.i]
        if self.k[self.i] == ATOM and tok[0] == "$":
            labels = self.labels
            for depth in range(len(labels)):
                if labels[-1 - depth] == tok:
                    self.i += 1
                    return depth
            self.error(f"unknown label {tok}")
        return self.u32()

    def imm_br_table(self, out: bytearray, info: OpInfo) -> None:
        depths = []
        while self.at_index():
            depths.append(encode_u(self.label()))
        if not depths:
            self.unexpected()
        out += _vec(depths[:-1]) + depths[-1]

    def imm_call_indirect(self, out: bytearray, info: OpInfo) -> None:
        table = self.index_opt(TABLE)
        out += encode_u(self.typeuse(allow_names=False)[0]) + encode_u(table)

    def imm_index(space: str, optional: bool = False):  # type: ignore[misc]
        def read(self: "_Parser", out: bytearray, info: OpInfo) -> None:
            if space == DATA:
                self.uses_data_count = True   # data.drop needs the data count section
            out += encode_u(self.index_opt(space) if optional else self.index(space))
        return read

    def imm_memarg(self, out: bytearray, info: OpInfo) -> None:
        offset = 0
        align = info.access_size.bit_length() - 1
        tok = self.v[self.i]
        if self.k[self.i] == ATOM and tok.startswith("offset="):
            offset = self.memarg_value(tok, 7, "i32 constant out of range")
        tok = self.v[self.i]
        if self.k[self.i] == ATOM and tok.startswith("align="):
            a = self.memarg_value(tok, 6, "alignment")
            if a == 0 or a & (a - 1):
                self.error("alignment must be a power of two", self.i - 1)
            align = a.bit_length() - 1
        out += encode_u(align) + encode_u(offset)

    def memarg_value(self, tok: str, skip: int, too_large: str) -> int:
        n = parse_nat(tok[skip:])
        if n is None:
            self.unexpected()
        if n >= 1 << 32:
            self.error(too_large)
        self.i += 1
        return n

    def imm_int(bits: int):  # type: ignore[misc]
        def read(self: "_Parser", out: bytearray, info: OpInfo) -> None:
            tok = self.v[self.i]
            n = parse_int(tok) if self.k[self.i] == ATOM else None
            if n is None:
                self.unexpected()
            if not -(1 << (bits - 1)) <= n < 1 << bits:
                self.error("constant out of range")
            self.i += 1
            out += encode_s(n - (1 << bits) if n >> (bits - 1) > 0 else n)
        return read

    def imm_float(fmt: Tuple[int, int]):  # type: ignore[misc]
        size = (1 + sum(fmt)) // 8

        def read(self: "_Parser", out: bytearray, info: OpInfo) -> None:
            tok = self.v[self.i]
            try:
                bits = float_bits(tok, fmt) if self.k[self.i] == ATOM else None
            except ConstantOutOfRange:
                self.error("constant out of range")
            if bits is None:
                self.unexpected()
            self.i += 1
            out += bits.to_bytes(size, "little")
        return read

    def imm_reftype(self, out: bytearray, info: OpInfo) -> None:
        t = _HEAPTYPES.get(self.v[self.i]) if self.k[self.i] == ATOM else None
        if t is None:
            self.unexpected()
        self.i += 1
        out.append(t)

    def two_indices(self, first: str, second: str, default_first: int = 0) -> Tuple[int, int]:
        """``x? y``, as in ``table.init``: with one index it is the second."""
        if self.at_index() and self.at_index(1):
            return self.index(first), self.index(second)
        return default_first, self.index(second)

    def imm_memory_init(self, out: bytearray, info: OpInfo) -> None:
        self.uses_data_count = True
        mem, data = self.two_indices(MEMORY, DATA)
        out += encode_u(data) + encode_u(mem)

    def imm_table_init(self, out: bytearray, info: OpInfo) -> None:
        table, elem = self.two_indices(TABLE, ELEM)
        out += encode_u(elem) + encode_u(table)

    def imm_copy(space: str):  # type: ignore[misc]
        def read(self: "_Parser", out: bytearray, info: OpInfo) -> None:
            dst = src = 0
            if self.at_index():
                dst = self.index(space)
                src = self.index(space)
            out += encode_u(dst) + encode_u(src)
        return read

    _IMMEDIATES = {
        Imm.LABEL: imm_label,
        Imm.BR_TABLE: imm_br_table,
        Imm.FUNC: imm_index(FUNC),
        Imm.CALL_INDIRECT: imm_call_indirect,
        Imm.LOCAL: imm_index(LOCAL),
        Imm.GLOBAL: imm_index(GLOBAL),
        Imm.TABLE: imm_index(TABLE, optional=True),
        Imm.MEMARG: imm_memarg,
        Imm.MEMORY: imm_index(MEMORY, optional=True),
        Imm.I32: imm_int(32),
        Imm.I64: imm_int(64),
        Imm.F32: imm_float(F32),
        Imm.F64: imm_float(F64),
        Imm.REFTYPE: imm_reftype,
        Imm.DATA: imm_index(DATA),
        Imm.ELEM: imm_index(ELEM),
        Imm.MEMORY_INIT: imm_memory_init,
        Imm.MEMORY_COPY: imm_copy(MEMORY),
        Imm.TABLE_INIT: imm_table_init,
        Imm.TABLE_COPY: imm_copy(TABLE),
    }
    del imm_index, imm_int, imm_float, imm_copy

    # --- output ---------------------------------------------------------------------------------

    def binary(self) -> bytes:
        out = [b"\x00asm\x01\x00\x00\x00"]

        def section(sid: int, entries: List[bytes]) -> None:
            if entries:
                out.append(_section(sid, _vec(entries)))

        section(_SECTION_TYPE, [b"\x60" + _vec([bytes([t]) for t in p]) + _vec([bytes([t]) for t in r])
                                for p, r in self.types])
        section(_SECTION_IMPORT, self.imports)
        section(_SECTION_FUNC, [encode_u(t) for t in self.funcs])
        section(_SECTION_TABLE, self.tables)
        section(_SECTION_MEMORY, self.memories)
        section(_SECTION_GLOBAL, self.globals)
        section(_SECTION_EXPORT, self.exports)
        if self.start is not None:
            out.append(_section(_SECTION_START, encode_u(self.start)))
        section(_SECTION_ELEM, self.elems)
        if self.uses_data_count:
            out.append(_section(_SECTION_DATACOUNT, encode_u(len(self.datas))))
        section(_SECTION_CODE, self.codes)
        section(_SECTION_DATA, self.datas)
        names = self.name_section()
        if names:
            out.append(_section(0, _name("name") + names))
        return b"".join(out)

    def name_section(self) -> bytes:
        """The ``name`` custom section, as ``wat2wasm --debug-names`` writes it: function names
        must survive into compiled symbols and trap messages."""
        subs = []
        if self.module_name is not None:
            subs.append(_section(0, _name(self.module_name)))
        if self.func_names:
            subs.append(_section(1, _name_map(self.func_names)))
        if self.local_names:
            subs.append(_section(2, _vec([encode_u(f) + _name_map(self.local_names[f])
                                          for f in sorted(self.local_names)])))
        return b"".join(subs)


def _name_map(names: Dict[int, str]) -> bytes:
    return _vec([encode_u(i) + _name(names[i]) for i in sorted(names)])


def _encode_locals(types: List[ValType]) -> bytes:
    """Locals as the binary format groups them: runs of one type."""
    runs: List[List[int]] = []
    for t in types:
        if runs and runs[-1][1] == t:
            runs[-1][0] += 1
        else:
            runs.append([1, t])
    return _vec([encode_u(n) + bytes([t]) for n, t in runs])


def _encode_elem(mode: str, table: int, offset: bytes, rt: ValType, items: List[bytes],
                 as_funcs: bool) -> bytes:
    """An element segment in the most compact of the eight binary forms that fits."""
    body = _vec(items)
    kind = b"\x00" if as_funcs else bytes([rt])
    flag = 0 if as_funcs else 4
    if mode == "active":
        if table == 0 and rt == ValType.FUNCREF:
            return bytes([flag]) + offset + body
        return bytes([flag | 2]) + encode_u(table) + offset + kind + body
    return bytes([flag | (1 if mode == "passive" else 3)]) + kind + body


def _encode_data(memory: int, offset: bytes, data: bytes) -> bytes:
    head = b"\x00" if memory == 0 else b"\x02" + encode_u(memory)
    return head + offset + encode_u(len(data)) + data


def _is_token(tok: str) -> bool:
    """Whether an atom is a real token of the text format (else the lexer would have called it
    an unknown operator)."""
    return (tok in _KEYWORDS or bool(ID_RE.match(tok) or _INT_RE.match(tok) or _FLOAT_RE.match(tok))
            or bool(_MEMARG_RE.match(tok)))


# --- entry points --------------------------------------------------------------------------------

def parse_wat(text: str) -> bytes:
    """Compile a WAT module, or a bare list of module fields as ``wat2wasm`` accepts, to a wasm
    binary. ``(module binary ...)`` and ``(module quote ...)`` are accepted too.

    Raises :class:`~pylucet.errors.MalformedModule` (a :class:`WatError`, with ``line`` and
    ``column``) if the text is not well-formed.
    """
    toks = Tokens(text)
    binary, end = compile_tokens(toks, 0)
    if toks.kinds[end] != EOF:
        _Parser(toks).unexpected(end)
    return binary


def compile_tokens(toks: Tokens, start: int) -> Tuple[bytes, int]:
    """Compile the module starting at token ``start`` (a ``(module ...)`` or bare fields up to the
    end); return the binary and the index of the token after it. The .wast reader uses this to
    compile a module where it stands in a script, so errors point into the script."""
    k, v = toks.kinds, toks.vals
    p = _Parser(toks)
    if k[start] == LPAR and k[start + 1] == ATOM and v[start + 1] == "module":
        end = toks.close[start]
        p.i = start + 2
        name = p.id_opt()
        if p.keyword("binary"):
            data = p.strings()
            p.close()
            return data, end + 1
        if p.keyword("quote"):
            source = p.strings()
            p.close()
            return parse_wat(decode_source(source, toks.text, toks.offs[start])), end + 1
        p.module_name = name[1:] if name else None
        p.module_fields(p.i, end)
        return p.binary(), end + 1
    end = len(k) - 1
    p.module_fields(start, end)
    return p.binary(), end


def decode_source(source: bytes, text: str = "", offset: int = 0) -> str:
    """The text of a ``(module quote ...)``, which must be UTF-8 like any source text."""
    try:
        return source.decode("utf-8")
    except UnicodeDecodeError:
        fail(text, offset, "malformed UTF-8 encoding")

"""A small, fast x86-64 machine code encoder.

The code generator calls one method per machine instruction, tens of millions of times for a
large module, so each method appends bytes to one ``bytearray`` with as little Python work as
possible: registers are ints, memory operands are plain tuples, and the width (8/16/32/64 bits)
is an argument instead of a family of near-identical methods.

A memory operand is ``(base, index, scale, disp)``: ``base`` a register, ``index`` a register or
``NO_INDEX``, ``scale`` 1/2/4/8, ``disp`` a signed 32-bit displacement. ``rsp`` cannot be an
index (the hardware has no encoding for it); every base works, including the ``rsp``/``r12``
(needs a SIB byte) and ``rbp``/``r13`` (needs a displacement) special cases.

Labels are ints from :meth:`Assembler.new_label`. Jumps to bound labels (backward) use the short
rel8 form when it reaches; forward jumps use rel32 and are patched when the label is bound.
"""

from __future__ import annotations

from struct import pack, pack_into
from typing import List, Tuple

from .registers import RSP

Mem = Tuple[int, int, int, int]
NO_INDEX = -1

# ALU operations: the /digit of the 0x81/0x83 group and the row of the two-operand opcodes.
ADD, OR, ADC, SBB, AND, SUB, XOR, CMP = range(8)
# The 0xF7 group (one register or memory operand).
NOT, NEG, MUL, IMUL1, DIV, IDIV = 2, 3, 4, 5, 6, 7
# The shift group (0xC1 / 0xD3).
ROL, ROR, SHL, SHR, SAR = 0, 1, 4, 5, 7
# F3 0F xx bit counting instructions.
POPCNT, TZCNT, LZCNT = 0xB8, 0xBC, 0xBD
# SSE scalar operations: the byte after 0F; an F3 (single) or F2 (double) prefix picks the
# precision. MOVS_LOAD/MOVS_STORE are movss/movsd to and from memory, CVT_PRECISION converts
# from the given precision to the other one (cvtss2sd / cvtsd2ss).
MOVS_LOAD, MOVS_STORE, SQRTS, ADDS, MULS, CVT_PRECISION, SUBS, MINS, DIVS, MAXS = (
    0x10, 0x11, 0x51, 0x58, 0x59, 0x5A, 0x5C, 0x5D, 0x5E, 0x5F)
# Packed-single bitwise operations (0F xx, no prefix): scalar code only reads the low lane.
ANDPS, ANDNPS, ORPS, XORPS = 0x54, 0x55, 0x56, 0x57
# roundss/roundsd rounding modes (imm8); bit 3 suppresses the precision exception.
ROUND_NEAREST, ROUND_FLOOR, ROUND_CEIL, ROUND_TRUNC = 8, 9, 10, 11

_SCALE_BITS = {1: 0, 2: 1, 4: 2, 8: 3}


def fits_i8(v: int) -> bool:
    return -128 <= v <= 127


def fits_i32(v: int) -> bool:
    return -0x8000_0000 <= v <= 0x7FFF_FFFF


class Assembler:
    """Machine code for one function, with labels."""

    __slots__ = ("code", "label_pos", "pending", "calls")

    def __init__(self) -> None:
        self.code = bytearray()
        self.calls = 0                # call instructions emitted
        self.label_pos: List[int] = []
        # label -> list of (position of a 32-bit field, position the value is relative to)
        self.pending: List[List[Tuple[int, int]]] = []

    # --- labels ------------------------------------------------------------------------------
    def new_label(self) -> int:
        self.label_pos.append(-1)
        self.pending.append([])
        return len(self.label_pos) - 1

    def bind(self, label: int) -> None:
        pos = len(self.code)
        self.label_pos[label] = pos
        code = self.code
        for field, rel in self.pending[label]:
            pack_into("<i", code, field, pos - rel)
        self.pending[label] = []

    def is_bound(self, label: int) -> bool:
        return self.label_pos[label] >= 0

    def _ref32(self, label: int, rel: int) -> None:
        """A 32-bit field holding ``label - rel``, at the current position."""
        pos = self.label_pos[label]
        if pos >= 0:
            self.code += pack("<i", pos - rel)
        else:
            self.pending[label].append((len(self.code), rel))
            self.code += b"\0\0\0\0"

    def unresolved(self) -> int:
        """How many label references are still waiting for their label (0 when done)."""
        return sum(len(p) for p in self.pending)

    def patch_i32(self, pos: int, value: int) -> None:
        pack_into("<i", self.code, pos, value)

    # --- operand encoding --------------------------------------------------------------------
    def _rr(self, prefix: int, w: int, opcode: bytes, reg: int, rm: int, byte_rm: bool = False) -> None:
        """An instruction with a register-direct ModRM: ``reg`` in ModRM.reg, ``rm`` in ModRM.rm
        (``byte_rm``: ``rm`` is read as a byte register)."""
        code = self.code
        if prefix:
            code.append(prefix)
        rex = (8 if w == 64 else 0) | ((reg >> 1) & 4) | (rm >> 3)
        # byte registers 4..7 are ah..bh without a REX prefix and spl..dil with one
        if rex or (byte_rm and 4 <= rm < 8):
            code.append(0x40 | rex)
        code += opcode
        code.append(0xC0 | ((reg & 7) << 3) | (rm & 7))

    def _rm(self, prefix: int, w: int, opcode: bytes, reg: int, mem: Mem, byte_reg: bool = False) -> None:
        """An instruction with a memory ModRM operand; ``reg`` is the ModRM.reg field (a register
        or an opcode extension)."""
        base, index, scale, disp = mem
        code = self.code
        if prefix:
            code.append(prefix)
        rex = (8 if w == 64 else 0) | ((reg >> 1) & 4) | (base >> 3)
        if index >= 0:
            rex |= (index >> 2) & 2
        if rex or (byte_reg and 4 <= reg < 8):
            code.append(0x40 | rex)
        code += opcode
        r = (reg & 7) << 3
        b = base & 7
        if disp == 0 and b != 5:
            mod = 0
        elif -128 <= disp <= 127:
            mod = 0x40
        else:
            mod = 0x80
        if index < 0 and b != 4:
            code.append(mod | r | b)
        else:
            if index == RSP:
                raise ValueError("rsp cannot be an index register")
            code.append(mod | r | 4)
            code.append((_SCALE_BITS[scale] << 6) | (((index if index >= 0 else 4) & 7) << 3) | b)
        if mod == 0x40:
            code.append(disp & 0xFF)
        elif mod == 0x80:
            code += pack("<i", disp)

    def disp32_pos(self) -> int:
        """Position of the disp32 of the memory operand just emitted, when it ended the
        instruction (for frame offsets patched once the frame size is known)."""
        return len(self.code) - 4

    @staticmethod
    def _imm(w: int, imm: int) -> bytes:
        if w == 8:
            return pack("<B", imm & 0xFF)
        if w == 16:
            return pack("<H", imm & 0xFFFF)
        return pack("<I", imm & 0xFFFF_FFFF)

    # --- integer ALU -------------------------------------------------------------------------
    def alu_rr(self, op: int, w: int, dst: int, src: int) -> None:
        """``op dst, src`` (add, or, adc, sbb, and, sub, xor, cmp)."""
        self._rr(0, w, bytes((op * 8 + 1,)), src, dst)

    def alu_rm(self, op: int, w: int, dst: int, mem: Mem) -> None:
        self._rm(0, w, bytes((op * 8 + 3,)), dst, mem)

    def alu_ri(self, op: int, w: int, dst: int, imm: int) -> None:
        """``op dst, imm``; a 64-bit ``imm`` must fit in a sign-extended imm32; a 32-bit one may
        be given signed or unsigned."""
        if w == 32 and imm > 0x7FFF_FFFF:
            imm -= 1 << 32
        if -128 <= imm <= 127:
            self._rr(0, w, b"\x83", op, dst)
            self.code.append(imm & 0xFF)
        else:
            self._rr(0, w, b"\x81", op, dst)
            self.code += pack("<i", imm)

    def alu_mi(self, op: int, w: int, mem: Mem, imm: int) -> None:
        if w == 32 and imm > 0x7FFF_FFFF:
            imm -= 1 << 32
        if -128 <= imm <= 127:
            self._rm(0, w, b"\x83", op, mem)
            self.code.append(imm & 0xFF)
        else:
            self._rm(0, w, b"\x81", op, mem)
            self.code += pack("<i", imm)

    def test_rr(self, w: int, a: int, b: int) -> None:
        self._rr(0, w, b"\x85", b, a)

    def imul_rr(self, w: int, dst: int, src: int) -> None:
        self._rr(0, w, b"\x0f\xaf", dst, src)

    def imul_rm(self, w: int, dst: int, mem: Mem) -> None:
        self._rm(0, w, b"\x0f\xaf", dst, mem)

    def imul_rri(self, w: int, dst: int, src: int, imm: int) -> None:
        """``dst = src * imm`` (imm a sign-extended imm8/imm32)."""
        if w == 32 and imm > 0x7FFF_FFFF:
            imm -= 1 << 32
        if -128 <= imm <= 127:
            self._rr(0, w, b"\x6b", dst, src)
            self.code.append(imm & 0xFF)
        else:
            self._rr(0, w, b"\x69", dst, src)
            self.code += pack("<i", imm)

    def unary_r(self, op: int, w: int, reg: int) -> None:
        """The 0xF7 group on a register: not, neg, mul, imul, div, idiv."""
        self._rr(0, w, b"\xf7", op, reg)

    def unary_m(self, op: int, w: int, mem: Mem) -> None:
        self._rm(0, w, b"\xf7", op, mem)

    def shift_cl(self, op: int, w: int, reg: int) -> None:
        """``op reg, cl`` (rol, ror, shl, shr, sar); the hardware masks the count."""
        self._rr(0, w, b"\xd3", op, reg)

    def shift_ri(self, op: int, w: int, reg: int, imm: int) -> None:
        self._rr(0, w, b"\xc1", op, reg)
        self.code.append(imm & (w - 1))

    def bitcount(self, kind: int, w: int, dst: int, src: int) -> None:
        """popcnt / tzcnt / lzcnt ``dst, src`` (the F3-prefixed forms)."""
        self._rr(0xF3, w, bytes((0x0F, kind)), dst, src)

    def cdq(self, w: int) -> None:
        """Sign-extend eax into edx (cdq), or rax into rdx (cqo)."""
        if w == 64:
            self.code += b"\x48\x99"
        else:
            self.code.append(0x99)

    def setcc(self, cc: int, reg: int) -> None:
        """``setcc reg8``; the caller zero-extends if it needs the full register."""
        self._rr(0, 32, bytes((0x0F, 0x90 | cc)), 0, reg, byte_rm=True)

    def cmov_rr(self, cc: int, w: int, dst: int, src: int) -> None:
        self._rr(0, w, bytes((0x0F, 0x40 | cc)), dst, src)

    def cmov_rm(self, cc: int, w: int, dst: int, mem: Mem) -> None:
        self._rm(0, w, bytes((0x0F, 0x40 | cc)), dst, mem)

    # --- SSE -----------------------------------------------------------------------------------
    # ``fw`` (32 or 64) is the float precision, ``w`` the integer width; ``src`` may be an xmm
    # register or a memory operand.
    def _sse(self, prefix: int, w: int, opcode: bytes, reg: int, src) -> None:
        if type(src) is int:
            self._rr(prefix, w, opcode, reg, src)
        else:
            self._rm(prefix, w, opcode, reg, src)

    def sse_op(self, op: int, fw: int, dst: int, src) -> None:
        """A scalar SSE operation ``op{ss,sd} dst, src`` (``MOVS_STORE``: ``dst`` is the
        register stored and ``src`` the memory operand)."""
        self._sse(0xF3 if fw == 32 else 0xF2, 32, bytes((0x0F, op)), dst, src)

    def bitwise_ps(self, op: int, dst: int, src) -> None:
        """andps / andnps / orps / xorps: whole-register bit operations that do not touch the
        flags."""
        self._sse(0, 32, bytes((0x0F, op)), dst, src)

    def movaps(self, dst: int, src: int) -> None:
        self._rr(0, 32, b"\x0f\x28", dst, src)

    def movd_xr(self, w: int, dst: int, src) -> None:
        """movd/movq xmm, r/m32 or r/m64 (the rest of the register is zeroed)."""
        self._sse(0x66, w, b"\x0f\x6e", dst, src)

    def movd_rx(self, w: int, dst: int, src: int) -> None:
        """movd/movq r32 or r64, xmm (a 32-bit move zero-extends)."""
        self._rr(0x66, w, b"\x0f\x7e", src, dst)

    def ucomis(self, fw: int, a: int, b) -> None:
        """Unordered compare: ZF, PF, CF = 1, 1, 1 for NaN, else as an unsigned ``cmp a, b``."""
        self._sse(0x66 if fw == 64 else 0, 32, b"\x0f\x2e", a, b)

    def cvtsi2s(self, fw: int, w: int, dst: int, src) -> None:
        """Signed ``w``-bit integer to float, rounded per MXCSR (round to nearest even)."""
        self._sse(0xF3 if fw == 32 else 0xF2, w, b"\x0f\x2a", dst, src)

    def cvtts2si(self, w: int, fw: int, dst: int, src) -> None:
        """Float to signed ``w``-bit integer, truncating; out of range gives 1 << (w - 1)."""
        self._sse(0xF3 if fw == 32 else 0xF2, w, b"\x0f\x2c", dst, src)

    def rounds(self, fw: int, dst: int, src, mode: int) -> None:
        """roundss / roundsd (SSE4.1) with an immediate rounding mode."""
        self._sse(0x66, 32, b"\x0f\x3a\x0a" if fw == 32 else b"\x0f\x3a\x0b", dst, src)
        self.code.append(mode)

    # --- moves -------------------------------------------------------------------------------
    def mov_rr(self, w: int, dst: int, src: int) -> None:
        """A 32-bit move zero-extends into the full register."""
        self._rr(0, w, b"\x89", src, dst)

    def mov_rm(self, w: int, dst: int, mem: Mem) -> None:
        """Load 32 or 64 bits (a 32-bit load zero-extends)."""
        self._rm(0, w, b"\x8b", dst, mem)

    def mov_mr(self, w: int, mem: Mem, src: int) -> None:
        """Store the low ``w`` bits of ``src``."""
        if w == 8:
            self._rm(0, 32, b"\x88", src, mem, byte_reg=True)
        elif w == 16:
            self._rm(0x66, 32, b"\x89", src, mem)
        else:
            self._rm(0, w, b"\x89", src, mem)

    def mov_mi(self, w: int, mem: Mem, imm: int) -> None:
        """Store an immediate of ``w`` bits (for 64 bits, a sign-extended imm32)."""
        if w == 8:
            self._rm(0, 32, b"\xc6", 0, mem)
        elif w == 16:
            self._rm(0x66, 32, b"\xc7", 0, mem)
        else:
            self._rm(0, w, b"\xc7", 0, mem)
        self.code += self._imm(min(w, 32), imm)

    def mov_ri(self, w: int, dst: int, imm: int) -> None:
        """Load a constant in the shortest form; never touches the flags (no ``xor r, r``), so
        it can sit between a compare and the jump or cmov that uses it."""
        if w == 32 or 0 <= imm <= 0xFFFF_FFFF:
            imm &= 0xFFFF_FFFF
            if dst >= 8:
                self.code.append(0x41)
            self.code.append(0xB8 | (dst & 7))
            self.code += pack("<I", imm)
        elif -0x8000_0000 <= imm < 0:
            self._rr(0, 64, b"\xc7", 0, dst)
            self.code += pack("<i", imm)
        else:
            self.code.append(0x48 | (dst >> 3))
            self.code.append(0xB8 | (dst & 7))
            self.code += pack("<Q", imm & 0xFFFF_FFFF_FFFF_FFFF)

    def movzx_rr(self, srcw: int, dst: int, src: int) -> None:
        """Zero-extend the low 8 or 16 bits of ``src`` into ``dst`` (all 64 bits)."""
        self._rr(0, 32, b"\x0f\xb6" if srcw == 8 else b"\x0f\xb7", dst, src, byte_rm=srcw == 8)

    def movzx_rm(self, srcw: int, dst: int, mem: Mem) -> None:
        self._rm(0, 32, b"\x0f\xb6" if srcw == 8 else b"\x0f\xb7", dst, mem)

    def movsx_rr(self, w: int, srcw: int, dst: int, src: int) -> None:
        """Sign-extend the low 8, 16 or 32 bits of ``src`` into ``w`` bits of ``dst``."""
        if srcw == 32:
            self._rr(0, 64, b"\x63", dst, src)
        else:
            self._rr(0, w, b"\x0f\xbe" if srcw == 8 else b"\x0f\xbf", dst, src, byte_rm=srcw == 8)

    def movsx_rm(self, w: int, srcw: int, dst: int, mem: Mem) -> None:
        if srcw == 32:
            self._rm(0, 64, b"\x63", dst, mem)
        else:
            self._rm(0, w, b"\x0f\xbe" if srcw == 8 else b"\x0f\xbf", dst, mem)

    def lea(self, w: int, dst: int, mem: Mem) -> None:
        self._rm(0, w, b"\x8d", dst, mem)

    def lea_label(self, dst: int, label: int) -> None:
        """``lea dst, [rip + label]``."""
        self.code.append(0x48 | ((dst >> 1) & 4))
        self.code.append(0x8D)
        self.code.append(0x05 | ((dst & 7) << 3))
        self._ref32(label, len(self.code) + 4)

    def push(self, reg: int) -> None:
        if reg >= 8:
            self.code.append(0x41)
        self.code.append(0x50 | (reg & 7))

    def pop(self, reg: int) -> None:
        if reg >= 8:
            self.code.append(0x41)
        self.code.append(0x58 | (reg & 7))

    # --- control flow ------------------------------------------------------------------------
    def jmp(self, label: int) -> None:
        pos = self.label_pos[label]
        here = len(self.code)
        if pos >= 0 and -128 <= pos - (here + 2) <= 127:
            self.code.append(0xEB)
            self.code.append((pos - (here + 2)) & 0xFF)
        else:
            self.code.append(0xE9)
            self._ref32(label, here + 5)

    def jcc(self, cc: int, label: int) -> None:
        pos = self.label_pos[label]
        here = len(self.code)
        if pos >= 0 and -128 <= pos - (here + 2) <= 127:
            self.code.append(0x70 | cc)
            self.code.append((pos - (here + 2)) & 0xFF)
        else:
            self.code.append(0x0F)
            self.code.append(0x80 | cc)
            self._ref32(label, here + 6)

    def jmp_r(self, reg: int) -> None:
        self._rr(0, 32, b"\xff", 4, reg)

    def call_rel32(self) -> int:
        """``call rel32`` with a zero placeholder; returns the position of the rel32 field."""
        self.calls += 1
        self.code.append(0xE8)
        self.code += b"\0\0\0\0"
        return len(self.code) - 4

    def call_r(self, reg: int) -> None:
        self.calls += 1
        self._rr(0, 32, b"\xff", 2, reg)

    def call_m(self, mem: Mem) -> None:
        self.calls += 1
        self._rm(0, 32, b"\xff", 2, mem)

    def jmp_m(self, mem: Mem) -> None:
        self._rm(0, 32, b"\xff", 4, mem)

    def table_entry(self, label: int, base: int) -> None:
        """A 32-bit jump table entry: ``label - base`` (``base`` a code position)."""
        self._ref32(label, base)

    def ret(self) -> None:
        self.code.append(0xC3)

    def ud2(self) -> None:
        self.code += b"\x0f\x0b"

    # --- string instructions -------------------------------------------------------------------
    # Fixed operands: rdi (destination), rsi (source), rcx (count), al (fill byte); the
    # direction flag picks upward (cld) or downward (std) addresses. SysV code expects DF clear.
    def rep_movsb(self) -> None:
        self.code += b"\xf3\xa4"

    def rep_stosb(self) -> None:
        self.code += b"\xf3\xaa"

    def std(self) -> None:
        self.code.append(0xFD)

    def cld(self) -> None:
        self.code.append(0xFC)

    def int3(self) -> None:
        self.code.append(0xCC)

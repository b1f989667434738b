"""Floating-point instructions: SSE scalar code, with the wasm rules x86 lacks spelled out.

Float values live in xmm registers; a float operand that is in memory is used in place where
the instruction reads only the scalar (never by packed forms, which read 16 bytes). min/max and
the float-to-integer conversions check NaN and their edge cases with ``ucomis`` first, and
abs/neg/copysign are sign-bit masks so NaN payloads pass unchanged. A float compare fuses like
an integer one (its 'above' conditions are false when unordered); ``eq``/``ne``, which also need
the parity flag, become a 0/1 value first.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Tuple

from ...module.traps import TrapCode
from ..x86_64 import encoding as X
from ..x86_64.registers import CC_AE, CC_B, CC_BE, CC_E, CC_NE, CC_NP, CC_P, CC_S, R11, SWAPPED_CC
from .context import (CONST, F32, F64, FLAGS, I32, IN_XMM, MASK, REG, XTMP, CodeGenContext,
                      width)

if TYPE_CHECKING:
    from .function import FunctionCompiler


def op_fconst(cg: FunctionCompiler, t, imm, off):
    cg.stack.append((CONST, imm & MASK[width(t)], t))


def _fsrc(ctx: CodeGenContext, e: tuple) -> Tuple[object, int]:
    """A scalar source operand for float entry ``e`` (memory or xmm register, a local's home
    read in place), and the register the caller must free (or -1)."""
    mem = ctx.mem_of(e)
    if mem is not None:
        return mem, -1
    reg, owned = ctx.reg_of(e)
    return reg, reg if owned else -1


def op_farith(cg: FunctionCompiler, arg, imm, off):
    """add, sub, mul, div: the hardware's NaN propagation is what the spec allows."""
    ctx = cg.ctx
    op, fw = arg
    b = cg.stack.pop()
    a = cg.stack.pop()
    dst = ctx.take(a)
    src, tmp = _fsrc(ctx, b)
    cg.asm.sse_op(op, fw, dst, src)
    if tmp >= 0:
        ctx.free(tmp, b[2])
    cg.stack.append((REG, dst, a[2]))


def op_funary(cg: FunctionCompiler, arg, imm, off):
    """sqrt, and ceil/floor/trunc/nearest as roundss/roundsd with a fixed mode."""
    ctx = cg.ctx
    fw, mode = arg
    e = cg.stack.pop()
    src, tmp = _fsrc(ctx, e)
    dst = tmp if tmp >= 0 else ctx.alloc(e[2])
    if mode is None:
        cg.asm.sse_op(X.SQRTS, fw, dst, src)
    else:
        cg.asm.rounds(fw, dst, src, mode)
        cg.features.add("sse4.1")
    cg.stack.append((REG, dst, e[2]))


def op_fsign(cg: FunctionCompiler, arg, imm, off):
    """abs, neg, copysign: pure sign-bit operations, so NaN payloads pass unchanged."""
    ctx = cg.ctx
    name, fw = arg
    sign = 1 << (fw - 1)
    stack = cg.stack
    b = stack.pop() if name == "copysign" else None
    a = stack.pop()
    t = a[2]
    if name == "copysign" and b[0] == CONST:   # the sign is known: it is abs or -abs
        name = "neg_abs" if b[1] & sign else "abs"
        b = None
    if a[0] == CONST and b is None:
        fold = {"abs": lambda v: v & ~sign, "neg": lambda v: v ^ sign,
                "neg_abs": lambda v: v | sign}[name]
        stack.append((CONST, fold(a[1]), t))
        return
    asm = cg.asm
    dst = ctx.take(a)
    if name == "neg":
        ctx.fconst(fw, XTMP, sign)
        asm.bitwise_ps(X.XORPS, dst, XTMP)
    elif name == "neg_abs":
        ctx.fconst(fw, XTMP, sign)
        asm.bitwise_ps(X.ORPS, dst, XTMP)
    else:
        ctx.fconst(fw, XTMP, MASK[fw] ^ sign)
        asm.bitwise_ps(X.ANDPS, dst, XTMP)
        if b is not None:   # copysign: or in b's sign bit
            src = ctx.take(b)
            asm.bitwise_ps(X.ANDNPS, XTMP, src)
            asm.bitwise_ps(X.ORPS, dst, XTMP)
            ctx.free(src, t)
    stack.append((REG, dst, t))


def op_fminmax(cg: FunctionCompiler, arg, imm, off):
    """min/max: NaN if either operand is; -0 < +0. minss/maxss alone get both wrong (they
    return the second operand), so those cases go first."""
    ctx = cg.ctx
    fw, is_max = arg
    b = cg.stack.pop()
    a = cg.stack.pop()
    asm = cg.asm
    dst = ctx.take(a)
    src = ctx.take(b)
    nan, ordinary, done = asm.new_label(), asm.new_label(), asm.new_label()
    asm.ucomis(fw, dst, src)
    asm.jcc(CC_P, nan)
    asm.jcc(CC_NE, ordinary)
    # equal: only +0/-0 can differ; the bitwise and/or picks the right zero
    asm.bitwise_ps(X.ANDPS if is_max else X.ORPS, dst, src)
    asm.jmp(done)
    asm.bind(nan)
    asm.sse_op(X.ADDS, fw, dst, src)   # a quiet NaN
    asm.jmp(done)
    asm.bind(ordinary)
    asm.sse_op(X.MAXS if is_max else X.MINS, fw, dst, src)
    asm.bind(done)
    ctx.free(src, b[2])
    cg.stack.append((REG, dst, a[2]))


def op_fcompare(cg: FunctionCompiler, arg, imm, off):
    """ucomis sets CF, ZF and PF for NaN, so 'above' conditions are false when unordered;
    lt/le compare the other way round to use them. eq/ne need PF as well and are made
    into a 0/1 value (fused as its ``ne 0``)."""
    ctx = cg.ctx
    cc, fw = arg
    b = cg.stack.pop()
    a = cg.stack.pop()
    if cc == CC_B or cc == CC_BE:
        a, b = b, a
        cc = SWAPPED_CC[cc]
    asm = cg.asm
    ra = ctx.take(a)
    src, tmp = _fsrc(ctx, b)
    asm.ucomis(fw, ra, src)
    ctx.free(ra, a[2])
    if tmp >= 0:
        ctx.free(tmp, b[2])
    if cc != CC_E and cc != CC_NE:
        cg.push_cond(cc)
        return
    r = ctx.alloc()
    asm.setcc(CC_NP, R11)
    asm.setcc(CC_E, r)
    asm.movzx_rr(8, r, r)
    asm.alu_rr(X.AND, 32, r, R11)     # ordered and equal
    if cc == CC_NE:
        asm.alu_ri(X.XOR, 32, r, 1)
    if cg.fuse_next():
        ctx.free(r)
        cg.stack.append((FLAGS, CC_NE, I32))
    else:
        cg.stack.append((REG, r, I32))


def op_fprecision(cg: FunctionCompiler, fw, imm, off):
    """promote/demote from precision ``fw`` to the other."""
    ctx = cg.ctx
    e = cg.stack.pop()
    t = F32 if fw == 64 else F64
    src, tmp = _fsrc(ctx, e)
    dst = tmp if tmp >= 0 else ctx.alloc(t)
    cg.asm.sse_op(X.CVT_PRECISION, fw, dst, src)
    cg.stack.append((REG, dst, t))


def op_fconvert(cg: FunctionCompiler, arg, imm, off):
    """Integer to float, correctly rounded. An unsigned i32 converts as a (zero-extended)
    i64; an unsigned i64 with the top bit set is halved, keeping the lost bit as a sticky
    bit so the one rounding stays correct, converted and doubled."""
    ctx = cg.ctx
    t, iw, signed = arg
    fw = width(t)
    e = cg.stack.pop()
    asm = cg.asm
    dst = ctx.alloc(t)
    if iw == 64 and not signed:
        r = ctx.take(e)
        big, done = asm.new_label(), asm.new_label()
        asm.test_rr(64, r, r)
        asm.jcc(CC_S, big)
        asm.cvtsi2s(fw, 64, dst, r)
        asm.jmp(done)
        asm.bind(big)
        asm.mov_rr(64, R11, r)
        asm.shift_ri(X.SHR, 64, R11, 1)
        asm.alu_ri(X.AND, 32, r, 1)
        asm.alu_rr(X.OR, 64, R11, r)
        asm.cvtsi2s(fw, 64, dst, R11)
        asm.sse_op(X.ADDS, fw, dst, dst)
        asm.bind(done)
        ctx.free(r)
    else:
        mem = ctx.mem_of(e)
        if mem is not None and not signed:   # the slot's upper half is not known zero
            asm.mov_rm(32, R11, mem)
            asm.cvtsi2s(fw, 64, dst, R11)
        elif mem is not None:
            asm.cvtsi2s(fw, iw, dst, mem)
        else:
            reg, owned = ctx.reg_of(e)   # an i32 in a register is zero-extended
            asm.cvtsi2s(fw, iw if signed else 64, dst, reg)
            if owned:
                ctx.free(reg)
    cg.stack.append((REG, dst, t))


def op_trunc(cg: FunctionCompiler, arg, imm, off):
    """Float to integer, trapping or saturating. NaN and the range are checked first
    against exact bounds (see ``_trunc_bounds``); then cvtts2si only sees values whose
    truncation fits. Unsigned i32 converts as i64; unsigned i64 of 2^63 or more converts
    x - 2^63 and sets the top bit back."""
    ctx = cg.ctx
    t, fw, signed, sat = arg
    iw = width(t)
    low, low_cc, high = _trunc_bounds(iw, fw, signed)
    e = cg.stack.pop()
    asm = cg.asm
    x = ctx.take(e)
    r = ctx.alloc()
    if sat:
        done = asm.new_label()
        nan_to = overflow_to = done
        asm.mov_ri(32, r, 0)
    else:
        nan_to = cg.trap_label(TrapCode.BadConversionToInteger, off)
        overflow_to = cg.trap_label(TrapCode.IntegerOverflow, off)
    asm.ucomis(fw, x, x)
    asm.jcc(CC_P, nan_to)
    if sat and signed:
        asm.mov_ri(iw, r, 1 << (iw - 1))
    ctx.fconst(fw, XTMP, low)
    asm.ucomis(fw, x, XTMP)
    asm.jcc(low_cc, overflow_to)
    if sat:
        asm.mov_ri(iw, r, MASK[iw] >> 1 if signed else MASK[iw])
    ctx.fconst(fw, XTMP, high)
    asm.ucomis(fw, x, XTMP)
    asm.jcc(CC_AE, overflow_to)
    if iw == 64 and not signed:
        small, fin = asm.new_label(), asm.new_label()
        ctx.fconst(fw, XTMP, float_bits(fw, 2.0 ** 63))
        asm.ucomis(fw, x, XTMP)
        asm.jcc(CC_B, small)
        asm.sse_op(X.SUBS, fw, x, XTMP)
        asm.cvtts2si(64, fw, r, x)
        asm.mov_ri(64, R11, 1 << 63)
        asm.alu_rr(X.XOR, 64, r, R11)
        asm.jmp(fin)
        asm.bind(small)
        asm.cvtts2si(64, fw, r, x)
        asm.bind(fin)
    else:
        asm.cvtts2si(iw if signed else 64, fw, r, x)
    if sat:
        asm.bind(done)
    ctx.free(x, e[2])
    cg.stack.append((REG, r, t))


def op_reinterpret(cg: FunctionCompiler, t, imm, off):
    """The same bits in the other register class."""
    ctx = cg.ctx
    e = cg.stack.pop()
    if e[0] == CONST:
        cg.stack.append((CONST, e[1], t))
        return
    w = width(t)
    asm = cg.asm
    dst = ctx.alloc(t)
    mem = ctx.mem_of(e)
    if mem is not None:
        if IN_XMM[t]:
            asm.sse_op(X.MOVS_LOAD, w, dst, mem)
        else:
            asm.mov_rm(w, dst, mem)
    else:
        reg, owned = ctx.reg_of(e)
        if IN_XMM[t]:
            asm.movd_xr(w, dst, reg)
        else:
            asm.movd_rx(w, dst, reg)
        if owned:
            ctx.free(reg, e[2])
    cg.stack.append((REG, dst, t))


def float_bits(fw: int, v: float) -> int:
    return int.from_bytes(struct.pack("<f" if fw == 32 else "<d", v), "little")


def _trunc_bounds(iw: int, fw: int, signed: bool) -> Tuple[int, int, int]:
    """(low bound bits, condition meaning 'x is below the range' after ``ucomis x, low``,
    high bound bits): x truncates into range iff low < x < high exactly, with high = 2^(iw-1)
    or 2^iw and low = -2^(iw-1) - 1 or -1. When low is not representable, the largest float
    below the range is -2^(iw-1) itself minus a whole ulp, so ``x >= -2^(iw-1)`` is the same
    test."""
    high = float_bits(fw, 2.0 ** (iw - 1 if signed else iw))
    if not signed:
        return float_bits(fw, -1.0), CC_BE, high
    low = -(1 << (iw - 1)) - 1
    mantissa = 24 if fw == 32 else 53
    if low.bit_length() <= mantissa:      # exactly representable
        return float_bits(fw, float(low)), CC_BE, high
    return float_bits(fw, float(low + 1)), CC_B, high

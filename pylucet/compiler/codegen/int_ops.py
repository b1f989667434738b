"""Integer instructions: constants, arithmetic, shifts, bit counts, compares and conversions.

Two constant operands fold to a constant (each row of the dispatch table carries its fold), a
constant operand becomes an immediate, and a compare whose result the next instruction takes
from the flags (``FunctionCompiler.fuse_next``) leaves it there. ``x = x op y`` on a register
local updates that register in place. Divisions fault on purpose (their trap site is the
``div`` itself); ``INT_MIN / -1`` is checked explicitly. Unsigned division by a constant needs
no ``div``: a power of two is a shift or a mask, and an i32 divisor a multiplication by its
64-bit reciprocal (``_div_u_const``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...module.traps import TrapCode
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, fits_i32
from ..x86_64.registers import (CC_A, CC_AE, CC_B, CC_BE, CC_E, CC_G, CC_GE, CC_L, CC_LE, CC_NE,
                                CC_O, R11, RAX, RCX, RDX, SWAPPED_CC)
from .context import CONST, FLAGS, I32, I64, LOCAL, MASK, REG, signed as _signed, width

if TYPE_CHECKING:
    from .function import FunctionCompiler


def op_const(cg: FunctionCompiler, w, imm, off):
    cg.stack.append((CONST, imm & MASK[w], I64 if w == 64 else I32))


def op_alu(cg: FunctionCompiler, arg, imm, off):
    """add, sub, and, or, xor."""
    ctx = cg.ctx
    op, w, fold = arg
    stack = cg.stack
    b = stack.pop()
    a = stack.pop()
    t = a[2]
    if a[0] == CONST and b[0] == CONST:
        stack.append((CONST, fold(a[1], b[1]) & MASK[w], t))
        return
    if a[0] == LOCAL or b[0] == LOCAL:
        idx = cg.update_target()
        if idx >= 0:
            if b[0] == LOCAL and b[1] == idx and op != X.SUB:
                a, b = b, a
            if a[0] == LOCAL and a[1] == idx and not (b[0] == LOCAL and b[1] == idx):
                # `x = x op y`: update x's register in place; the local.set is then a no-op
                ctx.detach_local(idx)
                ctx.alu_operand(op, w, ctx.local_reg[idx], b)
                stack.append(a)
                return
    if op != X.SUB and b[0] != CONST and (a[0] == CONST or (a[0] != REG and b[0] == REG)):
        a, b = b, a
    if a[0] != REG and b[0] == CONST and op in (X.ADD, X.SUB):
        # x + c into a fresh register straight from x's home, without a copy first
        src, owned = ctx.reg_of(a)
        disp = _signed(b[1], w) * (1 if op == X.ADD else -1)
        if fits_i32(disp):
            dst = src if owned else ctx.alloc()
            cg.asm.lea(w, dst, (src, NO_INDEX, 1, disp))
            stack.append((REG, dst, t))
            return
        a = (REG, src, t) if owned else a
    dst = ctx.take(a)
    ctx.alu_operand(op, w, dst, b)
    stack.append((REG, dst, t))


def op_mul(cg: FunctionCompiler, w, imm, off):
    ctx = cg.ctx
    stack = cg.stack
    b = stack.pop()
    a = stack.pop()
    t = a[2]
    if a[0] == CONST and b[0] == CONST:
        stack.append((CONST, (a[1] * b[1]) & MASK[w], t))
        return
    if a[0] == CONST or (a[0] != REG and b[0] == REG):
        a, b = b, a
    asm = cg.asm
    if b[0] == CONST and fits_i32(_signed(b[1], w)):
        src, owned = ctx.reg_of(a)
        dst = src if owned else ctx.alloc()
        asm.imul_rri(w, dst, src, _signed(b[1], w))
        stack.append((REG, dst, t))
        return
    dst = ctx.take(a)
    mem = ctx.mem_of(b)
    if mem is not None:
        asm.imul_rm(w, dst, mem)
    else:
        src, owned = ctx.reg_of(b)
        asm.imul_rr(w, dst, src)
        if owned:
            ctx.free(src)
    stack.append((REG, dst, t))


def op_div(cg: FunctionCompiler, arg, imm, off):
    """div_s, div_u, rem_s, rem_u: the dividend in rax, the result in rax or rdx."""
    ctx = cg.ctx
    w, signed, rem = arg
    asm = cg.asm
    stack = cg.stack
    t = stack[-1][2]
    n = len(stack)
    b = stack[-1]
    if signed and b[0] == CONST and _signed(b[1], w) == -1:
        if rem:   # x rem_s -1 is 0 for every x (idiv would fault on INT_MIN)
            ctx.pop_free()
            ctx.pop_free()
            stack.append((CONST, 0, t))
            return
        ctx.pop_free()
        dst = ctx.take(stack.pop())
        asm.unary_r(X.NEG, w, dst)
        asm.jcc(CC_O, cg.trap_label(TrapCode.IntegerOverflow, off))
        stack.append((REG, dst, t))
        return
    if not signed and b[0] == CONST and b[1] and (w == 32 or b[1] & (b[1] - 1) == 0):
        _div_u_const(cg, w, rem, b[1])
        return
    ctx.move_to(n - 2, RAX)
    ctx.evict(RDX)
    ctx.regs.used |= 1 << RDX
    b = stack.pop()
    stack.pop()
    mem = ctx.mem_of(b)
    if mem is None:
        if b[0] == LOCAL:
            divisor, owned = ctx.reg_of(b)
        else:
            divisor, owned = ctx.take(b), True
    result = RDX if rem else RAX
    done = asm.new_label()
    if signed and b[0] != CONST:
        do_div = asm.new_label()
        if mem is not None:
            asm.alu_mi(X.CMP, w, mem, -1)
        else:
            asm.alu_ri(X.CMP, w, divisor, -1)
        asm.jcc(CC_NE, do_div)
        if rem:
            asm.mov_ri(32, RDX, 0)
        else:
            asm.unary_r(X.NEG, w, RAX)
            asm.jcc(CC_O, cg.trap_label(TrapCode.IntegerOverflow, off))
        asm.jmp(done)
        asm.bind(do_div)
    if signed:
        asm.cdq(w)
    else:
        asm.alu_rr(X.XOR, 32, RDX, RDX)
    cg.trap_here(TrapCode.IntegerDivByZero, off)
    if mem is not None:
        asm.unary_m(X.IDIV if signed else X.DIV, w, mem)
    else:
        asm.unary_r(X.IDIV if signed else X.DIV, w, divisor)
        if owned:
            ctx.free(divisor)
    asm.bind(done)
    ctx.free(RAX if rem else RDX)
    stack.append((REG, result, t))


def _div_u_const(cg: FunctionCompiler, w: int, rem: bool, d: int) -> None:
    """``div_u``/``rem_u`` by the constant ``d`` (not 0; any i32, or a power of two). A power
    of two is a shift or a mask. Otherwise, with M = floor((2^64 - 1) / d) + 1, for every
    32-bit x: x / d is the high half of the 128-bit M * x, and x % d the high half of
    (M * x mod 2^64) * d (Lemire, Kaser and Kurz, "Faster remainder by direct computation",
    2019): one or two multiplications instead of a ``div`` several times slower."""
    ctx = cg.ctx
    asm = cg.asm
    stack = cg.stack
    stack.pop()
    t = stack[-1][2]
    if d & (d - 1) == 0:
        if rem and d == 1:
            ctx.pop_free()
            stack.append((CONST, 0, t))
            return
        dst = ctx.take(stack.pop())
        if rem:
            ctx.alu_operand(X.AND, w, dst, (CONST, d - 1, t))
        elif d > 1:
            asm.shift_ri(X.SHR, w, dst, d.bit_length() - 1)
        stack.append((REG, dst, t))
        return
    ctx.move_to(len(stack) - 1, RAX)   # x, zero-extended to 64 bits
    stack.pop()
    ctx.evict(RDX)
    ctx.claim(RDX, t)
    asm.mov_ri(64, R11, (1 << 64) // d + 1)   # d is no power of two: floor((2^64-1)/d) + 1
    if rem:
        asm.imul_rr(64, RAX, R11)     # M * x mod 2^64
        asm.mov_ri(32, R11, d)
    asm.unary_r(X.MUL, 64, R11)       # rdx = the high half: the quotient or the remainder
    ctx.free(RAX)
    stack.append((REG, RDX, t))


def op_shift(cg: FunctionCompiler, arg, imm, off):
    ctx = cg.ctx
    op, w, fold = arg
    asm = cg.asm
    stack = cg.stack
    b = stack[-1]
    if b[0] == CONST:
        stack.pop()
        a = stack.pop()
        count = b[1] & (w - 1)
        if a[0] == CONST:
            stack.append((CONST, fold(a[1], count, w) & MASK[w], a[2]))
            return
        dst = ctx.take(a)
        if count:
            asm.shift_ri(op, w, dst, count)
        stack.append((REG, dst, a[2]))
        return
    ctx.move_to(len(stack) - 1, RCX)
    stack.pop()
    a = stack.pop()
    dst = ctx.take(a)
    asm.shift_cl(op, w, dst)
    ctx.free(RCX)
    stack.append((REG, dst, a[2]))


def op_bitcount(cg: FunctionCompiler, arg, imm, off):
    ctx = cg.ctx
    kind, w, feature, fold = arg
    e = cg.stack.pop()
    if e[0] == CONST:
        cg.stack.append((CONST, fold(e[1], w), e[2]))
        return
    src, owned = ctx.reg_of(e)
    dst = src if owned else ctx.alloc()
    cg.asm.bitcount(kind, w, dst, src)
    cg.features.add(feature)
    cg.stack.append((REG, dst, e[2]))


def op_eqz(cg: FunctionCompiler, w, imm, off):
    ctx = cg.ctx
    e = cg.stack.pop()
    if e[0] == CONST:
        cg.stack.append((CONST, int(e[1] == 0), I32))
        return
    if e[0] == FLAGS:       # eqz of a compare: the opposite compare
        cg.push_cond(e[1] ^ 1)
        return
    mem = ctx.mem_of(e)
    if mem is not None:
        cg.asm.alu_mi(X.CMP, w, mem, 0)
    else:
        reg, owned = ctx.reg_of(e)
        cg.asm.test_rr(w, reg, reg)
        if owned:
            ctx.free(reg)
    cg.push_cond(CC_E)


def op_compare(cg: FunctionCompiler, arg, imm, off):
    ctx = cg.ctx
    cc, w = arg
    stack = cg.stack
    b = stack.pop()
    a = stack.pop()
    if a[0] == CONST and b[0] == CONST:
        stack.append((CONST, int(_CC_FOLD[cc](a[1], b[1], w)), I32))
        return
    if a[0] == CONST or (ctx.mem_of(a) is not None and b[0] == REG):
        a, b = b, a
        cc = SWAPPED_CC[cc]
    reg, owned = ctx.reg_of(a)
    ctx.alu_operand(X.CMP, w, reg, b)
    if owned:
        ctx.free(reg)
    cg.push_cond(cc)


def op_convert(cg: FunctionCompiler, arg, imm, off):
    """wrap, extend_i32_u/s and the sign-extension operators."""
    ctx = cg.ctx
    t, srcw, signed, fold = arg
    e = cg.stack.pop()
    w = width(t)
    if e[0] == CONST:
        cg.stack.append((CONST, fold(e[1]) & MASK[w], t))
        return
    asm = cg.asm
    if not signed and e[0] == REG and t == I64:
        cg.stack.append((REG, e[1], t))   # i32 registers are already zero-extended
        return
    mem = ctx.mem_of(e)
    if mem is not None:
        dst = ctx.alloc()
        if signed:
            asm.movsx_rm(w, srcw, dst, mem)
        else:
            asm.mov_rm(32, dst, mem)
    else:
        src, owned = ctx.reg_of(e)
        dst = src if owned else ctx.alloc()
        if signed:
            asm.movsx_rr(w, srcw, dst, src)
        else:
            asm.mov_rr(32, dst, src)
    cg.stack.append((REG, dst, t))


# --- constant folding, one function per operation (the dispatch table's rows name them) -----------

def fold_add(a: int, b: int) -> int:
    return a + b


def fold_sub(a: int, b: int) -> int:
    return a - b


def fold_and(a: int, b: int) -> int:
    return a & b


def fold_or(a: int, b: int) -> int:
    return a | b


def fold_xor(a: int, b: int) -> int:
    return a ^ b


def fold_shl(v: int, n: int, w: int) -> int:
    return v << n


def fold_shr_u(v: int, n: int, w: int) -> int:
    return v >> n


def fold_shr_s(v: int, n: int, w: int) -> int:
    return _signed(v, w) >> n


def fold_rotl(v: int, n: int, w: int) -> int:
    return _rot(v, n, w, True)


def fold_rotr(v: int, n: int, w: int) -> int:
    return _rot(v, n, w, False)


def _rot(v: int, n: int, w: int, left: bool) -> int:
    n %= w
    if not left:
        n = (w - n) % w
    return ((v << n) | (v >> (w - n))) & MASK[w]


def fold_clz(v: int, w: int) -> int:
    return w - v.bit_length()


def fold_ctz(v: int, w: int) -> int:
    return ((v & -v).bit_length() - 1) if v else w


def fold_popcnt(v: int, w: int) -> int:
    return bin(v).count("1")


def fold_unsigned(v: int) -> int:
    """wrap and extend_u: the operand is already masked to its width, the result is masked to
    its own."""
    return v


def fold_sign_extend(bits: int):
    """The fold of an ``extend*_s`` from ``bits``."""
    mask = (1 << bits) - 1
    return lambda v: _signed(v & mask, bits)


_CC_FOLD = {
    CC_E: lambda a, b, w: a == b, CC_NE: lambda a, b, w: a != b,
    CC_B: lambda a, b, w: a < b, CC_A: lambda a, b, w: a > b,
    CC_BE: lambda a, b, w: a <= b, CC_AE: lambda a, b, w: a >= b,
    CC_L: lambda a, b, w: _signed(a, w) < _signed(b, w),
    CC_G: lambda a, b, w: _signed(a, w) > _signed(b, w),
    CC_LE: lambda a, b, w: _signed(a, w) <= _signed(b, w),
    CC_GE: lambda a, b, w: _signed(a, w) >= _signed(b, w),
}

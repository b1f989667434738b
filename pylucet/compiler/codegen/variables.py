"""Locals, globals and the parametric instructions (``drop``, ``select``).

``local.get`` pushes a lazy entry that reads the local's home where it is used; ``local.set``
copies any such entry still on the stack first (``CodeGenContext.detach_local``). ``local.tee``
of a value in a register pushes that register, not a lazy read of the local's home. Globals live
in the globals area that the vmctx points at, each at its ``ModuleEnv.global_offsets`` slot; the
slot of an imported mutable global holds the address of the exporter's storage instead
(``ModuleEnv.global_by_ref``), one more load on the way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...module.abi import VMCTX_GLOBALS
from ...wasm.types import ValType
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, fits_i32
from ..x86_64.registers import R11, R14
from .context import CONST, IN_XMM, LOCAL, REG, require_num, signed as _signed, width

if TYPE_CHECKING:
    from .function import FunctionCompiler


def op_local_get(cg: FunctionCompiler, _, idx, off):
    cg.stack.append((LOCAL, idx, cg.local_types[idx]))


def op_local_set(cg: FunctionCompiler, tee, idx, off):
    ctx = cg.ctx
    e = cg.stack.pop()
    if e[0] == LOCAL and e[1] == idx:
        if tee:
            cg.stack.append(e)
        return
    ctx.detach_local(idx)
    t = cg.local_types[idx]
    w = width(t)
    asm = cg.asm
    home = ctx.local_reg[idx]
    kind, val = e[0], e[1]
    if home >= 0:
        if kind == CONST and val == 0:
            if IN_XMM[t]:
                asm.bitwise_ps(X.XORPS, home, home)
            else:
                asm.alu_rr(X.XOR, 32, home, home)
        elif kind == REG:
            if IN_XMM[t]:
                asm.movaps(home, val)
            else:
                asm.mov_rr(w, home, val)
            if tee:
                # go on with the value's own register: its user (which mostly makes a new value
                # of it at once) need not copy the home first
                cg.stack.append(e)
                return
            ctx.free(val, t)
        else:
            ctx.load(e, home)
    else:
        mem = ctx.local_mem(idx)
        if kind == CONST and fits_i32(_signed(val, w)):
            asm.mov_mi(w, mem, val if w == 32 else _signed(val, w))
        elif kind == CONST:
            asm.mov_ri(64, R11, val)
            asm.mov_mr(w, mem, R11)
        else:
            reg, owned = ctx.reg_of(e)
            ctx.store_reg(t, mem, reg)
            if tee:
                # the value is still in hand: pushing it (not a lazy read of the frame slot)
                # spares its user a reload that would wait on the store just made
                cg.stack.append((REG, reg, t) if owned else e)
                return
            if owned:
                ctx.free(reg, t)
        if tee:
            cg.stack.append(e)    # a constant stays one
        return
    if tee:
        cg.stack.append((LOCAL, idx, t))


def _global_type(cg: FunctionCompiler, idx: int) -> ValType:
    t = cg.env.global_types[idx]
    require_num((t,), "globals")
    return t


def _global_mem(cg: FunctionCompiler, idx: int, base: int):
    """Load ``base`` so that the returned operand addresses global ``idx``'s value."""
    asm = cg.asm
    asm.mov_rm(64, base, (R14, NO_INDEX, 1, VMCTX_GLOBALS))
    if cg.env.global_by_ref[idx]:
        asm.mov_rm(64, base, (base, NO_INDEX, 1, cg.env.global_offsets[idx]))
        return (base, NO_INDEX, 1, 0)
    return (base, NO_INDEX, 1, cg.env.global_offsets[idx])


def op_global_get(cg: FunctionCompiler, _, idx, off):
    ctx = cg.ctx
    t = _global_type(cg, idx)
    reg = ctx.alloc(t)
    asm = cg.asm
    mem = _global_mem(cg, idx, R11 if IN_XMM[t] else reg)
    if IN_XMM[t]:
        asm.sse_op(X.MOVS_LOAD, width(t), reg, mem)
    else:
        asm.mov_rm(width(t), reg, mem)
    cg.stack.append((REG, reg, t))


def op_global_set(cg: FunctionCompiler, _, idx, off):
    ctx = cg.ctx
    t = _global_type(cg, idx)
    w = width(t)
    e = cg.stack.pop()
    asm = cg.asm
    if e[0] == CONST and fits_i32(_signed(e[1], w)):
        asm.mov_mi(w, _global_mem(cg, idx, R11), _signed(e[1], w))
        return
    reg, owned = ctx.reg_of(e)     # before r11 is taken: a float constant needs it
    ctx.store_reg(t, _global_mem(cg, idx, R11), reg)
    if owned:
        ctx.free(reg, t)


def op_select(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    if imm is not None:
        require_num(imm, "select operands")
    stack = cg.stack
    c = stack.pop()
    if c[0] == CONST:
        b = ctx.pop_free()
        a = ctx.pop_free()
        keep = a if c[1] else b
        if keep[0] == REG:
            ctx.claim(keep[1], keep[2])
        stack.append(keep)
        return
    cc = ctx.test(c)          # from here on only movs until the cmov
    b = stack.pop()
    a = stack.pop()
    t = a[2]
    w = width(t)
    dst = ctx.take(a)
    if IN_XMM[t]:        # no cmov for xmm registers: branch around a move
        keep = cg.asm.new_label()
        cg.asm.jcc(cc, keep)
        ctx.load(b, dst)
        if b[0] == REG:
            ctx.free(b[1], t)
        cg.asm.bind(keep)
        stack.append((REG, dst, t))
        return
    mem = ctx.mem_of(b)
    if mem is not None:
        cg.asm.cmov_rm(cc ^ 1, w, dst, mem)
    else:
        src, owned = ctx.reg_of(b)
        cg.asm.cmov_rr(cc ^ 1, w, dst, src)
        if owned:
            ctx.free(src)
    stack.append((REG, dst, t))


def op_drop(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    ctx.pop_free()

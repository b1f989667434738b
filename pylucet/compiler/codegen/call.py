"""Calls: direct calls, imports (through their trampolines), ``call_indirect``, and where each
argument and result travels.

The convention is ``module.abi.call_layout``'s (SysV x86-64 for wasm's value types), the one
that function entry, the runtime's entry stub and the hostcall path read too. With several
results the callee gets a hidden return-area pointer in rdi; a caller passes, as the area, the
slots where the results will sit on its own operand stack, so they arrive in place with no
copying.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Tuple

from ...module.abi import (GPR, GUEST_FLOAT_ARG_REGS, GUEST_INT_ARG_REGS, SLOT_WORD, STACK,
                           FUNCREF, VMCTX_TYPE_IDS, call_layout)
from ...module.traps import TrapCode
from ...wasm.types import FuncType
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, fits_i32
from ..x86_64.registers import CC_E, CC_NE, GPR_NAMES, R10, R11, R14, RSP, XMM
from . import tables
from .context import (CONST, IN_XMM, REG, SLOT, XTMP, parallel_move, require_num, result_reg,
                      signed as _signed, width)

if TYPE_CHECKING:
    from .function import FunctionCompiler

ARG_REGS = tuple(GPR_NAMES.index(r) for r in GUEST_INT_ARG_REGS)
FLOAT_ARG_REGS = tuple(XMM[int(r[3:])] for r in GUEST_FLOAT_ARG_REGS)


def arg_homes(params, results=()) -> List[int]:
    """Where each argument travels (``module.abi.call_layout``): a register of its class or, as
    ``-1 - k``, the k-th slot word of stack arguments. With several results the hidden return-area
    pointer takes rdi and the integer arguments shift along."""
    homes = []
    for loc in call_layout(tuple(params), tuple(results)).params:
        if loc.kind == STACK:
            homes.append(-1 - loc.index)
        else:
            homes.append((ARG_REGS if loc.kind == GPR else FLOAT_ARG_REGS)[loc.index])
    return homes


def op_call(cg: FunctionCompiler, _, callee, off):
    # an imported function is called through its trampoline (abi.IMPORT_TRAMPOLINE_SIZE),
    # so it is an ordinary direct call here; the driver resolves the target either way
    ftype = cg.env.func_types[callee]
    call_with(cg, ftype, lambda: cg.calls.append((cg.asm.call_rel32(), callee)))


def op_call_indirect(cg: FunctionCompiler, _, imm, off):
    """Look the record up, check it, call it. A record of this instance (r14 = its vmctx) is
    called directly at its code; any other -- another instance's function, a host function --
    through its ``func``, which switches instances or leaves for the host (``abi.FUNCREF``)."""
    ctx = cg.ctx
    type_index, table = imm
    env = cg.env
    type_id = env.type_ids[type_index]
    ftype = env.types[type_id]
    require_num(ftype.params, "parameters")
    stack = cg.stack
    ctx.move_to(len(stack) - 1, R10)
    stack.pop()
    asm = cg.asm
    tables.entry_address(cg, table, off, TrapCode.TableOutOfBounds)   # "undefined element"
    asm.mov_rm(64, R10, (R10, NO_INDEX, 1, 0))                     # the record, or null
    asm.test_rr(64, R10, R10)
    asm.jcc(CC_E, cg.trap_label(TrapCode.IndirectCallToNull, off))
    asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_TYPE_IDS))
    asm.mov_rm(64, R11, (R11, NO_INDEX, 1, 8 * type_id))           # the signature id wanted
    asm.alu_rm(X.CMP, 64, R11, (R10, NO_INDEX, 1, FUNCREF["type_id"]))
    asm.jcc(CC_NE, cg.trap_label(TrapCode.BadSignature, off))

    def emit() -> None:          # one call, to target if r14 is the record's vmctx, else func
        asm.mov_rm(64, R11, (R10, NO_INDEX, 1, FUNCREF["func"]))
        asm.alu_rm(X.CMP, 64, R14, (R10, NO_INDEX, 1, FUNCREF["vmctx"]))
        asm.cmov_rm(CC_E, 64, R11, (R10, NO_INDEX, 1, FUNCREF["target"]))
        asm.call_r(R11)
    call_with(cg, ftype, emit)


def call_with(cg: FunctionCompiler, ftype: FuncType, emit_call: Callable[[], None]) -> None:
    """Arguments per the SysV convention, the call, and the result in rax/xmm0 (several:
    in the slots the return area pointed at). Everything but the arguments that lives in a
    scratch register is spilled first (caller-saved); r10 and r11 are free for the call
    target and temporaries."""
    ctx = cg.ctx
    require_num(ftype.params, "parameters")
    require_num(ftype.results, "results")
    asm = cg.asm
    stack = cg.stack
    ctx.before_call()
    nargs = len(ftype.params)
    first = len(stack) - nargs
    for i in range(first):
        if stack[i][0] == REG:
            ctx.spill(i)
    args = stack[first:]
    multi = len(ftype.results) > 1
    homes = arg_homes(ftype.params, ftype.results)
    nstack = call_layout(ftype.params, ftype.results).stack_words
    outgoing = 0
    if nstack:
        outgoing = (SLOT_WORD * nstack + 15) & ~15
        cg.max_outgoing = max(cg.max_outgoing, outgoing)
        asm.alu_ri(X.SUB, 64, RSP, outgoing)
        ctx.frame.rsp_adjust = outgoing
        for e, home in zip(args, homes):
            if home >= 0:
                continue
            dst = (RSP, NO_INDEX, 1, SLOT_WORD * (-1 - home))
            w = width(e[2])
            if e[0] == CONST and (w == 32 or fits_i32(_signed(e[1], 64))):
                asm.mov_mi(w, dst, _signed(e[1], w))
            elif e[0] == REG:
                ctx.store_reg(e[2], dst, e[1])
            elif e[0] == CONST:
                asm.mov_ri(64, R11, e[1])
                asm.mov_mr(64, dst, R11)
            else:
                if IN_XMM[e[2]]:   # bits are bits: memory to memory through r11
                    asm.mov_rm(w, R11, ctx.mem_of(e))
                else:
                    ctx.load(e, R11)
                asm.mov_mr(64, dst, R11)
    in_regs = [(home, e) for e, home in zip(args, homes) if home >= 0]
    _parallel_move(cg, [m for m in in_regs if not IN_XMM[m[1][2]]], False)
    _parallel_move(cg, [m for m in in_regs if IN_XMM[m[1][2]]], True)
    for dst, e in in_regs:
        if e[0] != REG:
            ctx.load(e, dst)
    del stack[first:]
    if multi:
        # the return area is the slots the results will occupy: result i lands in the slot
        # of stack position first + i, which is where the abstract stack then finds it
        ctx.slot_mem(first + len(ftype.results) - 1)
        asm.lea(64, ARG_REGS[0], ctx.slot_mem(first))
    cg.makes_calls = True
    emit_call()
    if outgoing:
        asm.alu_ri(X.ADD, 64, RSP, outgoing)
        ctx.frame.rsp_adjust = 0
    ctx.after_call()
    if multi:
        for k, t in enumerate(ftype.results):
            stack.append((SLOT, first + k, t))
    elif ftype.results:
        t = ftype.results[0]
        ctx.claim(result_reg(t), t)
        stack.append((REG, result_reg(t), t))


def _parallel_move(cg: FunctionCompiler, moves: List[Tuple[int, tuple]], xmm: bool) -> None:
    """Move each (destination register, register entry) pair at once, breaking cycles with
    r11 or xmm15."""
    mov = cg.asm.movaps if xmm else (lambda d, s: cg.asm.mov_rr(64, d, s))
    parallel_move(mov, XTMP if xmm else R11, [(dst, e[1]) for dst, e in moves if e[0] == REG])

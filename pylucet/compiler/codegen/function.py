"""One function's code generation: the main loop over its instructions, its prologue and
epilogue, the frame's patched sizes, and the trap sites and out-of-line stubs it collects.

``FunctionCompiler`` is what every handler gets (as ``cg``): the ``CodeGenContext`` (``cg.ctx``)
with the value stack, the registers and the frame, the control stack, and what the function
emits besides code (trap sites, call relocations, jump tables, CPU features). ``cg.stack`` and
``cg.asm`` are the context's own stack and assembler, named here for the handlers that need
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from ...errors import Unsupported
from ...module.abi import SLOT_WORD, VMCTX_STACK_LIMIT
from ...module.traps import TrapCode, TrapSite
from ...wasm.opcodes import OPS, Op
from ...wasm.types import FunctionBody
from ..env import ModuleEnv
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, Assembler
from ..x86_64.registers import CC_B, R11, R14, RSP
from . import control
from .call import ARG_REGS, arg_homes
from .context import (FLAGS, I32, IN_XMM, REG, CodeGenContext, Frame, parallel_move, require_num,
                      width)
from .dispatch import DISPATCH

_NOP7 = b"\x0f\x1f\x80\x00\x00\x00\x00"
_FUSE_FLAGS = (Op.BR_IF, Op.IF, Op.SELECT, Op.SELECT_T, Op.I32_EQZ)
"""Instructions that take a compare's result straight from the flags."""
_BLOCK_OPS = (Op.BLOCK, Op.LOOP, Op.IF)


@dataclass
class CompiledFunction:
    code: bytes
    traps: List[TrapSite]          # sorted by code_offset
    calls: List[Tuple[int, int]]   # (offset of a rel32 field in code, callee function index)
    features: Set[str] = field(default_factory=set)


def compile_function(env: ModuleEnv, func_index: int, body: FunctionBody,
                     instrs: list) -> CompiledFunction:
    """Machine code for defined function ``func_index`` from its validated instructions."""
    return FunctionCompiler(env, func_index, body, instrs).compile()


class FunctionCompiler:
    def __init__(self, env: ModuleEnv, func_index: int, body: FunctionBody, instrs: list):
        ftype = env.func_types[func_index]
        require_num(ftype.params, "parameters")
        require_num(ftype.results, "results")
        require_num(body.locals, "locals")
        self.env = env
        self.func_index = func_index
        self.body = body
        self.instrs = instrs
        self.ftype = ftype
        self.return_area = len(ftype.results) > 1
        self.local_types = ftype.params + body.locals
        self.asm = Assembler()
        self.frame = Frame(self.local_types, instrs, self.return_area,
                           arg_homes(ftype.params, ftype.results))
        self.ctx = CodeGenContext(self.asm, self.frame)
        self.stack = self.ctx.stack
        self.ctrl: List[control.Ctrl] = []
        self.unreachable = False
        self.skip_depth = 0
        self.pc = 0
        self.max_outgoing = 0
        self.makes_calls = False
        self.traps: List[TrapSite] = []
        self.trap_stubs: List[Tuple[int, TrapCode, int, Optional[X.Mem]]] = []
        self.jump_tables: List[Tuple[int, List[int]]] = []
        self.calls: List[Tuple[int, int]] = []
        self.features: Set[str] = set()
        self.patch_stack_check = self.patch_sub = self.patch_add = 0
        self.arg_fixups: List[Tuple[int, int]] = []

    # --- the main loop ---------------------------------------------------------------------
    def compile(self) -> CompiledFunction:
        asm = self.asm
        self._prologue()
        self.ctrl.append(control.Ctrl(control.K_FUNC, asm.new_label(), 0, self.ftype.results))
        dispatch = DISPATCH
        instrs = self.instrs
        n = len(instrs)
        block_ops = _BLOCK_OPS
        end, else_ = Op.END, Op.ELSE
        remap = self.frame.remap
        remap_pcs = remap.pcs if remap is not None else ()
        ctx = self.ctx
        pc = 0
        while pc < n:
            op, imm, off = instrs[pc]
            pc += 1
            self.pc = pc
            if remap_pcs and pc - 1 in remap_pcs:
                remap.visit(ctx, pc - 1, op, imm, self.unreachable)
            if self.unreachable:
                # Dead code after br/return/unreachable: skip to the end of the enclosing block
                # (the validator has already type-checked it).
                if op in block_ops:
                    self.skip_depth += 1
                    continue
                if op == end or op == else_:
                    if self.skip_depth:
                        if op == end:
                            self.skip_depth -= 1
                        continue
                else:
                    continue
            entry = dispatch.get(op)
            if entry is None:
                raise Unsupported(f"{OPS[op].name} is not supported yet")
            entry[0](self, entry[1], imm, off)
        assert not (self.frame.leaf and self.makes_calls), \
            "a call in a function taken for a leaf (context._CALLING_OPS)"
        assert asm.calls == self.ctx.calls, "a call not made through before_call/after_call"
        self._emit_out_of_line()
        self._finish_frame()
        assert asm.unresolved() == 0
        self.traps.sort()
        return CompiledFunction(bytes(asm.code), self.traps, self.calls, self.features)

    # --- frame -----------------------------------------------------------------------------
    def _prologue(self) -> None:
        asm = self.asm
        frame = self.frame
        ctx = self.ctx
        # The stack check reserves everything this frame will take; the size is patched later.
        asm.lea(64, R11, (RSP, NO_INDEX, 1, -0x1000))
        self.patch_stack_check = asm.disp32_pos()
        asm.alu_rm(X.CMP, 64, R11, (R14, NO_INDEX, 1, VMCTX_STACK_LIMIT))
        asm.jcc(CC_B, self.trap_label(TrapCode.StackOverflow, self.body.start))
        for r in frame.saved_regs:
            asm.push(r)
        asm.alu_ri(X.SUB, 64, RSP, 0x1000)
        self.patch_sub = len(asm.code) - 4
        if self.return_area:
            asm.mov_mr(64, (RSP, NO_INDEX, 1, frame.ret_disp), ARG_REGS[0])
        # parameters to their homes: first the stores to the frame, then the register moves all
        # at once (a leaf's locals may live in argument registers), then the stack arguments
        params = self.ftype.params
        moves = []
        on_stack = []
        for i, (t, home) in enumerate(zip(params, arg_homes(params, self.ftype.results))):
            reg = frame.local_reg[i]
            if reg < 0 and i not in frame.frame_locals_set:
                continue
            if home < 0:
                on_stack.append((i, t, home))
            elif reg >= 0 and IN_XMM[t]:   # xmm0..7 to xmm8..14: no move reads another's home
                asm.movaps(reg, home)
            elif reg >= 0:
                moves.append((reg, home, width(t)))
            else:
                ctx.store_reg(t, frame.local_mem(i), home)
        widths = {dst: w for dst, _, w in moves}
        widths[R11] = 64
        parallel_move(lambda d, s: asm.mov_rr(widths[d], d, s), R11,
                      [(dst, src) for dst, src, _ in moves])
        for i, t, home in on_stack:
            # incoming stack argument: its offset depends on the frame size (patched)
            reg, w = frame.local_reg[i], width(t)
            known = 8 * len(frame.saved_regs) + 8 + SLOT_WORD * (-1 - home)
            dst = reg if reg >= 0 and not IN_XMM[t] else R11
            asm.mov_rm(w, dst, (RSP, NO_INDEX, 1, 0x1000))
            self.arg_fixups.append((asm.disp32_pos(), known))
            if reg >= 0 and IN_XMM[t]:
                asm.movd_xr(w, reg, R11)
            elif reg < 0:
                asm.mov_mr(w, frame.local_mem(i), R11)
        # declared locals start at zero
        zeroed = False
        for i in range(len(params), len(self.local_types)):
            reg = frame.local_reg[i]
            if reg >= 0 and IN_XMM[self.local_types[i]]:
                asm.bitwise_ps(X.XORPS, reg, reg)
            elif reg >= 0:
                asm.alu_rr(X.XOR, 32, reg, reg)
            elif i in frame.frame_locals_set:
                if not zeroed:
                    asm.alu_rr(X.XOR, 32, R11, R11)
                    zeroed = True
                asm.mov_mr(64, frame.local_mem(i), R11)
        control.interrupt_check(self)

    def epilogue(self) -> None:
        asm = self.asm
        asm.alu_ri(X.ADD, 64, RSP, 0x1000)
        self.patch_add = len(asm.code) - 4
        for r in reversed(self.frame.saved_regs):
            asm.pop(r)
        asm.ret()

    def _finish_frame(self) -> None:
        asm = self.asm
        pushed = 8 * len(self.frame.saved_regs)
        frame = self.frame.size(self.makes_calls)
        if frame:
            asm.patch_i32(self.patch_sub, frame)
            asm.patch_i32(self.patch_add, frame)
        else:   # no frame after all: the 7-byte sub/add become one 7-byte nop each
            for pos in (self.patch_sub, self.patch_add):
                asm.code[pos - 3:pos + 4] = _NOP7
        asm.patch_i32(self.patch_stack_check, -(frame + pushed + self.max_outgoing))
        for pos, known in self.arg_fixups:
            asm.patch_i32(pos, frame + known)

    # --- traps and out-of-line code ----------------------------------------------------------
    def trap_label(self, code: TrapCode, wasm_offset: int,
                   probe: Optional[X.Mem] = None) -> int:
        """Where a failed check jumps: a stub that faults with ``code``, by ``ud2`` or, given
        ``probe``, by reading that (out-of-bounds, never mapped) heap address."""
        label = self.asm.new_label()
        self.trap_stubs.append((label, code, wasm_offset, probe))
        return label

    def trap_here(self, code: TrapCode, wasm_offset: int) -> None:
        """The next instruction emitted may fault on purpose with ``code``."""
        self.traps.append(TrapSite(len(self.asm.code), code, wasm_offset))

    def _emit_out_of_line(self) -> None:
        asm = self.asm
        for label, code, wasm_offset, probe in self.trap_stubs:
            asm.bind(label)
            self.trap_here(code, wasm_offset)
            if probe is not None:
                asm.movzx_rm(8, R11, probe)
            asm.ud2()   # after a probe: reached only if it was mapped, and then a fatal fault
        for table, targets in self.jump_tables:
            asm.code += b"\xcc" * (-len(asm.code) % 4)
            asm.bind(table)
            base = len(asm.code)
            for t in targets:
                asm.table_entry(t, base)

    # --- looking one instruction ahead, for fusions --------------------------------------------
    def fuse_next(self) -> bool:
        """Whether the next instruction consumes a condition straight from the flags."""
        return self.pc < len(self.instrs) and self.instrs[self.pc][0] in _FUSE_FLAGS

    def update_target(self) -> int:
        """The local the next instruction writes, if it lives in a register (else -1)."""
        if self.pc < len(self.instrs):
            op, idx, _ = self.instrs[self.pc]
            if (op == Op.LOCAL_SET or op == Op.LOCAL_TEE) and self.frame.local_reg[idx] >= 0:
                return idx
        return -1

    def push_cond(self, cc: int) -> None:
        """Push a condition that is in the flags: as flags if the next instruction wants them,
        else as a 0/1 value."""
        if self.fuse_next():
            self.stack.append((FLAGS, cc, I32))
        else:
            reg = self.ctx.alloc()
            self.asm.setcc(cc, reg)
            self.asm.movzx_rr(8, reg, reg)
            self.stack.append((REG, reg, I32))

"""Single-pass code generation: one validated function body in, x86-64 machine code out.

The design follows V8's Liftoff and wasmtime's Winch: one walk over the instructions, no IR, a
dispatch table from opcode to handler, and an *abstract* operand stack (see ``valuestack``):
constants, lazy local reads, registers, spill slots and compare results in the flags. So
constants fold into immediates, values stay in registers, compare (or its ``eqz``) +
``br_if``/``if``/``select`` fuse into ``cmp; jcc``/``cmov``, and ``x = x op y`` on a register
local updates that register in place. Handlers may peek at the next instruction for these
fusions; nothing else looks ahead.

Locals: a cheap pre-scan counts each local's uses (a use inside loops counts more) and the
busiest i32/i64 locals get the callee-saved registers in ``LOCAL_REGS`` for the whole function
(so calls never disturb them); the other locals live in frame slots; unused ones get nothing.
Float locals always live in the frame: every xmm register is caller-saved, so a register home
would have to be saved around each call.

Merge strategy (the canonical state at every label). On entry to ``block``/``loop``/``if``,
every entry on the operand stack that is a register or a lazy local is spilled to its slot;
constants stay. The block's params (the entries on top at entry) belong to the block; the
entries under them cannot be touched by code inside, so at every label they are the same
constants and slots on every path, and every scratch register is free. A label's values sit on
top: a single one in ``rax`` (``xmm0`` for a float), so a branch only moves it there and jumps
and ``br_table`` needs no per-target code; several values in the slots of their stack positions
(from the block's height up), where a branch stores them. A loop's label takes its params, and
always in their slots, which its entry fills. A branch stores into slots that values still live
on the fall-through path may occupy, so ``br_if`` does that only on its taken path, and a
``br_table`` with such a target gets a small stub per target. An ``if``'s params are constants
and slots after the entry spill, so its else arm starts from the same entries; an ``if`` with
params and no ``else`` gets an empty else arm that passes them on. Registers are also spilled
at calls (they are caller-saved) and when the allocator runs out.

Several results. Per ``module.abi``, a function with several results gets a hidden return-area
pointer in ``rdi``, which the prologue keeps in the frame; its end (the function body's label)
has the results in slots 0..n-1 like any multi-value label, and copies them to the area. A caller
passes, as the area, the slots where the results will sit on its own operand stack, so they
arrive in place with no copying.

Frame (``rsp``-relative, 16-byte aligned at calls)::

    [incoming stack arguments]  [return address]  [pushed callee-saved registers]
    [operand stack slots, one per stack position] [return-area pointer, if several results]
    [locals living in the frame]   <- rsp

Its size is only known after the body, so the prologue's ``sub rsp``, the epilogue's ``add rsp``
and the stack limit check are patched at the end. Outgoing stack arguments are pushed below it
for the duration of a call (``rsp_adjust``).

Floats: SSE scalar instructions, with the wasm rules x86 lacks spelled out: min/max and the
float-to-integer conversions check NaN and their edge cases with ``ucomis`` first, and abs/neg/
copysign are sign-bit masks so NaN payloads pass unchanged. A float compare fuses like an
integer one (its 'above' conditions are false when unordered); ``eq``/``ne``, which also need
the parity flag, become a 0/1 value first.

Traps: heap accesses and divisions fault on purpose and get a trap site at their own offset;
explicit checks jump to out-of-line ``ud2`` stubs at the end of the function, one per check so
each trap names its wasm instruction. The bulk memory range checks are explicit too (nothing
may be written before the trap), but their stubs read an out-of-bounds heap byte instead of
``ud2``: the runtime believes a heap trap only for a fault inside the heap's address space.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..errors import Unsupported
from ..module.abi import (GPR, RESULT_SLOT_SIZE, STACK, TABLE_DESC, TABLE_DESC_SIZE, TABLE_ENTRY,
                          TABLE_ENTRY_SIZE, POLL_INSN_SIZE, VMCTX_GLOBALS, VMCTX_MEMORY_SIZE,
                          VMCTX_POLL, VMCTX_STACK_LIMIT, VMCTX_TABLES, Libcall, call_layout,
                          vmctx_libcall)
from ..module.traps import TrapCode, TrapSite
from ..wasm.opcodes import OPS, Op
from ..wasm.types import FunctionBody, FuncType, ValType
from .env import ModuleEnv
from .valuestack import (CONST, F32, F64, FLAGS, FLOAT_TYPES, I32, I64, INT_TYPES, LOCAL, MASK,
                         REG, SLOT, XTMP, ValueStack, signed as _signed, width as _width)
from .x86_64 import encoding as X
from .x86_64.encoding import NO_INDEX, fits_i32
from .x86_64.registers import (CC_A, CC_AE, CC_B, CC_BE, CC_E, CC_G, CC_GE, CC_L, CC_LE, CC_NE,
                               CC_NP, CC_O, CC_P, CC_S, R8, R9, R10, R11, R12, R13, R14, R15, RAX,
                               RBP, RBX, RCX, RDI, RDX, RSI, RSP, SWAPPED_CC, XMM)

LOCAL_REGS = (RBX, R15, R12, R13, RBP)
ARG_REGS = (RDI, RSI, RDX, RCX, R8, R9)
FLOAT_ARG_REGS = XMM[:8]
RESULT_REG = RAX
FLOAT_RESULT_REG = XMM[0]

# control frame kinds
K_BLOCK, K_LOOP, K_IF, K_ELSE, K_FUNC = range(5)
_NOP7 = b"\x0f\x1f\x80\x00\x00\x00\x00"
_FUSE_FLAGS = (Op.BR_IF, Op.IF, Op.SELECT, Op.SELECT_T, Op.I32_EQZ)
"""Instructions that take a compare's result straight from the flags."""


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


def _require_num(types, what: str) -> None:
    for t in types:
        if t not in INT_TYPES and t not in FLOAT_TYPES:
            raise Unsupported(f"{t.text} {what} are not supported yet")


def _result_reg(t: ValType) -> int:
    return FLOAT_RESULT_REG if t in FLOAT_TYPES else RESULT_REG


def _arg_homes(params, results=()) -> List[int]:
    """Where each argument travels (``module.abi.call_layout``): a register of its class or, as
    ``-1 - k``, the k-th 8-byte stack argument. With several results the hidden return-area
    pointer takes rdi and the integer arguments shift along."""
    homes = []
    for loc in call_layout(tuple(params), tuple(results)).params:
        if loc.kind == STACK:
            homes.append(-1 - loc.index)
        else:
            homes.append((ARG_REGS if loc.kind == GPR else FLOAT_ARG_REGS)[loc.index])
    return homes


class Ctrl:
    """One entry of the control stack: a block, loop, if/else or the function body."""

    __slots__ = ("kind", "label", "else_label", "height", "params", "results", "branched",
                 "param_entries")

    def __init__(self, kind: int, label: int, height: int, results: tuple, else_label: int = -1,
                 params: tuple = ()):
        self.kind = kind
        self.label = label            # where a branch to this frame goes
        self.else_label = else_label
        self.height = height          # operand stack height at entry, below the params
        self.params = params
        self.results = results
        self.branched = False         # some branch targets the end label
        self.param_entries: List[tuple] = []   # an if's params as at entry, for its else arm

    def label_types(self, at_end: bool = False) -> tuple:
        """Types of the values a branch to this frame carries (a loop's label takes its
        parameters), or, ``at_end``, that its end leaves."""
        return self.params if self.kind == K_LOOP and not at_end else self.results

    def in_slots(self, at_end: bool = False) -> bool:
        """Whether the branch label (or the end) wants its values in their stack-position
        slots rather than in rax/xmm0: several values always do, and so does a loop's
        parameter, because the loop head was entered with its params in their slots."""
        if self.kind == K_LOOP and not at_end:
            return bool(self.params)
        return len(self.results) > 1


class FunctionCompiler(ValueStack):
    def __init__(self, env: ModuleEnv, func_index: int, body: FunctionBody, instrs: list):
        self.env = env
        self.func_index = func_index
        self.body = body
        self.instrs = instrs
        ftype = env.func_types[func_index]
        _require_num(ftype.params, "parameters")
        _require_num(ftype.results, "results")
        _require_num(body.locals, "locals")
        super().__init__()
        self.return_area = len(ftype.results) > 1
        self.ftype = ftype
        self.local_types = ftype.params + body.locals
        self.ctrl: List[Ctrl] = []
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

    # --- frame and locals ------------------------------------------------------------------
    def _assign_locals(self) -> None:
        """Homes for the locals: callee-saved registers for the most used, frame slots for the
        rest, nothing for locals never touched."""
        n = len(self.local_types)
        uses = [0] * n
        weight, loops = 1, []
        get, set_, tee = Op.LOCAL_GET, Op.LOCAL_SET, Op.LOCAL_TEE
        loop, block, if_, end = Op.LOOP, Op.BLOCK, Op.IF, Op.END
        for op, imm, _ in self.instrs:
            if op == get or op == set_ or op == tee:
                uses[imm] += weight
            elif op == loop:
                loops.append(True)
                weight = 8 ** min(loops.count(True), 4)
            elif op == block or op == if_:
                loops.append(False)
            elif op == end and loops:
                if loops.pop():
                    weight = 8 ** min(loops.count(True), 4)
        # every xmm register is caller-saved, so float locals always live in the frame
        types = self.local_types
        ranked = sorted((i for i in range(n) if uses[i] and types[i] in INT_TYPES),
                        key=lambda i: -uses[i])
        self.local_reg = [-1] * n
        self.local_disp = [0] * n
        for i, reg in zip(ranked, LOCAL_REGS):
            self.local_reg[i] = reg
        self.saved_regs = [r for r in LOCAL_REGS if r in self.local_reg]
        in_frame = sorted(i for i in range(n) if uses[i] and self.local_reg[i] < 0)
        for slot, i in enumerate(in_frame):
            self.local_disp[i] = 8 * slot
        self.frame_locals = in_frame
        # the hidden return-area pointer (several results) sits between the locals and slots
        self.ret_disp = 8 * len(in_frame)
        self.spill_base = 8 * (len(in_frame) + int(self.return_area))

    def _prologue(self) -> None:
        asm = self.asm
        # The stack check reserves everything this frame will take; the size is patched later.
        asm.lea(64, R11, (RSP, NO_INDEX, 1, -0x1000))
        self.patch_stack_check = asm.disp32_pos()
        asm.alu_rm(X.CMP, 64, R11, (R14, NO_INDEX, 1, VMCTX_STACK_LIMIT))
        asm.jcc(CC_B, self._trap_label(TrapCode.StackOverflow, self.body.start))
        for r in self.saved_regs:
            asm.push(r)
        asm.alu_ri(X.SUB, 64, RSP, 0x1000)
        self.patch_sub = len(asm.code) - 4
        if self.return_area:
            asm.mov_mr(64, (RSP, NO_INDEX, 1, self.ret_disp), ARG_REGS[0])
        # parameters to their homes
        params = self.ftype.params
        self.arg_fixups = []
        for i, (t, home) in enumerate(zip(params, _arg_homes(params, self.ftype.results))):
            reg, w = self.local_reg[i], _width(t)
            in_frame = i in self.frame_locals_set
            if reg < 0 and not in_frame:
                continue
            if home >= 0:
                if reg >= 0:
                    asm.mov_rr(w, reg, home)
                else:
                    self._store_reg(t, self._local_mem(i), home)
            else:
                # incoming stack argument: its offset depends on the frame size (patched)
                known = 8 * len(self.saved_regs) + 8 + 8 * (-1 - home)
                dst = reg if reg >= 0 else R11
                asm.mov_rm(w, dst, (RSP, NO_INDEX, 1, 0x1000))
                self.arg_fixups.append((asm.disp32_pos(), known))
                if reg < 0:
                    asm.mov_mr(w, self._local_mem(i), R11)
        # declared locals start at zero
        zeroed = False
        for i in range(len(params), len(self.local_types)):
            reg = self.local_reg[i]
            if reg >= 0:
                asm.alu_rr(X.XOR, 32, reg, reg)
            elif i in self.frame_locals_set:
                if not zeroed:
                    asm.alu_rr(X.XOR, 32, R11, R11)
                    zeroed = True
                asm.mov_mr(64, self._local_mem(i), R11)
        self._interrupt_check()

    def _interrupt_check(self) -> None:
        """Poll for an interruption (kill switch, timeout, Ctrl-C): a load from the slot's poll
        page, which faults once the host revokes it (``abi.VMCTX_POLL``). Only at function
        entry and loop headers, where every live value sits in a callee-saved register or the
        frame (pylucet_interrupt saves just the callee-saved registers, and the guest may be
        resumed right here) and r11 and the flags are dead."""
        if not self.env.interrupt_checks:
            return
        start = len(self.asm.code)
        self.asm.mov_rm(32, R11, (R14, NO_INDEX, 1, VMCTX_POLL))
        assert len(self.asm.code) - start == POLL_INSN_SIZE

    def _epilogue(self) -> None:
        asm = self.asm
        asm.alu_ri(X.ADD, 64, RSP, 0x1000)
        self.patch_add = len(asm.code) - 4
        for r in reversed(self.saved_regs):
            asm.pop(r)
        asm.ret()

    def _finish_frame(self) -> None:
        asm = self.asm
        pushed = 8 * len(self.saved_regs)
        frame = self.spill_base + 8 * self.max_slots
        if self.makes_calls:   # the SysV convention wants rsp 16-byte aligned at each call
            frame += (-(8 + pushed + frame)) % 16
        if frame:
            asm.patch_i32(self.patch_sub, frame)
            asm.patch_i32(self.patch_add, frame)
        else:   # no frame after all: the 7-byte sub/add become one 7-byte nop each
            for pos in (self.patch_sub, self.patch_add):
                asm.code[pos - 3:pos + 4] = _NOP7
        asm.patch_i32(self.patch_stack_check, -(frame + pushed + self.max_outgoing))
        for pos, known in self.arg_fixups:
            asm.patch_i32(pos, frame + known)

    def _trap_label(self, code: TrapCode, wasm_offset: int,
                    probe: Optional[X.Mem] = None) -> int:
        """Where a failed check jumps: a stub that faults with ``code``, by ``ud2`` or, given
        ``probe``, by reading that (out-of-bounds, never mapped) heap address."""
        label = self.asm.new_label()
        self.trap_stubs.append((label, code, wasm_offset, probe))
        return label

    def _trap_here(self, code: TrapCode, wasm_offset: int) -> None:
        """The next instruction emitted may fault on purpose with ``code``."""
        self.traps.append(TrapSite(len(self.asm.code), code, wasm_offset))

    # --- the main loop ---------------------------------------------------------------------
    def compile(self) -> CompiledFunction:
        self._assign_locals()
        self.frame_locals_set = set(self.frame_locals)
        asm = self.asm
        self._prologue()
        self.ctrl.append(Ctrl(K_FUNC, asm.new_label(), 0, self.ftype.results))
        dispatch = _DISPATCH
        instrs = self.instrs
        n = len(instrs)
        block_ops = (Op.BLOCK, Op.LOOP, Op.IF)
        end, else_ = Op.END, Op.ELSE
        pc = 0
        while pc < n:
            op, imm, off = instrs[pc]
            pc += 1
            self.pc = pc
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
        self._emit_out_of_line()
        self._finish_frame()
        assert asm.unresolved() == 0
        self.traps.sort()
        return CompiledFunction(bytes(asm.code), self.traps, self.calls, self.features)

    def _emit_out_of_line(self) -> None:
        asm = self.asm
        for label, code, wasm_offset, probe in self.trap_stubs:
            asm.bind(label)
            self._trap_here(code, wasm_offset)
            if probe is not None:
                asm.movzx_rm(8, R11, probe)
            asm.ud2()   # after a probe: reached only if it was mapped, and then a fatal fault
        for table, targets in self.jump_tables:
            asm.code += b"\xcc" * (-len(asm.code) % 4)
            asm.bind(table)
            base = len(asm.code)
            for t in targets:
                asm.table_entry(t, base)

    def _fuse_next(self) -> bool:
        """Whether the next instruction consumes a condition straight from the flags."""
        return self.pc < len(self.instrs) and self.instrs[self.pc][0] in _FUSE_FLAGS

    def _update_target(self) -> int:
        """The local the next instruction writes, if it lives in a register (else -1)."""
        if self.pc < len(self.instrs):
            op, idx, _ = self.instrs[self.pc]
            if (op == Op.LOCAL_SET or op == Op.LOCAL_TEE) and self.local_reg[idx] >= 0:
                return idx
        return -1

    def _push_cond(self, cc: int) -> None:
        """Push a condition that is in the flags: as flags if the next instruction wants them,
        else as a 0/1 value."""
        if self._fuse_next():
            self.stack.append((FLAGS, cc, I32))
        else:
            reg = self._alloc()
            self.asm.setcc(cc, reg)
            self.asm.movzx_rr(8, reg, reg)
            self.stack.append((REG, reg, I32))

    # --- constants, locals, globals ----------------------------------------------------------
    def op_const(self, w, imm, off):
        self.stack.append((CONST, imm & MASK[w], I64 if w == 64 else I32))

    def op_local_get(self, _, idx, off):
        self.stack.append((LOCAL, idx, self.local_types[idx]))

    def op_local_set(self, tee, idx, off):
        e = self.stack.pop()
        if e[0] == LOCAL and e[1] == idx:
            if tee:
                self.stack.append(e)
            return
        self._detach_local(idx)
        t = self.local_types[idx]
        w = _width(t)
        asm = self.asm
        home = self.local_reg[idx]
        kind, val = e[0], e[1]
        if home >= 0:
            if kind == CONST and val == 0:
                asm.alu_rr(X.XOR, 32, home, home)
            elif kind == REG:
                asm.mov_rr(w, home, val)
                self._free(val)
            else:
                self._load(e, home)
        else:
            mem = self._local_mem(idx)
            if kind == CONST and fits_i32(_signed(val, w)):
                asm.mov_mi(w, mem, val if w == 32 else _signed(val, w))
            elif kind == CONST:
                asm.mov_ri(64, R11, val)
                asm.mov_mr(w, mem, R11)
            else:
                reg, owned = self._reg_of(e)
                self._store_reg(t, mem, reg)
                if owned:
                    self._free(reg, t)
        if tee:
            self.stack.append((LOCAL, idx, t))

    def _global_type(self, idx: int) -> ValType:
        t = self.env.global_types[idx]
        _require_num((t,), "globals")
        return t

    def op_global_get(self, _, idx, off):
        t = self._global_type(idx)
        reg = self._alloc(t)
        asm = self.asm
        base = R11 if t in FLOAT_TYPES else reg
        asm.mov_rm(64, base, (R14, NO_INDEX, 1, VMCTX_GLOBALS))
        mem = (base, NO_INDEX, 1, self.env.global_offsets[idx])
        if t in FLOAT_TYPES:
            asm.sse_op(X.MOVS_LOAD, _width(t), reg, mem)
        else:
            asm.mov_rm(_width(t), reg, mem)
        self.stack.append((REG, reg, t))

    def op_global_set(self, _, idx, off):
        t = self._global_type(idx)
        w = _width(t)
        e = self.stack.pop()
        asm = self.asm
        mem = (R11, NO_INDEX, 1, self.env.global_offsets[idx])
        if e[0] == CONST and fits_i32(_signed(e[1], w)):
            asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_GLOBALS))
            asm.mov_mi(w, mem, _signed(e[1], w))
            return
        reg, owned = self._reg_of(e)     # before r11 is taken: a float constant needs it
        asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_GLOBALS))
        self._store_reg(t, mem, reg)
        if owned:
            self._free(reg, t)

    # --- integer arithmetic ------------------------------------------------------------------
    def op_alu(self, arg, imm, off):
        """add, sub, and, or, xor."""
        op, w, fold = arg
        stack = self.stack
        b = stack.pop()
        a = stack.pop()
        t = a[2]
        if a[0] == CONST and b[0] == CONST:
            stack.append((CONST, fold(a[1], b[1]) & MASK[w], t))
            return
        if a[0] == LOCAL or b[0] == LOCAL:
            idx = self._update_target()
            if idx >= 0:
                if b[0] == LOCAL and b[1] == idx and op != X.SUB:
                    a, b = b, a
                if a[0] == LOCAL and a[1] == idx and not (b[0] == LOCAL and b[1] == idx):
                    # `x = x op y`: update x's register in place; the local.set is then a no-op
                    self._detach_local(idx)
                    self._alu_operand(op, w, self.local_reg[idx], b)
                    stack.append(a)
                    return
        if op != X.SUB and b[0] != CONST and (a[0] == CONST or (a[0] != REG and b[0] == REG)):
            a, b = b, a
        if a[0] != REG and b[0] == CONST and op in (X.ADD, X.SUB):
            # x + c into a fresh register straight from x's home, without a copy first
            src, owned = self._reg_of(a)
            disp = _signed(b[1], w) * (1 if op == X.ADD else -1)
            if fits_i32(disp):
                dst = src if owned else self._alloc()
                self.asm.lea(w, dst, (src, NO_INDEX, 1, disp))
                stack.append((REG, dst, t))
                return
            a = (REG, src, t) if owned else a
        dst = self._take(a)
        self._alu_operand(op, w, dst, b)
        stack.append((REG, dst, t))

    def op_mul(self, w, imm, off):
        stack = self.stack
        b = stack.pop()
        a = stack.pop()
        t = a[2]
        if a[0] == CONST and b[0] == CONST:
            stack.append((CONST, (a[1] * b[1]) & MASK[w], t))
            return
        if a[0] == CONST or (a[0] != REG and b[0] == REG):
            a, b = b, a
        asm = self.asm
        if b[0] == CONST and fits_i32(_signed(b[1], w)):
            src, owned = self._reg_of(a)
            dst = src if owned else self._alloc()
            asm.imul_rri(w, dst, src, _signed(b[1], w))
            stack.append((REG, dst, t))
            return
        dst = self._take(a)
        mem = self._mem_of(b)
        if mem is not None:
            asm.imul_rm(w, dst, mem)
        else:
            src, owned = self._reg_of(b)
            asm.imul_rr(w, dst, src)
            if owned:
                self._free(src)
        stack.append((REG, dst, t))

    def op_div(self, arg, imm, off):
        """div_s, div_u, rem_s, rem_u: the dividend in rax, the result in rax or rdx."""
        w, signed, rem = arg
        asm = self.asm
        stack = self.stack
        t = stack[-1][2]
        n = len(stack)
        b = stack[-1]
        if signed and b[0] == CONST and _signed(b[1], w) == -1:
            if rem:   # x rem_s -1 is 0 for every x (idiv would fault on INT_MIN)
                self._pop_free()
                self._pop_free()
                stack.append((CONST, 0, t))
                return
            self._pop_free()
            dst = self._take(stack.pop())
            asm.unary_r(X.NEG, w, dst)
            asm.jcc(CC_O, self._trap_label(TrapCode.IntegerOverflow, off))
            stack.append((REG, dst, t))
            return
        self._move_to(n - 2, RAX)
        self._evict(RDX)
        self.used |= 1 << RDX
        b = stack.pop()
        stack.pop()
        mem = self._mem_of(b)
        if mem is None:
            if b[0] == LOCAL:
                divisor, owned = self._reg_of(b)
            else:
                divisor, owned = self._take(b), True
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
                asm.jcc(CC_O, self._trap_label(TrapCode.IntegerOverflow, off))
            asm.jmp(done)
            asm.bind(do_div)
        if signed:
            asm.cdq(w)
        else:
            asm.alu_rr(X.XOR, 32, RDX, RDX)
        self._trap_here(TrapCode.IntegerDivByZero, off)
        if mem is not None:
            asm.unary_m(X.IDIV if signed else X.DIV, w, mem)
        else:
            asm.unary_r(X.IDIV if signed else X.DIV, w, divisor)
            if owned:
                self._free(divisor)
        asm.bind(done)
        self._free(RAX if rem else RDX)
        stack.append((REG, result, t))

    def op_shift(self, arg, imm, off):
        op, w, fold = arg
        asm = self.asm
        stack = self.stack
        b = stack[-1]
        if b[0] == CONST:
            stack.pop()
            a = stack.pop()
            count = b[1] & (w - 1)
            if a[0] == CONST:
                stack.append((CONST, fold(a[1], count, w) & MASK[w], a[2]))
                return
            dst = self._take(a)
            if count:
                asm.shift_ri(op, w, dst, count)
            stack.append((REG, dst, a[2]))
            return
        self._move_to(len(stack) - 1, RCX)
        stack.pop()
        a = stack.pop()
        dst = self._take(a)
        asm.shift_cl(op, w, dst)
        self._free(RCX)
        stack.append((REG, dst, a[2]))

    def op_bitcount(self, arg, imm, off):
        kind, w, feature, fold = arg
        e = self.stack.pop()
        if e[0] == CONST:
            self.stack.append((CONST, fold(e[1], w), e[2]))
            return
        src, owned = self._reg_of(e)
        dst = src if owned else self._alloc()
        self.asm.bitcount(kind, w, dst, src)
        self.features.add(feature)
        self.stack.append((REG, dst, e[2]))

    def op_eqz(self, w, imm, off):
        e = self.stack.pop()
        if e[0] == CONST:
            self.stack.append((CONST, int(e[1] == 0), I32))
            return
        if e[0] == FLAGS:       # eqz of a compare: the opposite compare
            self._push_cond(e[1] ^ 1)
            return
        mem = self._mem_of(e)
        if mem is not None:
            self.asm.alu_mi(X.CMP, w, mem, 0)
        else:
            reg, owned = self._reg_of(e)
            self.asm.test_rr(w, reg, reg)
            if owned:
                self._free(reg)
        self._push_cond(CC_E)

    def op_compare(self, arg, imm, off):
        cc, w = arg
        stack = self.stack
        b = stack.pop()
        a = stack.pop()
        if a[0] == CONST and b[0] == CONST:
            stack.append((CONST, int(_CC_FOLD[cc](a[1], b[1], w)), I32))
            return
        if a[0] == CONST or (self._mem_of(a) is not None and b[0] == REG):
            a, b = b, a
            cc = SWAPPED_CC[cc]
        reg, owned = self._reg_of(a)
        self._alu_operand(X.CMP, w, reg, b)
        if owned:
            self._free(reg)
        self._push_cond(cc)

    def op_convert(self, arg, imm, off):
        """wrap, extend_i32_u/s and the sign-extension operators."""
        t, srcw, signed, fold = arg
        e = self.stack.pop()
        w = _width(t)
        if e[0] == CONST:
            self.stack.append((CONST, fold(e[1]) & MASK[w], t))
            return
        asm = self.asm
        if not signed and e[0] == REG and t == I64:
            self.stack.append((REG, e[1], t))   # i32 registers are already zero-extended
            return
        mem = self._mem_of(e)
        if mem is not None:
            dst = self._alloc()
            if signed:
                asm.movsx_rm(w, srcw, dst, mem)
            else:
                asm.mov_rm(32, dst, mem)
        else:
            src, owned = self._reg_of(e)
            dst = src if owned else self._alloc()
            if signed:
                asm.movsx_rr(w, srcw, dst, src)
            else:
                asm.mov_rr(32, dst, src)
        self.stack.append((REG, dst, t))

    def op_select(self, _, imm, off):
        if imm is not None:
            _require_num(imm, "select operands")
        stack = self.stack
        c = stack.pop()
        if c[0] == CONST:
            b = self._pop_free()
            a = self._pop_free()
            keep = a if c[1] else b
            if keep[0] == REG:
                self._alloc_fixed(keep[1], keep[2])
            stack.append(keep)
            return
        cc = self._test(c)          # from here on only movs until the cmov
        b = stack.pop()
        a = stack.pop()
        t = a[2]
        w = _width(t)
        dst = self._take(a)
        if t in FLOAT_TYPES:        # no cmov for xmm registers: branch around a move
            keep = self.asm.new_label()
            self.asm.jcc(cc, keep)
            self._load(b, dst)
            if b[0] == REG:
                self._free(b[1], t)
            self.asm.bind(keep)
            stack.append((REG, dst, t))
            return
        mem = self._mem_of(b)
        if mem is not None:
            self.asm.cmov_rm(cc ^ 1, w, dst, mem)
        else:
            src, owned = self._reg_of(b)
            self.asm.cmov_rr(cc ^ 1, w, dst, src)
            if owned:
                self._free(src)
        stack.append((REG, dst, t))

    # --- floating point ----------------------------------------------------------------------
    # Float values live in xmm registers; a float operand that is in memory is used in place
    # where the instruction reads only the scalar (never by packed forms, which read 16 bytes).
    def op_fconst(self, t, imm, off):
        self.stack.append((CONST, imm & MASK[_width(t)], t))

    def _fsrc(self, e: tuple) -> Tuple[object, int]:
        """A scalar source operand for float entry ``e`` (memory or xmm register), and the
        register the caller must free (or -1)."""
        mem = self._mem_of(e)
        if mem is not None:
            return mem, -1
        reg = self._take(e)
        return reg, reg

    def op_farith(self, arg, imm, off):
        """add, sub, mul, div: the hardware's NaN propagation is what the spec allows."""
        op, fw = arg
        b = self.stack.pop()
        a = self.stack.pop()
        dst = self._take(a)
        src, tmp = self._fsrc(b)
        self.asm.sse_op(op, fw, dst, src)
        if tmp >= 0:
            self._free(tmp, b[2])
        self.stack.append((REG, dst, a[2]))

    def op_funary(self, arg, imm, off):
        """sqrt, and ceil/floor/trunc/nearest as roundss/roundsd with a fixed mode."""
        fw, mode = arg
        e = self.stack.pop()
        src, tmp = self._fsrc(e)
        dst = tmp if tmp >= 0 else self._alloc(e[2])
        if mode is None:
            self.asm.sse_op(X.SQRTS, fw, dst, src)
        else:
            self.asm.rounds(fw, dst, src, mode)
            self.features.add("sse4.1")
        self.stack.append((REG, dst, e[2]))

    def op_fsign(self, arg, imm, off):
        """abs, neg, copysign: pure sign-bit operations, so NaN payloads pass unchanged."""
        name, fw = arg
        sign = 1 << (fw - 1)
        stack = self.stack
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
        asm = self.asm
        dst = self._take(a)
        if name == "neg":
            self._fconst(fw, XTMP, sign)
            asm.bitwise_ps(X.XORPS, dst, XTMP)
        elif name == "neg_abs":
            self._fconst(fw, XTMP, sign)
            asm.bitwise_ps(X.ORPS, dst, XTMP)
        else:
            self._fconst(fw, XTMP, MASK[fw] ^ sign)
            asm.bitwise_ps(X.ANDPS, dst, XTMP)
            if b is not None:   # copysign: or in b's sign bit
                src = self._take(b)
                asm.bitwise_ps(X.ANDNPS, XTMP, src)
                asm.bitwise_ps(X.ORPS, dst, XTMP)
                self._free(src, t)
        stack.append((REG, dst, t))

    def op_fminmax(self, arg, imm, off):
        """min/max: NaN if either operand is; -0 < +0. minss/maxss alone get both wrong (they
        return the second operand), so those cases go first."""
        fw, is_max = arg
        b = self.stack.pop()
        a = self.stack.pop()
        asm = self.asm
        dst = self._take(a)
        src = self._take(b)
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
        self._free(src, b[2])
        self.stack.append((REG, dst, a[2]))

    def op_fcompare(self, arg, imm, off):
        """ucomis sets CF, ZF and PF for NaN, so 'above' conditions are false when unordered;
        lt/le compare the other way round to use them. eq/ne need PF as well and are made
        into a 0/1 value (fused as its ``ne 0``)."""
        cc, fw = arg
        b = self.stack.pop()
        a = self.stack.pop()
        if cc == CC_B or cc == CC_BE:
            a, b = b, a
            cc = SWAPPED_CC[cc]
        asm = self.asm
        ra = self._take(a)
        src, tmp = self._fsrc(b)
        asm.ucomis(fw, ra, src)
        self._free(ra, a[2])
        if tmp >= 0:
            self._free(tmp, b[2])
        if cc != CC_E and cc != CC_NE:
            self._push_cond(cc)
            return
        r = self._alloc()
        asm.setcc(CC_NP, R11)
        asm.setcc(CC_E, r)
        asm.movzx_rr(8, r, r)
        asm.alu_rr(X.AND, 32, r, R11)     # ordered and equal
        if cc == CC_NE:
            asm.alu_ri(X.XOR, 32, r, 1)
        if self._fuse_next():
            self._free(r)
            self.stack.append((FLAGS, CC_NE, I32))
        else:
            self.stack.append((REG, r, I32))

    def op_fprecision(self, fw, imm, off):
        """promote/demote from precision ``fw`` to the other."""
        e = self.stack.pop()
        t = F32 if fw == 64 else F64
        src, tmp = self._fsrc(e)
        dst = tmp if tmp >= 0 else self._alloc(t)
        self.asm.sse_op(X.CVT_PRECISION, fw, dst, src)
        self.stack.append((REG, dst, t))

    def op_fconvert(self, arg, imm, off):
        """Integer to float, correctly rounded. An unsigned i32 converts as a (zero-extended)
        i64; an unsigned i64 with the top bit set is halved, keeping the lost bit as a sticky
        bit so the one rounding stays correct, converted and doubled."""
        t, iw, signed = arg
        fw = _width(t)
        e = self.stack.pop()
        asm = self.asm
        dst = self._alloc(t)
        if iw == 64 and not signed:
            r = self._take(e)
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
            self._free(r)
        else:
            mem = self._mem_of(e)
            if mem is not None and not signed:   # the slot's upper half is not known zero
                asm.mov_rm(32, R11, mem)
                asm.cvtsi2s(fw, 64, dst, R11)
            elif mem is not None:
                asm.cvtsi2s(fw, iw, dst, mem)
            else:
                reg, owned = self._reg_of(e)   # an i32 in a register is zero-extended
                asm.cvtsi2s(fw, iw if signed else 64, dst, reg)
                if owned:
                    self._free(reg)
        self.stack.append((REG, dst, t))

    def op_trunc(self, arg, imm, off):
        """Float to integer, trapping or saturating. NaN and the range are checked first
        against exact bounds (see ``_trunc_bounds``); then cvtts2si only sees values whose
        truncation fits. Unsigned i32 converts as i64; unsigned i64 of 2^63 or more converts
        x - 2^63 and sets the top bit back."""
        t, fw, signed, sat = arg
        iw = _width(t)
        low, low_cc, high = _trunc_bounds(iw, fw, signed)
        e = self.stack.pop()
        asm = self.asm
        x = self._take(e)
        r = self._alloc()
        if sat:
            done = asm.new_label()
            nan_to = overflow_to = done
            asm.mov_ri(32, r, 0)
        else:
            nan_to = self._trap_label(TrapCode.BadConversionToInteger, off)
            overflow_to = self._trap_label(TrapCode.IntegerOverflow, off)
        asm.ucomis(fw, x, x)
        asm.jcc(CC_P, nan_to)
        if sat and signed:
            asm.mov_ri(iw, r, 1 << (iw - 1))
        self._fconst(fw, XTMP, low)
        asm.ucomis(fw, x, XTMP)
        asm.jcc(low_cc, overflow_to)
        if sat:
            asm.mov_ri(iw, r, MASK[iw] >> 1 if signed else MASK[iw])
        self._fconst(fw, XTMP, high)
        asm.ucomis(fw, x, XTMP)
        asm.jcc(CC_AE, overflow_to)
        if iw == 64 and not signed:
            small, fin = asm.new_label(), asm.new_label()
            self._fconst(fw, XTMP, _float_bits(fw, 2.0 ** 63))
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
        self._free(x, e[2])
        self.stack.append((REG, r, t))

    def op_reinterpret(self, t, imm, off):
        """The same bits in the other register class."""
        e = self.stack.pop()
        if e[0] == CONST:
            self.stack.append((CONST, e[1], t))
            return
        w = _width(t)
        asm = self.asm
        dst = self._alloc(t)
        mem = self._mem_of(e)
        if mem is not None:
            if t in FLOAT_TYPES:
                asm.sse_op(X.MOVS_LOAD, w, dst, mem)
            else:
                asm.mov_rm(w, dst, mem)
        else:
            reg, owned = self._reg_of(e)
            if t in FLOAT_TYPES:
                asm.movd_xr(w, dst, reg)
            else:
                asm.movd_rx(w, dst, reg)
            if owned:
                self._free(reg, e[2])
        self.stack.append((REG, dst, t))

    # --- memory ------------------------------------------------------------------------------
    def _address(self, e: tuple, offset: int) -> Tuple[X.Mem, int]:
        """The heap operand for address entry ``e`` + ``offset``, and the scratch register
        the caller owns (or -1)."""
        if e[0] == CONST:
            ea = e[1] + offset
            if ea <= 0x7FFF_FFFF:
                return (R14, NO_INDEX, 1, ea), -1
            reg = self._alloc()
            self.asm.mov_ri(64, reg, ea)
            return (R14, reg, 1, 0), reg
        reg, owned = self._reg_of(e)
        if offset <= 0x7FFF_FFFF:
            return (R14, reg, 1, offset), reg if owned else -1
        self.asm.mov_ri(32, R11, offset)
        self.asm.alu_rr(X.ADD, 64, R11, reg)
        return (R14, R11, 1, 0), reg if owned else -1

    def op_load(self, arg, memarg, off):
        t, size, signed = arg
        mem, owned = self._address(self.stack.pop(), memarg[1])
        asm = self.asm
        w = _width(t)
        if t in FLOAT_TYPES:
            dst = self._alloc(t)
            self._trap_here(TrapCode.HeapOutOfBounds, off)
            asm.sse_op(X.MOVS_LOAD, w, dst, mem)
            if owned >= 0:
                self._free(owned)
            self.stack.append((REG, dst, t))
            return
        dst = owned if owned >= 0 else self._alloc()
        self._trap_here(TrapCode.HeapOutOfBounds, off)
        if size == 8 or (size == 4 and not signed):
            asm.mov_rm(size * 8, dst, mem)
        elif signed:
            asm.movsx_rm(w, size * 8, dst, mem)
        else:
            asm.movzx_rm(size * 8, dst, mem)
        self.stack.append((REG, dst, t))

    def op_store(self, size, memarg, off):
        stack = self.stack
        v = stack.pop()
        w = size * 8
        asm = self.asm
        if v[0] == CONST and (w < 64 or fits_i32(_signed(v[1], 64))):
            mem, owned = self._address(stack.pop(), memarg[1])
            self._trap_here(TrapCode.HeapOutOfBounds, off)
            asm.mov_mi(w, mem, v[1] if w < 64 else _signed(v[1], 64))
        else:
            # the value first: a float constant goes through r11, which the address may need
            t = v[2]
            reg, vowned = self._reg_of(v)
            mem, owned = self._address(stack.pop(), memarg[1])
            self._trap_here(TrapCode.HeapOutOfBounds, off)
            if t in FLOAT_TYPES:
                asm.sse_op(X.MOVS_STORE, w, reg, mem)
            else:
                asm.mov_mr(w, mem, reg)
            if vowned:
                self._free(reg, t)
        if owned >= 0:
            self._free(owned)

    def op_memory_size(self, _, imm, off):
        reg = self._alloc()
        self.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_MEMORY_SIZE))
        self.asm.shift_ri(X.SHR, 64, reg, 16)
        self.stack.append((REG, reg, I32))

    def op_memory_grow(self, _, imm, off):
        stack = self.stack
        self._move_to(len(stack) - 1, RDI)
        stack.pop()
        self._spill_all((REG,))
        self.makes_calls = True
        self.asm.call_m((R14, NO_INDEX, 1, vmctx_libcall(Libcall.MEMORY_GROW)))
        self.asm.mov_rr(32, RAX, RAX)   # host code need not zero-extend its i32 result
        self.used = 1 << RAX
        self.xused = 0
        stack.append((REG, RAX, I32))

    # Bulk memory: the string instructions with their fixed registers. Both ranges are checked
    # before a byte is written, so a trap leaves memory untouched and ``rep movsb``/``rep stosb``
    # never fault (they need no trap site).
    def _bulk_operands(self, regs: Tuple[int, int, int]) -> None:
        """Pop the three i32 operands into the fixed registers ``regs`` (deepest operand first),
        which the caller owns and frees."""
        stack = self.stack
        first = len(stack) - 3
        for i, reg in enumerate(regs):
            self._move_to(first + i, reg)
        del stack[first:]

    def _range_trap(self, off: int) -> int:
        """The trap stub for ``_check_heap_range``: its probe is the range's last byte, at
        r11 - 1, which the failed check proved to lie at or past the end of the heap."""
        return self._trap_label(TrapCode.HeapOutOfBounds, off, (R14, R11, 1, -1))

    def _check_heap_range(self, start: int, trap: int) -> None:
        """Jump to ``trap`` unless ``start`` + ``rcx`` (left in r11) is at most the current heap
        size. Both are zero-extended i32s, so the 64-bit sum cannot wrap; an empty range may
        start at the very end but not past it."""
        asm = self.asm
        asm.lea(64, R11, (start, RCX, 1, 0))
        asm.alu_rm(X.CMP, 64, R11, (R14, NO_INDEX, 1, VMCTX_MEMORY_SIZE))
        asm.jcc(CC_A, trap)

    def op_memory_copy(self, _, imm, off):
        """memmove: when the destination overlaps the source from above, copy backwards
        (``std``), or the first bytes written would overwrite source bytes not yet read."""
        self._bulk_operands((RDI, RSI, RCX))
        asm = self.asm
        trap = self._range_trap(off)
        self._check_heap_range(RDI, trap)
        self._check_heap_range(RSI, trap)
        asm.lea(64, RDI, (R14, RDI, 1, 0))
        asm.lea(64, RSI, (R14, RSI, 1, 0))
        forward, done = asm.new_label(), asm.new_label()
        asm.mov_rr(64, R11, RDI)
        asm.alu_rr(X.SUB, 64, R11, RSI)
        asm.alu_rr(X.CMP, 64, R11, RCX)
        asm.jcc(CC_AE, forward)          # backwards only if 0 <= dst - src < n
        asm.lea(64, RDI, (RDI, RCX, 1, -1))
        asm.lea(64, RSI, (RSI, RCX, 1, -1))
        asm.std()
        asm.rep_movsb()
        asm.cld()                        # compiled code and its callers rely on DF = 0
        asm.jmp(done)
        asm.bind(forward)
        asm.rep_movsb()
        asm.bind(done)
        for reg in (RDI, RSI, RCX):
            self._free(reg)

    def op_memory_fill(self, _, imm, off):
        """``rep stosb`` stores al: the low 8 bits of the value, as the spec wants."""
        self._bulk_operands((RDI, RAX, RCX))
        self._check_heap_range(RDI, self._range_trap(off))
        self.asm.lea(64, RDI, (R14, RDI, 1, 0))
        self.asm.rep_stosb()
        for reg in (RDI, RAX, RCX):
            self._free(reg)

    def op_table_size(self, _, table, off):
        reg = self._alloc()
        length = table * TABLE_DESC_SIZE + TABLE_DESC["length"]
        self.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_TABLES))
        self.asm.mov_rm(32, reg, (reg, NO_INDEX, 1, length))   # at most 2^32 - 1 elements
        self.stack.append((REG, reg, I32))

    # --- calls -------------------------------------------------------------------------------
    def op_call(self, _, callee, off):
        # an imported function is called through its trampoline (abi.IMPORT_TRAMPOLINE_SIZE),
        # so it is an ordinary direct call here; the driver resolves the target either way
        ftype = self.env.func_types[callee]
        self._call(ftype, lambda: self.calls.append((self.asm.call_rel32(), callee)))

    def op_call_indirect(self, _, imm, off):
        type_index, table = imm
        env = self.env
        type_id = env.type_ids[type_index]
        ftype = env.types[type_id]
        _require_num(ftype.params, "parameters")
        stack = self.stack
        self._move_to(len(stack) - 1, R10)
        stack.pop()
        asm = self.asm
        desc = table * TABLE_DESC_SIZE
        asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_TABLES))
        asm.alu_rm(X.CMP, 64, R10, (R11, NO_INDEX, 1, desc + TABLE_DESC["length"]))
        asm.jcc(CC_AE, self._trap_label(TrapCode.TableOutOfBounds, off))
        asm.mov_rm(64, R11, (R11, NO_INDEX, 1, desc + TABLE_DESC["base"]))
        asm.shift_ri(X.SHL, 64, R10, TABLE_ENTRY_SIZE.bit_length() - 1)
        asm.alu_rr(X.ADD, 64, R10, R11)
        asm.mov_rm(64, R11, (R10, NO_INDEX, 1, TABLE_ENTRY["func"]))
        asm.test_rr(64, R11, R11)
        asm.jcc(CC_E, self._trap_label(TrapCode.IndirectCallToNull, off))
        asm.alu_mi(X.CMP, 64, (R10, NO_INDEX, 1, TABLE_ENTRY["type_id"]), type_id)
        asm.jcc(CC_NE, self._trap_label(TrapCode.BadSignature, off))
        asm.mov_rr(64, R10, R11)
        self._call(ftype, lambda: asm.call_r(R10))

    def _call(self, ftype: FuncType, emit_call: Callable[[], None]) -> None:
        """Arguments per the SysV convention, the call, and the result in rax/xmm0 (several:
        in the slots the return area pointed at). Everything but the arguments that lives in a
        scratch register is spilled first (caller-saved); r10 and r11 are free for the call
        target and temporaries."""
        _require_num(ftype.params, "parameters")
        _require_num(ftype.results, "results")
        asm = self.asm
        stack = self.stack
        nargs = len(ftype.params)
        first = len(stack) - nargs
        for i in range(first):
            if stack[i][0] == REG:
                self._spill(i)
        args = stack[first:]
        multi = len(ftype.results) > 1
        homes = _arg_homes(ftype.params, ftype.results)
        nstack = sum(1 for h in homes if h < 0)
        outgoing = 0
        if nstack:
            outgoing = (8 * nstack + 15) & ~15
            self.max_outgoing = max(self.max_outgoing, outgoing)
            asm.alu_ri(X.SUB, 64, RSP, outgoing)
            self.rsp_adjust = outgoing
            for e, home in zip(args, homes):
                if home >= 0:
                    continue
                dst = (RSP, NO_INDEX, 1, 8 * (-1 - home))
                w = _width(e[2])
                if e[0] == CONST and (w == 32 or fits_i32(_signed(e[1], 64))):
                    asm.mov_mi(w, dst, _signed(e[1], w))
                elif e[0] == REG:
                    self._store_reg(e[2], dst, e[1])
                elif e[0] == CONST:
                    asm.mov_ri(64, R11, e[1])
                    asm.mov_mr(64, dst, R11)
                else:
                    if e[2] in FLOAT_TYPES:   # bits are bits: memory to memory through r11
                        asm.mov_rm(w, R11, self._mem_of(e))
                    else:
                        self._load(e, R11)
                    asm.mov_mr(64, dst, R11)
        in_regs = [(home, e) for e, home in zip(args, homes) if home >= 0]
        self._parallel_move([m for m in in_regs if m[1][2] not in FLOAT_TYPES], False)
        self._parallel_move([m for m in in_regs if m[1][2] in FLOAT_TYPES], True)
        for dst, e in in_regs:
            if e[0] != REG:
                self._load(e, dst)
        del stack[first:]
        if multi:
            # the return area is the slots the results will occupy: result i lands in the slot
            # of stack position first + i, which is where the abstract stack then finds it
            self._slot_mem(first + len(ftype.results) - 1)
            asm.lea(64, ARG_REGS[0], self._slot_mem(first))
        self.makes_calls = True
        emit_call()
        if outgoing:
            asm.alu_ri(X.ADD, 64, RSP, outgoing)
            self.rsp_adjust = 0
        self.used = self.xused = 0
        if multi:
            for k, t in enumerate(ftype.results):
                stack.append((SLOT, first + k, t))
        elif ftype.results:
            t = ftype.results[0]
            self._alloc_fixed(_result_reg(t), t)
            stack.append((REG, _result_reg(t), t))

    def _parallel_move(self, moves: List[Tuple[int, tuple]], xmm: bool) -> None:
        """Move each (destination register, register entry) pair at once, breaking cycles with
        r11 or xmm15."""
        mov = self.asm.movaps if xmm else (lambda d, s: self.asm.mov_rr(64, d, s))
        tmp = XTMP if xmm else R11
        pending = [(dst, e[1]) for dst, e in moves if e[0] == REG and e[1] != dst]
        while pending:
            sources = {src for _, src in pending}
            for k, (dst, src) in enumerate(pending):
                if dst not in sources:
                    mov(dst, src)
                    del pending[k]
                    break
            else:
                dst, src = pending[0]
                mov(tmp, src)
                pending[0] = (dst, tmp)

    # --- control flow ------------------------------------------------------------------------
    def _block_type(self, blocktype) -> Tuple[tuple, tuple]:
        params, results = self.env.block_type(blocktype)
        _require_num(params, "block parameters")
        _require_num(results, "block results")
        return params, results

    def op_block(self, kind, blocktype, off):
        params, results = self._block_type(blocktype)
        self._spill_all()
        height = len(self.stack) - len(params)
        label = self.asm.new_label()
        frame = Ctrl(kind, label, height, results, params=params)
        self.ctrl.append(frame)
        if kind == K_LOOP:
            # a branch back carries the params into their slots, so they start there too
            for k in range(len(params)):
                self._store_slot(self.stack[height + k], height + k)
                self.stack[height + k] = (SLOT, height + k, params[k])
            self.asm.bind(label)
            self._interrupt_check()

    def op_if(self, _, blocktype, off):
        params, results = self._block_type(blocktype)
        c = self.stack.pop()
        asm = self.asm
        frame = Ctrl(K_IF, asm.new_label(), len(self.stack) - len(params), results,
                     asm.new_label(), params)
        if c[0] == CONST:
            self._spill_all()
            if not c[1]:
                asm.jmp(frame.else_label)
        else:
            cc = self._test(c)
            self._spill_all()            # movs only: the flags survive
            asm.jcc(cc ^ 1, frame.else_label)
        # constants and slots only: still valid where the else arm starts, whatever the then
        # arm does to the slots (that code is not on the path to the else arm)
        frame.param_entries = self.stack[frame.height:]
        self.ctrl.append(frame)

    def _store_slot(self, e: tuple, pos: int) -> None:
        """Store entry ``e``'s value into the slot of stack position ``pos``, emitting moves
        only and changing no state (so it may run on one path of a branch)."""
        kind, val, t = e
        w = _width(t)
        asm = self.asm
        if kind == SLOT and val == pos:
            return
        mem = self._slot_mem(pos)
        if kind == REG:
            self._store_reg(t, mem, val)
        elif kind == CONST and fits_i32(_signed(val, w)):
            asm.mov_mi(w, mem, val if w == 32 else _signed(val, w))
        elif kind == LOCAL and self.local_reg[val] >= 0:
            asm.mov_mr(w, mem, self.local_reg[val])
        else:   # bits are bits: memory or a constant through r11
            if kind == CONST:
                asm.mov_ri(64, R11, val)
            elif kind == FLAGS:
                asm.setcc(val, R11)
                asm.movzx_rr(8, R11, R11)
            else:
                asm.mov_rm(w, R11, self._mem_of(e))
            asm.mov_mr(w, mem, R11)

    def _values_to_slots(self, frame: Ctrl, n: int, below: int = 0) -> None:
        """Store the ``n`` values ``below`` entries down the stack into the slots of the
        positions where ``frame``'s label keeps them. The sources are at those positions or
        higher, so storing in ascending order never overwrites a value not yet read."""
        stack = self.stack
        first = len(stack) - below - n
        for k in range(n):
            self._store_slot(stack[first + k], frame.height + k)

    def _to_label(self, frame: Ctrl, at_end: bool = False, below: int = 0) -> None:
        """Put the values a label of ``frame`` (its branch label, or ``at_end`` its end) takes,
        ``below`` entries down the stack, where the label expects them: their slots, or
        rax/xmm0 for a single value."""
        types = frame.label_types(at_end)
        if frame.in_slots(at_end):
            self._values_to_slots(frame, len(types), below)
        elif types:
            i = len(self.stack) - 1 - below
            self._move_to(i, _result_reg(self.stack[i][2]))

    def _reset_to(self, frame: Ctrl, with_results: bool) -> None:
        """The canonical state at a label of ``frame``: the entries below it, plus its results
        in their slots or rax/xmm0."""
        del self.stack[frame.height:]
        self.used = self.xused = 0
        results = frame.results
        if not with_results or not results:
            return
        if frame.in_slots(True):
            for k, t in enumerate(results):
                self._slot_mem(frame.height + k)
                self.stack.append((SLOT, frame.height + k, t))
        else:
            t = results[0]
            self._alloc_fixed(_result_reg(t), t)
            self.stack.append((REG, _result_reg(t), t))

    def op_else(self, _, imm, off):
        frame = self.ctrl[-1]
        asm = self.asm
        if not self.unreachable:
            self._to_label(frame, True)
            asm.jmp(frame.label)
            frame.branched = True
        asm.bind(frame.else_label)
        frame.kind = K_ELSE
        self._reset_to(frame, False)
        self.stack.extend(frame.param_entries)
        self.unreachable = False

    def op_end(self, _, imm, off):
        if self.ctrl[-1].kind == K_IF and self.ctrl[-1].params:
            # an if without else passes its params on as results: an empty else arm does that
            self.op_else(None, None, off)
        frame = self.ctrl.pop()
        asm = self.asm
        reachable = not self.unreachable
        if reachable:
            self._to_label(frame, True)
        if frame.kind == K_IF:
            asm.bind(frame.else_label)    # if without else: the false edge lands here
            reachable = True
        if frame.kind != K_LOOP:
            asm.bind(frame.label)
            reachable = reachable or frame.branched
        self._reset_to(frame, reachable)
        self.unreachable = not reachable
        if frame.kind == K_FUNC:
            if reachable and self.return_area:
                asm.mov_rm(64, R11, (RSP, NO_INDEX, 1, self.ret_disp))
                for k, e in enumerate(self.stack):
                    asm.mov_rm(_width(e[2]), RAX, self._mem_of(e))   # i32 zero-extended
                    asm.mov_mr(64, (R11, NO_INDEX, 1, RESULT_SLOT_SIZE * k), RAX)
            self._epilogue()

    def _branch_target(self, depth: int) -> Ctrl:
        frame = self.ctrl[-1 - depth]
        if frame.kind != K_LOOP:
            frame.branched = True
        return frame

    def op_br(self, _, depth, off):
        frame = self._branch_target(depth)
        self._to_label(frame)
        self.asm.jmp(frame.label)
        self.unreachable = True

    def op_return(self, _, imm, off):
        self.op_br(None, len(self.ctrl) - 1, off)

    def op_br_if(self, _, depth, off):
        frame = self._branch_target(depth)
        stack = self.stack
        c = stack[-1]
        if c[0] == CONST:
            stack.pop()
            if c[1]:
                self.op_br(None, depth, off)
            return
        types = frame.label_types()
        if frame.in_slots():
            # the target slots may hold values the fall-through path still needs: store only
            # on the taken path
            cc = self._test(stack.pop())
            skip = self.asm.new_label()
            self.asm.jcc(cc ^ 1, skip)
            self._values_to_slots(frame, len(types))
            self.asm.jmp(frame.label)
            self.asm.bind(skip)
            return
        if types:
            self._to_label(frame, below=1)   # movs only: flags survive
        cc = self._test(stack.pop())
        self.asm.jcc(cc, frame.label)

    def op_br_table(self, _, imm, off):
        depths, default = imm
        frames = [self._branch_target(d) for d in depths]
        dflt = self._branch_target(default)
        stack = self.stack
        if any(f.in_slots() for f in frames + [dflt]):
            self._br_table_stubs(frames, dflt)
            return
        if dflt.label_types():
            self._to_label(dflt, below=1)
        idx = stack.pop()
        asm = self.asm
        if idx[0] == CONST:
            target = frames[idx[1]] if idx[1] < len(frames) else dflt
            asm.jmp(target.label)
            self.unreachable = True
            return
        if frames:
            reg = self._take(idx)
            asm.alu_ri(X.CMP, 32, reg, len(frames))
            asm.jcc(CC_AE, dflt.label)
            table = asm.new_label()
            asm.lea_label(R11, table)
            asm.movsx_rm(64, 32, reg, (R11, reg, 4, 0))
            asm.alu_rr(X.ADD, 64, reg, R11)
            asm.jmp_r(reg)
            self.jump_tables.append((table, [f.label for f in frames]))
        else:
            asm.jmp(dflt.label)
        self.unreachable = True

    def _br_table_stubs(self, frames: List[Ctrl], dflt: Ctrl) -> None:
        """br_table when some target keeps its values in slots: the targets' heights differ,
        so each distinct target gets a stub that puts the values in place and jumps on."""
        asm = self.asm
        stack = self.stack
        idx = stack.pop()
        if idx[0] == CONST:
            target = frames[idx[1]] if idx[1] < len(frames) else dflt
            self._to_label(target)
            asm.jmp(target.label)
            self.unreachable = True
            return
        reg = self._take(idx)
        self._free(reg)
        stubs: Dict[int, int] = {}
        for f in frames + [dflt]:
            if id(f) not in stubs:
                stubs[id(f)] = asm.new_label()
        if frames:
            asm.alu_ri(X.CMP, 32, reg, len(frames))
            asm.jcc(CC_AE, stubs[id(dflt)])
            table = asm.new_label()
            asm.lea_label(R11, table)
            asm.movsx_rm(64, 32, reg, (R11, reg, 4, 0))
            asm.alu_rr(X.ADD, 64, reg, R11)
            asm.jmp_r(reg)
            self.jump_tables.append((table, [stubs[id(f)] for f in frames]))
        else:
            asm.jmp(stubs[id(dflt)])
        done = set()
        for f in frames + [dflt]:
            if id(f) in done:
                continue
            done.add(id(f))
            asm.bind(stubs[id(f)])
            types = f.label_types()
            if f.in_slots():
                self._values_to_slots(f, len(types))
            elif types:   # a copy into rax/xmm0 on this path only: the state stays as it is
                e = stack[-1]
                dst = _result_reg(e[2])
                if e[0] == REG:
                    self._mov_reg(e[2], dst, e[1])
                else:
                    self._load(e, dst)
            asm.jmp(f.label)
        self.unreachable = True

    def op_unreachable(self, _, imm, off):
        self._trap_here(TrapCode.Unreachable, off)
        self.asm.ud2()
        self.unreachable = True

    def op_drop(self, _, imm, off):
        self._pop_free()

    def op_nop(self, _, imm, off):
        pass


# --- the dispatch table: derived from the opcode table's mnemonics -------------------------------

def _rot(v: int, n: int, w: int, left: bool) -> int:
    n %= w
    if not left:
        n = (w - n) % w
    return ((v << n) | (v >> (w - n))) & MASK[w]


def _float_bits(fw: int, v: float) -> int:
    return int.from_bytes(struct.pack("<f" if fw == 32 else "<d", v), "little")


def _trunc_bounds(iw: int, fw: int, signed: bool) -> Tuple[int, int, int]:
    """(low bound bits, condition meaning 'x is below the range' after ``ucomis x, low``,
    high bound bits): x truncates into range iff low < x < high exactly, with high = 2^(iw-1)
    or 2^iw and low = -2^(iw-1) - 1 or -1. When low is not representable, the largest float
    below the range is -2^(iw-1) itself minus a whole ulp, so ``x >= -2^(iw-1)`` is the same
    test."""
    high = _float_bits(fw, 2.0 ** (iw - 1 if signed else iw))
    if not signed:
        return _float_bits(fw, -1.0), CC_BE, high
    low = -(1 << (iw - 1)) - 1
    mantissa = 24 if fw == 32 else 53
    if low.bit_length() <= mantissa:      # exactly representable
        return _float_bits(fw, float(low)), CC_BE, high
    return _float_bits(fw, float(low + 1)), CC_B, high


_FC = FunctionCompiler
_ALU = {"add": (X.ADD, lambda a, b: a + b), "sub": (X.SUB, lambda a, b: a - b),
        "and": (X.AND, lambda a, b: a & b), "or": (X.OR, lambda a, b: a | b),
        "xor": (X.XOR, lambda a, b: a ^ b)}
_SHIFTS = {"shl": (X.SHL, lambda v, n, w: v << n),
           "shr_u": (X.SHR, lambda v, n, w: v >> n),
           "shr_s": (X.SAR, lambda v, n, w: _signed(v, w) >> n),
           "rotl": (X.ROL, lambda v, n, w: _rot(v, n, w, True)),
           "rotr": (X.ROR, lambda v, n, w: _rot(v, n, w, False))}
_BITCOUNT = {"clz": (X.LZCNT, "lzcnt", lambda v, w: w - v.bit_length()),
             "ctz": (X.TZCNT, "bmi1", lambda v, w: ((v & -v).bit_length() - 1) if v else w),
             "popcnt": (X.POPCNT, "popcnt", lambda v, w: bin(v).count("1"))}
_COMPARES = {"eq": CC_E, "ne": CC_NE, "lt_s": CC_L, "lt_u": CC_B, "gt_s": CC_G, "gt_u": CC_A,
             "le_s": CC_LE, "le_u": CC_BE, "ge_s": CC_GE, "ge_u": CC_AE}
_CC_FOLD = {
    CC_E: lambda a, b, w: a == b, CC_NE: lambda a, b, w: a != b,
    CC_B: lambda a, b, w: a < b, CC_A: lambda a, b, w: a > b,
    CC_BE: lambda a, b, w: a <= b, CC_AE: lambda a, b, w: a >= b,
    CC_L: lambda a, b, w: _signed(a, w) < _signed(b, w),
    CC_G: lambda a, b, w: _signed(a, w) > _signed(b, w),
    CC_LE: lambda a, b, w: _signed(a, w) <= _signed(b, w),
    CC_GE: lambda a, b, w: _signed(a, w) >= _signed(b, w),
}
_DIVS = {"div_s": (True, False), "div_u": (False, False), "rem_s": (True, True),
         "rem_u": (False, True)}
_CONVERSIONS = {  # name: (result type, source bits, signed, fold)
    "i32.wrap_i64": (I32, 32, False, lambda v: v),
    "i64.extend_i32_u": (I64, 32, False, lambda v: v),
    "i64.extend_i32_s": (I64, 32, True, lambda v: _signed(v & MASK[32], 32)),
    "i32.extend8_s": (I32, 8, True, lambda v: _signed(v & 0xFF, 8)),
    "i32.extend16_s": (I32, 16, True, lambda v: _signed(v & 0xFFFF, 16)),
    "i64.extend8_s": (I64, 8, True, lambda v: _signed(v & 0xFF, 8)),
    "i64.extend16_s": (I64, 16, True, lambda v: _signed(v & 0xFFFF, 16)),
    "i64.extend32_s": (I64, 32, True, lambda v: _signed(v & MASK[32], 32)),
}
_CONTROL = {
    Op.UNREACHABLE: (_FC.op_unreachable, None), Op.NOP: (_FC.op_nop, None),
    Op.BLOCK: (_FC.op_block, K_BLOCK), Op.LOOP: (_FC.op_block, K_LOOP), Op.IF: (_FC.op_if, None),
    Op.ELSE: (_FC.op_else, None), Op.END: (_FC.op_end, None), Op.BR: (_FC.op_br, None),
    Op.BR_IF: (_FC.op_br_if, None), Op.BR_TABLE: (_FC.op_br_table, None),
    Op.RETURN: (_FC.op_return, None), Op.CALL: (_FC.op_call, None),
    Op.CALL_INDIRECT: (_FC.op_call_indirect, None), Op.DROP: (_FC.op_drop, None),
    Op.SELECT: (_FC.op_select, None), Op.SELECT_T: (_FC.op_select, None),
    Op.LOCAL_GET: (_FC.op_local_get, None), Op.LOCAL_SET: (_FC.op_local_set, False),
    Op.LOCAL_TEE: (_FC.op_local_set, True), Op.GLOBAL_GET: (_FC.op_global_get, None),
    Op.GLOBAL_SET: (_FC.op_global_set, None), Op.MEMORY_SIZE: (_FC.op_memory_size, None),
    Op.MEMORY_GROW: (_FC.op_memory_grow, None), Op.MEMORY_COPY: (_FC.op_memory_copy, None),
    Op.MEMORY_FILL: (_FC.op_memory_fill, None), Op.TABLE_SIZE: (_FC.op_table_size, None),
    Op.I32_CONST: (_FC.op_const, 32), Op.I64_CONST: (_FC.op_const, 64),
}


def _build_dispatch() -> Dict[int, tuple]:
    """op -> (handler, argument) for every integer instruction, keyed off the opcode table so
    no list of opcodes lives here."""
    table: Dict[int, tuple] = dict(_CONTROL)
    for code, info in OPS.items():
        prefix, _, base = info.name.partition(".")
        if code in table or prefix not in ("i32", "i64"):
            continue
        if info.access_size:   # integer loads and stores
            if info.results:
                table[code] = (_FC.op_load, (info.results[0], info.access_size, base.endswith("_s")))
            elif info.params[1] in INT_TYPES:
                table[code] = (_FC.op_store, info.access_size)
            continue
        w = 64 if prefix == "i64" else 32
        if base in _ALU:
            op, fold = _ALU[base]
            table[code] = (_FC.op_alu, (op, w, fold))
        elif base == "mul":
            table[code] = (_FC.op_mul, w)
        elif base in _DIVS:
            table[code] = (_FC.op_div, (w,) + _DIVS[base])
        elif base in _SHIFTS:
            op, fold = _SHIFTS[base]
            table[code] = (_FC.op_shift, (op, w, fold))
        elif base in _BITCOUNT:
            kind, feature, fold = _BITCOUNT[base]
            table[code] = (_FC.op_bitcount, (kind, w, feature, fold))
        elif base in _COMPARES:
            table[code] = (_FC.op_compare, (_COMPARES[base], w))
        elif base == "eqz":
            table[code] = (_FC.op_eqz, w)
        elif info.name in _CONVERSIONS:
            table[code] = (_FC.op_convert, _CONVERSIONS[info.name])
    table.update(_float_dispatch())
    return table


_FARITH = {"add": X.ADDS, "sub": X.SUBS, "mul": X.MULS, "div": X.DIVS}
_FUNARY = {"sqrt": None, "ceil": X.ROUND_CEIL, "floor": X.ROUND_FLOOR, "trunc": X.ROUND_TRUNC,
           "nearest": X.ROUND_NEAREST}
_FCOMPARES = {"eq": CC_E, "ne": CC_NE, "lt": CC_B, "gt": CC_A, "le": CC_BE, "ge": CC_AE}
_TYPES = {"i32": I32, "i64": I64, "f32": F32, "f64": F64}


def _float_dispatch() -> Dict[int, tuple]:
    """op -> (handler, argument) for every instruction that involves a float."""
    table: Dict[int, tuple] = {}
    for code, info in OPS.items():
        name = info.name
        prefix, _, base = name.partition(".")
        if prefix in ("f32", "f64"):
            t = _TYPES[prefix]
            fw = _width(t)
            if info.access_size:
                if info.results:
                    table[code] = (_FC.op_load, (t, info.access_size, False))
                else:
                    table[code] = (_FC.op_store, info.access_size)
            elif base == "const":
                table[code] = (_FC.op_fconst, t)
            elif base in _FARITH:
                table[code] = (_FC.op_farith, (_FARITH[base], fw))
            elif base in _FUNARY:
                table[code] = (_FC.op_funary, (fw, _FUNARY[base]))
            elif base in ("abs", "neg", "copysign"):
                table[code] = (_FC.op_fsign, (base, fw))
            elif base in ("min", "max"):
                table[code] = (_FC.op_fminmax, (fw, base == "max"))
            elif base in _FCOMPARES:
                table[code] = (_FC.op_fcompare, (_FCOMPARES[base], fw))
            elif base in ("demote_f64", "promote_f32"):
                table[code] = (_FC.op_fprecision, 96 - fw)
            elif base.startswith("convert_"):
                m = re.fullmatch(r"convert_i(32|64)_([su])", base)
                table[code] = (_FC.op_fconvert, (t, int(m[1]), m[2] == "s"))
            elif base.startswith("reinterpret_"):
                table[code] = (_FC.op_reinterpret, t)
            continue
        m = re.fullmatch(r"(i32|i64)\.trunc(_sat)?_f(32|64)_([su])", name)
        if m:
            table[code] = (_FC.op_trunc, (_TYPES[m[1]], int(m[3]), m[4] == "s", bool(m[2])))
        elif re.fullmatch(r"i(32|64)\.reinterpret_f(32|64)", name):
            table[code] = (_FC.op_reinterpret, _TYPES[prefix])
    return table


_DISPATCH = _build_dispatch()

"""The code-generation context: the abstract operand stack, the scratch register allocator and
the frame, held (not inherited) by one ``CodeGenContext``, the single entry point to their
combined operations (pop into a register, spill, fold a constant into an immediate), as Winch's
``codegen/context.rs`` is.

Operand stack entries are tuples ``(kind, payload, valtype)``:

``CONST``  a constant not yet materialised (payload: the value, unsigned, masked to its width),
           so constants fold into immediates and constant expressions fold away;
``REG``    a value in a scratch register the entry owns (payload: the register);
``LOCAL``  a lazy ``local.get`` (payload: the local index): read straight from the local's home,
           copied only if the local is written while the entry is still on the stack;
``SLOT``   a value spilled to the frame slot of its stack position (payload: that position);
``FLAGS``  the result of a compare still in the CPU flags (payload: the condition code). Only
           made when the very next instruction consumes it (see ``function``).

The value representation is ``module.abi``'s, for every type: ``abi.value_class`` decides the
register file (i32, i64 and the references in general purpose registers; f32, f64 and v128 in
xmm registers, with their own free mask and xmm0 as result register) and ``abi.slot_size`` the
bytes a value takes in the frame. Scratch values use the caller-saved registers in ``SCRATCH``
(but those the function's locals live in) and ``XSCRATCH``; ``r11`` and ``xmm15`` are never
allocated and serve as short-lived temporaries inside one instruction's code. A float constant
is materialised through ``r11``, so no value may be waiting in ``r11`` when one is loaded; and
bits are bits in memory, so a float moves between memory locations through ``r11`` like an
integer of its width. An i32 in a 64-bit register is always zero-extended (every i32 result is
written by a 32-bit instruction), so it can index the heap directly.

Every helper here emits only moves (never ``xor r, r`` or other flag-writing instructions)
unless it says otherwise, so a compare's flags survive operand shuffling up to their ``jcc`` or
``cmov``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

from ...errors import Unsupported
from ...module.abi import SLOT_WORD, ValueClass, slot_size, value_class
from ...wasm.opcodes import Op
from ...wasm.types import ValType
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, Assembler, fits_i32
from ..x86_64.registers import (CC_NE, R8, R9, R10, R11, R12, R13, R15, RAX, RBP, RBX, RCX, RDI,
                                RDX, RSI, RSP, XMM)
from .remap import MIN_ACCESSES, LocalRemap

CONST, REG, LOCAL, SLOT, FLAGS = range(5)

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
FUNCREF, EXTERNREF = ValType.FUNCREF, ValType.EXTERNREF
NUM_TYPES = (I32, I64, F32, F64, FUNCREF, EXTERNREF)
"""The types code generation translates so far (v128 raises ``Unsupported``)."""

IN_XMM: Dict[ValType, bool] = {t: value_class(t) != ValueClass.INT for t in ValType}
"""Whether a value of each type lives in an xmm register (else a general purpose one): the
register class ``abi.value_class`` gives, as one dict lookup for the hot paths."""

SCRATCH = (RAX, RCX, RDX, RSI, RDI, R8, R9, R10)
XSCRATCH = XMM[:15]
XTMP = XMM[15]
RESULT_REG = RAX
FLOAT_RESULT_REG = XMM[0]
LOCAL_REGS = (RBX, R15, R12, R13, RBP)
"""Callee-saved registers that the busiest integer locals live in for a whole function."""
CALLER_SAVED_LOCAL_REGS = (R8, R9, RSI, RDI)
"""Caller-saved registers that integer locals live in besides ``LOCAL_REGS``. A leaf function
(nothing it calls can clobber them) gives them to its busiest locals first, as they cost no
push and pop. A function that calls gives them to its next-busiest locals, stored to their
frame slots before each call and loaded back after it (``CodeGenContext.before_call`` and
``after_call``), and only to a local used more than twice as often as calls are made (uses and
calls weighted alike by loop depth), so a call in a hot loop does not cost more than the homes
save. Their only fixed uses are in calls (arguments; rdi and rsi for the bulk memory libcalls),
all placed after ``before_call``, where such a local is read from its slot. ``asm/context.s``'s
``pylucet_interrupt`` keeps them across an interruption at a poll. The scratch registers keep
rax, rcx, rdx and r10."""
FLOAT_LOCAL_REGS = XMM[8:15]
"""The xmm registers f32 and f64 locals live in, by the rule of ``CALLER_SAVED_LOCAL_REGS`` (the
SysV convention saves no xmm register): all of a leaf's, and in a function that calls, those of
locals used more than twice as often as calls are made, stored before each call and loaded
after it. None is an argument register, so no fixed use needs them; ``pylucet_interrupt`` keeps
them across an interruption. The scratch values keep xmm0..xmm7."""
_CALLING_OPS = frozenset((
    Op.CALL, Op.CALL_INDIRECT, Op.MEMORY_GROW, Op.MEMORY_COPY, Op.MEMORY_FILL, Op.MEMORY_INIT,
    Op.DATA_DROP, Op.TABLE_GET, Op.TABLE_SET, Op.TABLE_INIT, Op.ELEM_DROP, Op.TABLE_COPY,
    Op.TABLE_GROW, Op.TABLE_FILL))
"""Instructions that may call (or need fixed registers beyond rax, rcx and rdx): a function
without any is a leaf. Erring on the side of calling costs only speed; a call emitted in a
function taken for a leaf fails an assertion at its end (``FunctionCompiler.compile``)."""
MASK = {32: 0xFFFF_FFFF, 64: 0xFFFF_FFFF_FFFF_FFFF}


_WIDTH = {I32: 32, F32: 32, I64: 64, F64: 64, FUNCREF: 64, EXTERNREF: 64}


def width(t: ValType) -> int:
    """Bits of the value in its register: references are 64-bit addresses or handles."""
    return _WIDTH[t]


def parallel_move(mov, tmp: int, moves: Sequence[Tuple[int, int]]) -> None:
    """Emit ``mov(dst, src)`` for each (destination, source) register pair as if all at once:
    a move goes once no other pending move still reads its destination; a cycle is broken
    through ``tmp``."""
    pending = [(dst, src) for dst, src in moves if dst != src]
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


def signed(v: int, w: int) -> int:
    return v - (1 << w) if v >> (w - 1) else v


def result_reg(t: ValType) -> int:
    """Where a single result (of a function, or at a label) of type ``t`` travels."""
    return FLOAT_RESULT_REG if IN_XMM[t] else RESULT_REG


def require_num(types: Sequence[ValType], what: str) -> None:
    for t in types:
        if t not in NUM_TYPES:
            raise Unsupported(f"{t.text} {what} are not supported yet")


class RegAlloc:
    """Which scratch registers of each class are owned by operand stack entries. The general
    purpose ones are ``SCRATCH`` but for those a leaf function's locals live in."""

    __slots__ = ("used", "xused", "scratch", "xscratch")

    def __init__(self, scratch: Sequence[int] = SCRATCH,
                 xscratch: Sequence[int] = XSCRATCH) -> None:
        self.used = 0                 # bit mask of general purpose scratch registers
        self.xused = 0                # the same for xmm registers
        self.scratch = tuple(scratch)
        self.xscratch = tuple(xscratch)

    def reset(self) -> None:
        """Every register free: at a label, or after a call clobbered them all."""
        self.used = self.xused = 0

    def free_scratch(self, t: ValType = I32) -> int:
        """A free scratch register of ``t``'s class, or -1."""
        if IN_XMM[t]:
            regs, used = self.xscratch, self.xused
        else:
            regs, used = self.scratch, self.used
        for r in regs:
            if not used & (1 << r):
                return r
        return -1

    def claim(self, reg: int, t: ValType) -> None:
        if IN_XMM[t]:
            self.xused |= 1 << reg
        else:
            self.used |= 1 << reg

    def free(self, reg: int, t: ValType = I32) -> None:
        if IN_XMM[t]:
            self.xused &= ~(1 << reg)
        else:
            self.used &= ~(1 << reg)

    def owned(self, reg: int, t: ValType) -> bool:
        return bool((self.xused if IN_XMM[t] else self.used) & (1 << reg))


class Frame:
    """Where locals live and where operand stack positions spill (``rsp``-relative): the
    frame-resident locals from 0, the hidden return-area pointer (several results), then one
    slot word per operand stack position from ``spill_base``. ``rsp_adjust`` is added while
    outgoing call arguments sit below the frame. Its size is known only after the body."""

    def __init__(self, local_types: Sequence[ValType], instrs: list, return_area: bool,
                 arrivals: Sequence[int] = ()):
        """``arrivals``: the register each parameter arrives in (or -1), so that a leaf's
        parameter whose arrival register is one of its local homes stays where it is."""
        self.local_types = local_types
        n = len(local_types)
        uses, calls, run = _local_uses(n, instrs)
        self.leaf = not calls
        ranked = sorted((i for i in range(n) if uses[i] and not IN_XMM[local_types[i]]),
                        key=lambda i: -uses[i])
        floats = sorted((i for i in range(n) if uses[i] and IN_XMM[local_types[i]]),
                        key=lambda i: -uses[i])
        self.local_reg: List[int] = [-1] * n     # home register of each local, or -1
        self.local_disp: List[int] = [0] * n     # frame offset of each frame-resident local
        if self.leaf:
            groups = [(ranked, CALLER_SAVED_LOCAL_REGS + LOCAL_REGS), (floats, FLOAT_LOCAL_REGS)]
        else:
            k = len(LOCAL_REGS)
            groups = [(ranked[:k], LOCAL_REGS),
                      ([i for i in ranked[k:] if uses[i] > 2 * calls], CALLER_SAVED_LOCAL_REGS),
                      ([i for i in floats if uses[i] > 2 * calls], FLOAT_LOCAL_REGS)]
        for group, regs in groups:
            chosen = group[:len(regs)]
            free = list(regs[:len(chosen)])
            for i in chosen:   # a parameter stays in its argument register if that is a home
                if i < len(arrivals) and arrivals[i] in free:
                    self.local_reg[i] = arrivals[i]
                    free.remove(arrivals[i])
            for i in chosen:
                if self.local_reg[i] < 0:
                    self.local_reg[i] = free.pop(0)
        int_homes = {r for i, r in enumerate(self.local_reg)
                     if r >= 0 and not IN_XMM[local_types[i]]}
        float_homes = {r for i, r in enumerate(self.local_reg)
                       if r >= 0 and IN_XMM[local_types[i]]}
        self.saved_regs = [r for r in LOCAL_REGS if r in int_homes]
        self.scratch = [r for r in SCRATCH if r not in int_homes]
        self.xscratch = [r for r in XSCRATCH if r not in float_homes]
        self.home_mask = sum(1 << r for r in int_homes)
        # (local, register) of the locals kept in caller-saved registers across calls
        self.call_saved = [] if self.leaf else [
            (i, r) for i, r in enumerate(self.local_reg)
            if r >= 0 and (IN_XMM[local_types[i]] or r in CALLER_SAVED_LOCAL_REGS)]
        saved = {i for i, _ in self.call_saved}
        # in long straight-line stretches the home registers are traded between locals
        # (``remap``): then every integer local may have to leave its register for a slot
        ints = {i for i in range(n) if uses[i] and not IN_XMM[local_types[i]]}
        self.remap = LocalRemap.plan(instrs, self.local_reg, ints, _CALLING_OPS) \
            if run >= MIN_ACCESSES and any(self.local_reg[i] < 0 for i in ints) else None
        if self.remap is not None:
            saved |= ints
        in_frame = sorted(i for i in range(n) if uses[i] and (self.local_reg[i] < 0 or i in saved))
        disp = 0
        for i in in_frame:
            size = slot_size(local_types[i])
            disp = (disp + size - 1) & -size
            self.local_disp[i] = disp
            disp += size
        self.frame_locals = in_frame
        self.frame_locals_set = set(in_frame)
        # the hidden return-area pointer (several results) sits between the locals and slots
        self.ret_disp = disp
        self.spill_base = disp + SLOT_WORD * int(return_area)
        self.rsp_adjust = 0
        self.max_slots = 0

    def local_mem(self, idx: int) -> X.Mem:
        return (RSP, NO_INDEX, 1, self.local_disp[idx] + self.rsp_adjust)

    def slot_mem(self, pos: int) -> X.Mem:
        if pos >= self.max_slots:
            self.max_slots = pos + 1
        return (RSP, NO_INDEX, 1, self.spill_base + SLOT_WORD * pos + self.rsp_adjust)

    def size(self, aligned_for_calls: bool) -> int:
        """Bytes below the pushed callee-saved registers; the SysV convention wants rsp 16-byte
        aligned at each call."""
        frame = self.spill_base + SLOT_WORD * self.max_slots
        if aligned_for_calls:
            frame += (-(8 + 8 * len(self.saved_regs) + frame)) % 16
        return frame


def _local_uses(n: int, instrs: list) -> Tuple[List[int], int, int]:
    """How busy each local is: a cheap pre-scan counting uses, a use inside loops counting
    more; 0 for locals never touched (they get no home at all). And the calls (instructions in
    ``_CALLING_OPS``), counted the same way: 0 for a leaf function. And the most local accesses
    between two block, loop, if, end or calling instructions (at least as many as in
    ``remap``'s longest stretch, so its plan is made only where it may find one)."""
    uses = [0] * n
    weight, loops = 1, []
    get, set_, tee = Op.LOCAL_GET, Op.LOCAL_SET, Op.LOCAL_TEE
    loop, block, if_, end = Op.LOOP, Op.BLOCK, Op.IF, Op.END
    calling = _CALLING_OPS
    calls = 0
    run = longest = 0    # local accesses since the last block, loop, if, end or call
    for op, imm, _ in instrs:
        if op == get or op == set_ or op == tee:
            uses[imm] += weight
            run += 1
            continue
        if op == loop:
            loops.append(True)
            weight = 8 ** min(loops.count(True), 4)
        elif op == block or op == if_:
            loops.append(False)
        elif op == end:
            if loops and loops.pop():
                weight = 8 ** min(loops.count(True), 4)
        elif op in calling:
            calls += weight
        else:
            continue
        if run > longest:
            longest = run
        run = 0
    return uses, calls, longest


class ValueStack(list):
    """The abstract operand stack: a list of ``(kind, payload, valtype)`` entries, deepest
    first. A plain list underneath, so pushes, pops and peeks cost what a list's do."""

    __slots__ = ()


class CodeGenContext:
    """The value stack, the register allocator and the frame of one function, and every
    operation that needs more than one of them. The allocator's and the frame's hot methods
    are bound once here, so handlers pay no extra indirection for them."""

    def __init__(self, asm: Assembler, frame: Frame) -> None:
        self.asm = asm
        self.stack = ValueStack()
        self.regs = regs = RegAlloc(frame.scratch, frame.xscratch)
        self.home_mask = frame.home_mask
        self.call_saved = frame.call_saved
        self.calls = 0                        # calls made through before_call/after_call
        self.frame = frame
        self.local_reg = frame.local_reg      # the same list: read on every lazy local
        self.local_mem = frame.local_mem
        self.slot_mem = frame.slot_mem
        self.free = regs.free
        self.claim = regs.claim
        self.owned = regs.owned
        self.free_scratch = regs.free_scratch

    def alloc(self, t: ValType = I32) -> int:
        """A free scratch register of ``t``'s class, now owned by the caller."""
        r = self.free_scratch(t)
        if r < 0:
            # out of registers: spill the deepest register entry (the value needed last)
            fl = IN_XMM[t]
            for i, e in enumerate(self.stack):
                if e[0] == REG and IN_XMM[e[2]] == fl:
                    r = e[1]
                    self.spill(i)
                    break
            else:
                raise AssertionError("no scratch register left")
        self.claim(r, t)
        return r

    def before_call(self) -> None:
        """Before anything is placed for a call: the locals in ``CALLER_SAVED_LOCAL_REGS`` go
        to their frame slots, where lazy reads of them find them until ``after_call``, and their
        registers are free for the call's fixed uses."""
        for idx, reg in self.call_saved:
            self.local_to_slot(idx, reg)
            self.local_reg[idx] = -1
            if not IN_XMM[self.frame.local_types[idx]]:
                self.home_mask &= ~(1 << reg)

    def after_call(self) -> None:
        """After the call (and the stack arguments' release): every scratch register is free,
        since the call clobbered them, and the locals saved by ``before_call`` come back."""
        self.regs.reset()
        for idx, reg in self.call_saved:
            self.local_reg[idx] = reg
            if not IN_XMM[self.frame.local_types[idx]]:
                self.home_mask |= 1 << reg
            self.local_from_slot(idx, reg)
        self.calls += 1

    def local_to_slot(self, idx: int, reg: int) -> None:
        """Store local ``idx``, held in ``reg``, to its frame slot."""
        self.store_reg(self.frame.local_types[idx], self.local_mem(idx), reg)

    def local_from_slot(self, idx: int, reg: int) -> None:
        """Load local ``idx`` from its frame slot into ``reg``."""
        t = self.frame.local_types[idx]
        if IN_XMM[t]:
            self.asm.sse_op(X.MOVS_LOAD, width(t), reg, self.local_mem(idx))
        else:
            self.asm.mov_rm(width(t), reg, self.local_mem(idx))

    def lazy_locals(self) -> Set[int]:
        """The locals that lazy ``local.get`` entries on the stack read."""
        return {e[1] for e in self.stack if e[0] == LOCAL}

    def mov_reg(self, t: ValType, dst: int, src: int) -> None:
        if IN_XMM[t]:
            self.asm.movaps(dst, src)
        else:
            self.asm.mov_rr(64, dst, src)

    def evict(self, reg: int, t: ValType = I32) -> None:
        """Make ``reg`` (of ``t``'s class) free for a fixed use: move its owner to another
        register or its slot."""
        if not self.owned(reg, t):
            assert IN_XMM[t] or not self.home_mask & (1 << reg), \
                f"fixed register {reg} holds a local (context.CALLER_SAVED_LOCAL_REGS)"
            return
        fl = IN_XMM[t]
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            e = stack[i]
            if e[0] == REG and e[1] == reg and IN_XMM[e[2]] == fl:
                free = self.free_scratch(t)
                if free >= 0:
                    self.mov_reg(t, free, reg)
                    self.claim(free, t)
                    stack[i] = (REG, free, e[2])
                    self.free(reg, t)
                else:
                    self.spill(i)
                return
        raise AssertionError(f"register {reg} is in use but owned by no entry")

    def spill(self, i: int) -> None:
        """Move stack entry ``i`` (a register or lazy local) to its frame slot."""
        kind, val, t = self.stack[i]
        w = width(t)
        if kind == REG:
            self.store_reg(t, self.slot_mem(i), val)
            self.free(val, t)
        elif kind == LOCAL:
            reg = self.local_reg[val]
            if reg >= 0:
                self.store_reg(t, self.slot_mem(i), reg)
            else:   # bits are bits: memory to memory through r11
                self.asm.mov_rm(w, R11, self.local_mem(val))
                self.asm.mov_mr(w, self.slot_mem(i), R11)
        else:
            return
        self.stack[i] = (SLOT, i, t)

    def spill_all(self, kinds: Tuple[int, ...] = (REG, LOCAL)) -> None:
        for i, e in enumerate(self.stack):
            if e[0] in kinds:
                self.spill(i)

    def store_reg(self, t: ValType, mem: X.Mem, reg: int) -> None:
        """Store register ``reg`` holding a ``t``."""
        if IN_XMM[t]:
            self.asm.sse_op(X.MOVS_STORE, width(t), reg, mem)
        else:
            self.asm.mov_mr(width(t), mem, reg)

    def fconst(self, fw: int, reg: int, bits: int) -> None:
        """Float bits into xmm ``reg`` through r11 (no flags touched)."""
        if bits == 0:
            self.asm.bitwise_ps(X.XORPS, reg, reg)
        else:
            self.asm.mov_ri(fw, R11, bits)
            self.asm.movd_xr(fw, reg, R11)

    def load(self, e: tuple, reg: int) -> None:
        """Put the value of entry ``e`` (not a register entry) into ``reg`` (movs only: the flags
        survive)."""
        kind, val, t = e
        w = width(t)
        asm = self.asm
        if IN_XMM[t]:
            if kind == CONST:
                self.fconst(w, reg, val)
            elif kind == REG:
                asm.movaps(reg, val)
            elif kind == LOCAL and self.local_reg[val] >= 0:
                asm.movaps(reg, self.local_reg[val])
            else:
                asm.sse_op(X.MOVS_LOAD, w, reg, self.mem_of(e))
            return
        if kind == CONST:
            asm.mov_ri(w, reg, val)
        elif kind == LOCAL:
            home = self.local_reg[val]
            if home >= 0:
                asm.mov_rr(w, reg, home)
            else:
                asm.mov_rm(w, reg, self.local_mem(val))
        elif kind == SLOT:
            asm.mov_rm(w, reg, self.slot_mem(val))
        elif kind == FLAGS:
            asm.setcc(val, reg)
            asm.movzx_rr(8, reg, reg)
        else:
            asm.mov_rr(w, reg, val)

    def take(self, e: tuple) -> int:
        """A scratch register the caller owns, holding the value of the popped entry ``e``."""
        if e[0] == REG:
            return e[1]
        reg = self.alloc(e[2])
        self.load(e, reg)
        return reg

    def reg_of(self, e: tuple) -> Tuple[int, bool]:
        """A register holding ``e``'s value without copying a register-resident local:
        (register, whether the caller owns it and must free or reuse it)."""
        kind = e[0]
        if kind == REG:
            return e[1], True
        if kind == LOCAL:
            home = self.local_reg[e[1]]
            if home >= 0:
                return home, False
        return self.take(e), True

    def mem_of(self, e: tuple) -> Optional[X.Mem]:
        """The memory operand holding ``e``'s value, if it is in memory."""
        kind = e[0]
        if kind == SLOT:
            return self.slot_mem(e[1])
        if kind == LOCAL and self.local_reg[e[1]] < 0:
            return self.local_mem(e[1])
        return None

    def move_to(self, i: int, reg: int) -> None:
        """Put stack entry ``i`` into the fixed register ``reg`` (which it then owns)."""
        e = self.stack[i]
        if e[0] == REG and e[1] == reg:
            return
        t = e[2]
        self.evict(reg, t)
        self.claim(reg, t)
        self.load(e, reg)
        if e[0] == REG:
            self.free(e[1], t)
        self.stack[i] = (REG, reg, t)

    def pop_free(self) -> tuple:
        e = self.stack.pop()
        if e[0] == REG:
            self.free(e[1], e[2])
        return e

    def detach_local(self, idx: int) -> None:
        """Lazy reads of local ``idx`` still on the stack must keep the old value: copy them."""
        stack = self.stack
        for i, e in enumerate(stack):
            if e[0] == LOCAL and e[1] == idx:
                free = self.free_scratch(e[2])
                if free >= 0:
                    self.claim(free, e[2])
                    self.load(e, free)
                    stack[i] = (REG, free, e[2])
                else:
                    self.spill(i)

    def test(self, e: tuple) -> int:
        """Set the flags from a popped i32 condition; returns the condition code for 'true'."""
        if e[0] == FLAGS:
            return e[1]
        mem = self.mem_of(e)
        if mem is not None:
            self.asm.alu_mi(X.CMP, 32, mem, 0)
        else:
            reg, owned = self.reg_of(e)
            self.asm.test_rr(32, reg, reg)
            if owned:
                self.free(reg)
        return CC_NE

    def alu_operand(self, op: int, w: int, dst: int, e: tuple) -> None:
        """``op dst, <e>`` with ``e`` as an immediate, register or memory operand (the flags
        as ``op`` leaves them, except for ``and`` with 0xFFFFFFFF: a 32-bit ``mov``)."""
        asm = self.asm
        kind, val = e[0], e[1]
        if kind == CONST:
            imm = signed(val, w)
            if fits_i32(imm):
                asm.alu_ri(op, w, dst, imm)
            elif op == X.AND and val == 0xFFFF_FFFF:   # the low half, zero-extended
                asm.mov_rr(32, dst, dst)
            else:
                asm.mov_ri(64, R11, val)
                asm.alu_rr(op, w, dst, R11)
            return
        mem = self.mem_of(e)
        if mem is not None:
            asm.alu_rm(op, w, dst, mem)
            return
        src, owned = self.reg_of(e)
        asm.alu_rr(op, w, dst, src)
        if owned:
            self.free(src)

    def store_slot(self, e: tuple, pos: int) -> None:
        """Store entry ``e``'s value into the slot of stack position ``pos``, emitting moves
        only and changing no state (so it may run on one path of a branch)."""
        kind, val, t = e
        w = width(t)
        asm = self.asm
        if kind == SLOT and val == pos:
            return
        mem = self.slot_mem(pos)
        if kind == REG:
            self.store_reg(t, mem, val)
        elif kind == CONST and fits_i32(signed(val, w)):
            asm.mov_mi(w, mem, val if w == 32 else signed(val, w))
        elif kind == LOCAL and self.local_reg[val] >= 0:
            self.store_reg(t, mem, self.local_reg[val])
        else:   # bits are bits: memory or a constant through r11
            if kind == CONST:
                asm.mov_ri(64, R11, val)
            elif kind == FLAGS:
                asm.setcc(val, R11)
                asm.movzx_rr(8, R11, R11)
            else:
                asm.mov_rm(w, R11, self.mem_of(e))
            asm.mov_mr(w, mem, R11)

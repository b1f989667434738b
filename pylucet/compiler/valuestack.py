"""The abstract operand stack and the scratch register allocator of the code generator.

Operand stack entries are tuples ``(kind, payload, valtype)``:

``CONST``  a constant not yet materialised (payload: the value, unsigned, masked to its width),
           so constants fold into immediates and constant expressions fold away;
``REG``    a value in a scratch register the entry owns (payload: the register);
``LOCAL``  a lazy ``local.get`` (payload: the local index): read straight from the local's home,
           copied only if the local is written while the entry is still on the stack;
``SLOT``   a value spilled to the frame slot of its stack position (payload: that position);
``FLAGS``  the result of a compare still in the CPU flags (payload: the condition code). Only
           made when the very next instruction consumes it (see ``codegen``).

Registers. ``valtype`` decides the register class: i32/i64 (and, later, references) live in
general purpose registers; f32/f64 live in xmm registers, with their own free mask (``xused``)
and xmm0 as result register; entries are handled alike otherwise. Scratch values use the
caller-saved registers in ``SCRATCH`` and ``XSCRATCH``; ``r11`` and ``xmm15`` are never
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

from typing import List, Optional, Tuple

from ..wasm.types import ValType
from .x86_64 import encoding as X
from .x86_64.encoding import NO_INDEX, Assembler, fits_i32
from .x86_64.registers import CC_NE, R8, R9, R10, R11, RAX, RCX, RDI, RDX, RSI, RSP, XMM

CONST, REG, LOCAL, SLOT, FLAGS = range(5)

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
INT_TYPES = (I32, I64)
FLOAT_TYPES = (F32, F64)
SCRATCH = (RAX, RCX, RDX, RSI, RDI, R8, R9, R10)
XSCRATCH = XMM[:15]
XTMP = XMM[15]
MASK = {32: 0xFFFF_FFFF, 64: 0xFFFF_FFFF_FFFF_FFFF}


def width(t: ValType) -> int:
    return 64 if t == I64 or t == F64 else 32


def signed(v: int, w: int) -> int:
    return v - (1 << w) if v >> (w - 1) else v


class ValueStack:
    """Operand stack entries, the registers they own, and the frame slots they spill to.

    The frame layout it addresses (``rsp``-relative): frame-resident locals at ``local_disp``,
    then one 8-byte slot per operand stack position from ``spill_base``. ``rsp_adjust`` is added
    while outgoing call arguments sit below the frame.
    """

    def __init__(self) -> None:
        self.asm = Assembler()
        self.stack: List[tuple] = []
        self.used = 0                 # bit mask of scratch registers owned by entries
        self.xused = 0                # the same for xmm registers
        self.local_reg: List[int] = []   # home register of each local, or -1
        self.local_disp: List[int] = []  # frame offset of each frame-resident local
        self.spill_base = 0
        self.rsp_adjust = 0
        self.max_slots = 0

    def _local_mem(self, idx: int) -> X.Mem:
        return (RSP, NO_INDEX, 1, self.local_disp[idx] + self.rsp_adjust)

    def _slot_mem(self, pos: int) -> X.Mem:
        if pos >= self.max_slots:
            self.max_slots = pos + 1
        return (RSP, NO_INDEX, 1, self.spill_base + 8 * pos + self.rsp_adjust)

    def _alloc(self, t: ValType = I32) -> int:
        """A free scratch register of ``t``'s class, now owned by the caller."""
        r = self._free_scratch(t)
        if r < 0:
            # out of registers: spill the deepest register entry (the value needed last)
            fl = t in FLOAT_TYPES
            for i, e in enumerate(self.stack):
                if e[0] == REG and (e[2] in FLOAT_TYPES) == fl:
                    r = e[1]
                    self._spill(i)
                    break
            else:
                raise AssertionError("no scratch register left")
        self._alloc_fixed(r, t)
        return r

    def _free(self, reg: int, t: ValType = I32) -> None:
        if t in FLOAT_TYPES:
            self.xused &= ~(1 << reg)
        else:
            self.used &= ~(1 << reg)

    def _owned(self, reg: int, t: ValType) -> bool:
        return bool((self.xused if t in FLOAT_TYPES else self.used) & (1 << reg))

    def _free_scratch(self, t: ValType = I32) -> int:
        if t in FLOAT_TYPES:
            regs, used = XSCRATCH, self.xused
        else:
            regs, used = SCRATCH, self.used
        for r in regs:
            if not used & (1 << r):
                return r
        return -1

    def _mov_reg(self, t: ValType, dst: int, src: int) -> None:
        if t in FLOAT_TYPES:
            self.asm.movaps(dst, src)
        else:
            self.asm.mov_rr(64, dst, src)

    def _evict(self, reg: int, t: ValType = I32) -> None:
        """Make ``reg`` (of ``t``'s class) free for a fixed use: move its owner to another
        register or its slot."""
        if not self._owned(reg, t):
            return
        fl = t in FLOAT_TYPES
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            e = stack[i]
            if e[0] == REG and e[1] == reg and (e[2] in FLOAT_TYPES) == fl:
                free = self._free_scratch(t)
                if free >= 0:
                    self._mov_reg(t, free, reg)
                    self._alloc_fixed(free, t)
                    stack[i] = (REG, free, e[2])
                    self._free(reg, t)
                else:
                    self._spill(i)
                return
        raise AssertionError(f"register {reg} is in use but owned by no entry")

    def _alloc_fixed(self, reg: int, t: ValType) -> None:
        if t in FLOAT_TYPES:
            self.xused |= 1 << reg
        else:
            self.used |= 1 << reg

    def _spill(self, i: int) -> None:
        """Move stack entry ``i`` (a register or lazy local) to its frame slot."""
        kind, val, t = self.stack[i]
        w = width(t)
        if kind == REG:
            self._store_reg(t, self._slot_mem(i), val)
            self._free(val, t)
        elif kind == LOCAL:
            reg = self.local_reg[val]
            if reg < 0:
                self.asm.mov_rm(w, R11, self._local_mem(val))
                reg = R11
            self.asm.mov_mr(w, self._slot_mem(i), reg)
        else:
            return
        self.stack[i] = (SLOT, i, t)

    def _spill_all(self, kinds=(REG, LOCAL)) -> None:
        for i, e in enumerate(self.stack):
            if e[0] in kinds:
                self._spill(i)

    def _store_reg(self, t: ValType, mem: X.Mem, reg: int) -> None:
        """Store register ``reg`` holding a ``t``."""
        if t in FLOAT_TYPES:
            self.asm.sse_op(X.MOVS_STORE, width(t), reg, mem)
        else:
            self.asm.mov_mr(width(t), mem, reg)

    def _fconst(self, fw: int, reg: int, bits: int) -> None:
        """Float bits into xmm ``reg`` through r11 (no flags touched)."""
        if bits == 0:
            self.asm.bitwise_ps(X.XORPS, reg, reg)
        else:
            self.asm.mov_ri(fw, R11, bits)
            self.asm.movd_xr(fw, reg, R11)

    def _load(self, e: tuple, reg: int) -> None:
        """Put the value of entry ``e`` (not a register entry) into ``reg`` (movs only: the flags
        survive)."""
        kind, val, t = e
        w = width(t)
        asm = self.asm
        if t in FLOAT_TYPES:
            if kind == CONST:
                self._fconst(w, reg, val)
            elif kind == REG:
                asm.movaps(reg, val)
            else:
                asm.sse_op(X.MOVS_LOAD, w, reg, self._mem_of(e))
            return
        if kind == CONST:
            asm.mov_ri(w, reg, val)
        elif kind == LOCAL:
            home = self.local_reg[val]
            if home >= 0:
                asm.mov_rr(w, reg, home)
            else:
                asm.mov_rm(w, reg, self._local_mem(val))
        elif kind == SLOT:
            asm.mov_rm(w, reg, self._slot_mem(val))
        elif kind == FLAGS:
            asm.setcc(val, reg)
            asm.movzx_rr(8, reg, reg)
        else:
            asm.mov_rr(w, reg, val)

    def _take(self, e: tuple) -> int:
        """A scratch register the caller owns, holding the value of the popped entry ``e``."""
        if e[0] == REG:
            return e[1]
        reg = self._alloc(e[2])
        self._load(e, reg)
        return reg

    def _reg_of(self, e: tuple) -> Tuple[int, bool]:
        """A register holding ``e``'s value without copying a register-resident local:
        (register, whether the caller owns it and must free or reuse it)."""
        kind = e[0]
        if kind == REG:
            return e[1], True
        if kind == LOCAL:
            home = self.local_reg[e[1]]
            if home >= 0:
                return home, False
        return self._take(e), True

    def _mem_of(self, e: tuple) -> Optional[X.Mem]:
        """The memory operand holding ``e``'s value, if it is in memory."""
        kind = e[0]
        if kind == SLOT:
            return self._slot_mem(e[1])
        if kind == LOCAL and self.local_reg[e[1]] < 0:
            return self._local_mem(e[1])
        return None

    def _move_to(self, i: int, reg: int) -> None:
        """Put stack entry ``i`` into the fixed register ``reg`` (which it then owns)."""
        e = self.stack[i]
        if e[0] == REG and e[1] == reg:
            return
        t = e[2]
        self._evict(reg, t)
        self._alloc_fixed(reg, t)
        self._load(e, reg)
        if e[0] == REG:
            self._free(e[1], t)
        self.stack[i] = (REG, reg, t)

    def _pop_free(self) -> tuple:
        e = self.stack.pop()
        if e[0] == REG:
            self._free(e[1], e[2])
        return e

    def _detach_local(self, idx: int) -> None:
        """Lazy reads of local ``idx`` still on the stack must keep the old value: copy them."""
        stack = self.stack
        for i, e in enumerate(stack):
            if e[0] == LOCAL and e[1] == idx:
                free = self._free_scratch(e[2])
                if free >= 0:
                    self._alloc_fixed(free, e[2])
                    self._load(e, free)
                    stack[i] = (REG, free, e[2])
                else:
                    self._spill(i)

    def _test(self, e: tuple) -> int:
        """Set the flags from a popped i32 condition; returns the condition code for 'true'."""
        if e[0] == FLAGS:
            return e[1]
        mem = self._mem_of(e)
        if mem is not None:
            self.asm.alu_mi(X.CMP, 32, mem, 0)
        else:
            reg, owned = self._reg_of(e)
            self.asm.test_rr(32, reg, reg)
            if owned:
                self._free(reg)
        return CC_NE

    def _alu_operand(self, op: int, w: int, dst: int, e: tuple) -> None:
        """``op dst, <e>`` with ``e`` as an immediate, register or memory operand."""
        asm = self.asm
        kind, val = e[0], e[1]
        if kind == CONST:
            imm = signed(val, w)
            if fits_i32(imm):
                asm.alu_ri(op, w, dst, imm)
            else:
                asm.mov_ri(64, R11, val)
                asm.alu_rr(op, w, dst, R11)
            return
        mem = self._mem_of(e)
        if mem is not None:
            asm.alu_rm(op, w, dst, mem)
            return
        src, owned = self._reg_of(e)
        asm.alu_rr(op, w, dst, src)
        if owned:
            self._free(src)

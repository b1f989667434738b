"""Memory access: heap addresses, loads and stores, ``memory.size``/``grow``/``copy``/``fill``, and
the data segments' ``memory.init``/``data.drop``.

Heap accesses compile without bounds checks: the heap's address space is reserved far past
4 GiB + 4 GiB (``runtime.region``), so ``[r14 + zero-extended i32 + offset]`` out of bounds lands
on an inaccessible page; the access gets a trap site at its own offset and the signal handler
turns the fault into ``HeapOutOfBounds``. The bulk instructions check their ranges explicitly
(nothing may be written before the trap, and they run in libc), and their trap stubs read an
out-of-bounds heap byte instead of ``ud2``: the runtime believes a heap trap only for a fault
inside the heap's address space.

``memory.init`` copies from a data segment through the instance's descriptor of it
(``abi.DATA_DESC``), whose length ``data.drop`` sets to 0, so a dropped segment reads as an empty
one, as the spec defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from ...errors import LimitsExceeded
from ...module.abi import (DATA_DESC, DATA_DESC_SIZE, VMCTX_DATA_SEGMENTS, VMCTX_MEMORY_SIZE,
                           Libcall, vmctx_libcall)
from ...module.traps import TrapCode
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX, fits_i32
from ..x86_64.registers import CC_A, R11, R14, RAX, RDI, RDX, RSI
from .context import CONST, I32, IN_XMM, REG, signed as _signed, width

if TYPE_CHECKING:
    from .function import FunctionCompiler


def _address(cg: FunctionCompiler, e: tuple, offset: int) -> Tuple[X.Mem, int]:
    """The heap operand for address entry ``e`` + ``offset``, and the scratch register
    the caller owns (or -1)."""
    ctx = cg.ctx
    if e[0] == CONST:
        ea = e[1] + offset
        if ea <= 0x7FFF_FFFF:
            return (R14, NO_INDEX, 1, ea), -1
        reg = ctx.alloc()
        cg.asm.mov_ri(64, reg, ea)
        return (R14, reg, 1, 0), reg
    reg, owned = ctx.reg_of(e)
    if offset <= 0x7FFF_FFFF:
        return (R14, reg, 1, offset), reg if owned else -1
    cg.asm.mov_ri(32, R11, offset)
    cg.asm.alu_rr(X.ADD, 64, R11, reg)
    return (R14, R11, 1, 0), reg if owned else -1


def op_load(cg: FunctionCompiler, arg, memarg, off):
    ctx = cg.ctx
    t, size, signed = arg
    mem, owned = _address(cg, cg.stack.pop(), memarg[1])
    asm = cg.asm
    w = width(t)
    if IN_XMM[t]:
        dst = ctx.alloc(t)
        cg.trap_here(TrapCode.HeapOutOfBounds, off)
        asm.sse_op(X.MOVS_LOAD, w, dst, mem)
        if owned >= 0:
            ctx.free(owned)
        cg.stack.append((REG, dst, t))
        return
    dst = owned if owned >= 0 else ctx.alloc()
    cg.trap_here(TrapCode.HeapOutOfBounds, off)
    if size == 8 or (size == 4 and not signed):
        asm.mov_rm(size * 8, dst, mem)
    elif signed:
        asm.movsx_rm(w, size * 8, dst, mem)
    else:
        asm.movzx_rm(size * 8, dst, mem)
    cg.stack.append((REG, dst, t))


def op_store(cg: FunctionCompiler, size, memarg, off):
    ctx = cg.ctx
    stack = cg.stack
    v = stack.pop()
    w = size * 8
    asm = cg.asm
    if v[0] == CONST and (w < 64 or fits_i32(_signed(v[1], 64))):
        mem, owned = _address(cg, stack.pop(), memarg[1])
        cg.trap_here(TrapCode.HeapOutOfBounds, off)
        asm.mov_mi(w, mem, v[1] if w < 64 else _signed(v[1], 64))
    else:
        # the value first: a float constant goes through r11, which the address may need
        t = v[2]
        reg, vowned = ctx.reg_of(v)
        mem, owned = _address(cg, stack.pop(), memarg[1])
        cg.trap_here(TrapCode.HeapOutOfBounds, off)
        if IN_XMM[t]:
            asm.sse_op(X.MOVS_STORE, w, reg, mem)
        else:
            asm.mov_mr(w, mem, reg)
        if vowned:
            ctx.free(reg, t)
    if owned >= 0:
        ctx.free(owned)


def op_memory_size(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    reg = ctx.alloc()
    cg.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_MEMORY_SIZE))
    cg.asm.shift_ri(X.SHR, 64, reg, 16)
    cg.stack.append((REG, reg, I32))


def op_memory_grow(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    stack = cg.stack
    ctx.before_call()
    ctx.move_to(len(stack) - 1, RDI)
    stack.pop()
    ctx.spill_all((REG,))
    cg.makes_calls = True
    cg.asm.call_m((R14, NO_INDEX, 1, vmctx_libcall(Libcall.MEMORY_GROW)))
    cg.asm.mov_rr(32, RAX, RAX)   # host code need not zero-extend its i32 result
    ctx.after_call()
    ctx.claim(RAX, I32)
    stack.append((REG, RAX, I32))

# Bulk memory: calls into libc's memmove and memset (``abi.Libcall``), which beat any inline
# string instruction (``rep movsb`` costs tens of cycles to start, and backwards, as an
# overlapping memmove needs, it is byte by byte). Both ranges are checked before the call, so a
# trap leaves memory untouched and libc never faults (a fault there would be the host's).
def _bulk_operands(cg: FunctionCompiler, regs: Tuple[int, int, int]) -> None:
    """Pop the three i32 operands into the fixed registers ``regs`` (deepest operand first),
    which the caller owns and frees."""
    ctx = cg.ctx
    stack = cg.stack
    first = len(stack) - 3
    for i, reg in enumerate(regs):
        ctx.move_to(first + i, reg)
    del stack[first:]


def _range_trap(cg: FunctionCompiler, off: int) -> int:
    """The trap stub for ``_check_heap_range``: its probe is the range's last byte, at
    r11 - 1, which the failed check proved to lie at or past the end of the heap."""
    return cg.trap_label(TrapCode.HeapOutOfBounds, off, (R14, R11, 1, -1))


def _check_heap_range(cg: FunctionCompiler, start: int, trap: int) -> None:
    """Jump to ``trap`` unless ``start`` + ``rdx`` (the length; the sum left in r11) is at most
    the current heap size. Both are zero-extended i32s, so the 64-bit sum cannot wrap; an empty
    range may start at the very end but not past it."""
    asm = cg.asm
    asm.lea(64, R11, (start, RDX, 1, 0))
    asm.alu_rm(X.CMP, 64, R11, (R14, NO_INDEX, 1, VMCTX_MEMORY_SIZE))
    asm.jcc(CC_A, trap)


def _call_libc(cg: FunctionCompiler, call: Libcall) -> None:
    """Call ``call`` with rdi (a checked heap offset, made a host address here), rsi and rdx
    in place (put there after ``before_call``); every other value in a scratch register goes to
    its slot first, as at any call (lazy locals stay: their homes survive the call)."""
    ctx = cg.ctx
    asm = cg.asm
    asm.lea(64, RDI, (R14, RDI, 1, 0))
    ctx.spill_all((REG,))
    cg.makes_calls = True
    asm.call_m((R14, NO_INDEX, 1, vmctx_libcall(call)))
    ctx.after_call()


def op_memory_copy(cg: FunctionCompiler, _, imm, off):
    """memmove(heap + d, heap + s, n): overlap either way is libc's to get right."""
    cg.ctx.before_call()
    _bulk_operands(cg, (RDI, RSI, RDX))
    trap = _range_trap(cg, off)
    _check_heap_range(cg, RDI, trap)
    _check_heap_range(cg, RSI, trap)
    cg.asm.lea(64, RSI, (R14, RSI, 1, 0))
    _call_libc(cg, Libcall.MEMMOVE)


def op_memory_fill(cg: FunctionCompiler, _, imm, off):
    """memset(heap + d, value, n): memset stores the value's low 8 bits, as the spec wants."""
    cg.ctx.before_call()
    _bulk_operands(cg, (RDI, RSI, RDX))
    _check_heap_range(cg, RDI, _range_trap(cg, off))
    _call_libc(cg, Libcall.MEMSET)


def _segment_desc(cg: FunctionCompiler, reg: int, segment: int) -> int:
    """Load the address of the data segment descriptors into ``reg``; return the displacement
    of ``segment``'s descriptor from it."""
    disp = segment * DATA_DESC_SIZE
    if not fits_i32(disp + DATA_DESC_SIZE):
        raise LimitsExceeded(f"data segment {segment}: more data segments than the code "
                             "generator can address")
    cg.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_DATA_SEGMENTS))
    return disp


def op_memory_init(cg: FunctionCompiler, _, imm, off):
    """memmove(heap + d, segment + s, n), once both ranges are known to fit: s + n within the
    segment's current length (0 once dropped), d + n within the heap. The sums of
    zero-extended i32s cannot wrap in 64 bits."""
    segment, _memory = imm
    ctx = cg.ctx
    ctx.before_call()
    _bulk_operands(cg, (RDI, RSI, RDX))
    desc = ctx.alloc()
    disp = _segment_desc(cg, desc, segment)
    asm = cg.asm
    # past the segment: the trap stub probes [r14 + heap size], the first byte past the heap
    asm.lea(64, R11, (RSI, RDX, 1, 0))
    asm.alu_rm(X.CMP, 64, R11, (desc, NO_INDEX, 1, disp + DATA_DESC["length"]))
    asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_MEMORY_SIZE))   # (mov keeps the flags)
    asm.jcc(CC_A, cg.trap_label(TrapCode.HeapOutOfBounds, off, (R14, R11, 1, 0)))
    _check_heap_range(cg, RDI, _range_trap(cg, off))
    asm.alu_rm(X.ADD, 64, RSI, (desc, NO_INDEX, 1, disp + DATA_DESC["base"]))
    ctx.free(desc)
    _call_libc(cg, Libcall.MEMMOVE)


def op_data_drop(cg: FunctionCompiler, _, segment, off):
    """The segment's length becomes 0 in this instance; its bytes stay, shared by the module's
    other instances."""
    disp = _segment_desc(cg, R11, segment)
    cg.asm.mov_mi(64, (R11, NO_INDEX, 1, disp + DATA_DESC["length"]), 0)

"""Tables: ``table.get``/``set``/``size`` inline, the entry lookup ``call_indirect`` makes, and the
variable-length table instructions (``grow``, ``fill``, ``copy``, ``init``, ``elem.drop``), which
the host carries out as builtins (``abi.Builtin``).

The vmctx points at an array of descriptor pointers (``abi.TABLE_DESC``), one per table, imported
ones included; an entry is one 8-byte reference (0 = null). The inline instructions check the index
against the descriptor's current length, which a ``table.grow`` from any instance sharing the
table updates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from ...module.abi import (TABLE_DESC, TABLE_ENTRY_SIZE, VMCTX_TABLES, Builtin, Libcall,
                           vmctx_libcall)
from ...module.traps import TrapCode
from ...wasm.types import FuncType, ValType
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX
from ..x86_64.registers import CC_AE, R10, R11, R14
from .context import CONST, I32, REG

if TYPE_CHECKING:
    from .function import FunctionCompiler

_ENTRY_SHIFT = TABLE_ENTRY_SIZE.bit_length() - 1
assert 1 << _ENTRY_SHIFT == TABLE_ENTRY_SIZE


def _desc(cg: FunctionCompiler, table: int, reg: int) -> None:
    """``reg`` = the address of ``table``'s descriptor."""
    cg.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_TABLES))
    cg.asm.mov_rm(64, reg, (reg, NO_INDEX, 1, 8 * table))


def op_table_size(cg: FunctionCompiler, _, table, off):
    reg = cg.ctx.alloc()
    _desc(cg, table, reg)
    cg.asm.mov_rm(32, reg, (reg, NO_INDEX, 1, TABLE_DESC["length"]))   # at most 2^32 - 1
    cg.stack.append((REG, reg, I32))


def entry_address(cg: FunctionCompiler, table: int, off: int,
                  code: TrapCode = TrapCode.TableAccessOutOfBounds) -> None:
    """Turn the element index in r10 into the address of its entry in ``table``, trapping
    with ``code`` at or past the table's current length. Uses r11."""
    asm = cg.asm
    _desc(cg, table, R11)
    asm.alu_rm(X.CMP, 64, R10, (R11, NO_INDEX, 1, TABLE_DESC["length"]))
    asm.jcc(CC_AE, cg.trap_label(code, off))
    asm.mov_rm(64, R11, (R11, NO_INDEX, 1, TABLE_DESC["base"]))
    asm.lea(64, R10, (R11, R10, TABLE_ENTRY_SIZE, 0))


def op_table_get(cg: FunctionCompiler, _, table, off):
    ctx = cg.ctx
    stack = cg.stack
    ctx.move_to(len(stack) - 1, R10)
    stack.pop()
    entry_address(cg, table, off)
    ctx.free(R10)
    reg = ctx.alloc()
    cg.asm.mov_rm(64, reg, (R10, NO_INDEX, 1, 0))
    stack.append((REG, reg, cg.env.table_types[table]))


def op_table_set(cg: FunctionCompiler, _, table, off):
    ctx = cg.ctx
    stack = cg.stack
    ctx.move_to(len(stack) - 2, R10)     # the index; the value stays where it is
    value = stack.pop()
    stack.pop()
    if value[0] == CONST and value[1] == 0:
        entry_address(cg, table, off)
        cg.asm.mov_mi(64, (R10, NO_INDEX, 1, 0), 0)
    else:
        reg, owned = ctx.reg_of(value)
        entry_address(cg, table, off)
        cg.asm.mov_mr(64, (R10, NO_INDEX, 1, 0), reg)
        if owned:
            ctx.free(reg)
    ctx.free(R10)


# --- builtins ------------------------------------------------------------------------------------

def _builtin(cg: FunctionCompiler, builtin: Builtin, operands: Tuple[ValType, ...],
             immediates: Tuple[int, ...], off: int, result: bool = False) -> None:
    """Call the host for ``builtin``: the top ``len(operands)`` stack values, then the
    instruction's immediates and its wasm offset (for the trap's message), as i32 arguments by
    the calling convention; an i32 result if ``result``."""
    from .call import call_with
    for imm in (*immediates, off):
        cg.stack.append((CONST, imm & 0xFFFF_FFFF, I32))
    params = operands + (I32,) * (len(immediates) + 1)
    asm = cg.asm

    def emit() -> None:
        asm.mov_ri(32, R10, int(builtin))
        asm.call_m((R14, NO_INDEX, 1, vmctx_libcall(Libcall.BUILTIN)))
    call_with(cg, FuncType(params, (I32,) if result else ()), emit)


def op_table_grow(cg: FunctionCompiler, _, table, off):
    _builtin(cg, Builtin.TABLE_GROW, (cg.env.table_types[table], I32), (table,), off,
             result=True)


def op_table_fill(cg: FunctionCompiler, _, table, off):
    _builtin(cg, Builtin.TABLE_FILL, (I32, cg.env.table_types[table], I32), (table,), off)


def op_table_copy(cg: FunctionCompiler, _, imm, off):
    dst, src = imm
    _builtin(cg, Builtin.TABLE_COPY, (I32, I32, I32), (dst, src), off)


def op_table_init(cg: FunctionCompiler, _, imm, off):
    segment, table = imm
    _builtin(cg, Builtin.TABLE_INIT, (I32, I32, I32), (table, segment), off)


def op_elem_drop(cg: FunctionCompiler, _, segment, off):
    _builtin(cg, Builtin.ELEM_DROP, (), (segment,), off)

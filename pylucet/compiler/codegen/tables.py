"""Tables: the descriptor array the vmctx points at (``abi.TABLE_DESC``), one per table, and
its entries (``abi.TABLE_ENTRY``); ``table.size`` and the entry lookup ``call_indirect`` makes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...module.abi import TABLE_DESC, TABLE_DESC_SIZE, TABLE_ENTRY_SIZE, VMCTX_TABLES
from ...module.traps import TrapCode
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX
from ..x86_64.registers import CC_AE, R10, R11, R14
from .context import I32, REG

if TYPE_CHECKING:
    from .function import FunctionCompiler


def op_table_size(cg: FunctionCompiler, _, table, off):
    ctx = cg.ctx
    reg = ctx.alloc()
    length = table * TABLE_DESC_SIZE + TABLE_DESC["length"]
    cg.asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_TABLES))
    cg.asm.mov_rm(32, reg, (reg, NO_INDEX, 1, length))   # at most 2^32 - 1 elements
    cg.stack.append((REG, reg, I32))


def entry_address(cg: FunctionCompiler, table: int, off: int) -> None:
    """Turn the element index in r10 into the address of its entry in ``table``, trapping
    (``TableOutOfBounds``) past the table's current length. Uses r11."""
    asm = cg.asm
    desc = table * TABLE_DESC_SIZE
    asm.mov_rm(64, R11, (R14, NO_INDEX, 1, VMCTX_TABLES))
    asm.alu_rm(X.CMP, 64, R10, (R11, NO_INDEX, 1, desc + TABLE_DESC["length"]))
    asm.jcc(CC_AE, cg.trap_label(TrapCode.TableOutOfBounds, off))
    asm.mov_rm(64, R11, (R11, NO_INDEX, 1, desc + TABLE_DESC["base"]))
    asm.shift_ri(X.SHL, 64, R10, TABLE_ENTRY_SIZE.bit_length() - 1)
    asm.alu_rr(X.ADD, 64, R10, R11)

"""Reference instructions: ``ref.null``, ``ref.is_null``, ``ref.func``.

A reference is a 64-bit value in a general purpose register (``abi.value_class``): a funcref is
the address of the function's FUNCREF record in this instance (``abi.FUNCREF``), an externref
the host's handle for a Python object; null is 0 for both, so ``ref.is_null`` is ``i64.eqz``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...module.abi import FUNCREF_SIZE, VMCTX_FUNCREFS
from ..x86_64.encoding import NO_INDEX
from ..x86_64.registers import R14
from .context import CONST, FUNCREF, REG

if TYPE_CHECKING:
    from .function import FunctionCompiler


def op_ref_null(cg: FunctionCompiler, _, reftype, off):
    cg.stack.append((CONST, 0, reftype))


def op_ref_func(cg: FunctionCompiler, _, func_index, off):
    reg = cg.ctx.alloc()
    asm = cg.asm
    asm.mov_rm(64, reg, (R14, NO_INDEX, 1, VMCTX_FUNCREFS))
    asm.lea(64, reg, (reg, NO_INDEX, 1, FUNCREF_SIZE * cg.env.funcref_slot[func_index]))
    cg.stack.append((REG, reg, FUNCREF))

"""The dispatch table: wasm opcode -> (handler, argument), one explicit row per instruction.

Each row names the handler and every argument it needs (types, widths, signedness, the x86
instruction, the constant fold) instead of deriving them from the mnemonic, so a new row in the
opcode table (``wasm.opcodes``: an atomic, a SIMD instruction) compiles only once it is given a
row here; until then ``FunctionCompiler`` raises ``Unsupported`` naming it. A handler is called
as ``handler(cg, argument, imm, wasm_offset)``; ``cg`` is the ``FunctionCompiler``.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

from ...wasm.opcodes import OPS, Op
from ..x86_64 import encoding as X
from ..x86_64.registers import (CC_A, CC_AE, CC_B, CC_BE, CC_E, CC_G, CC_GE, CC_L, CC_LE, CC_NE)
from . import call as K
from . import control as C
from . import float_ops as F
from . import int_ops as I
from . import memory as M
from . import references as R
from . import tables as T
from . import variables as V
from .context import F32, F64, I32, I64

Handler = Callable[..., None]

_ROWS: Tuple[Tuple[Op, Handler, object], ...] = (
    # control flow
    (Op.UNREACHABLE, C.op_unreachable, None),
    (Op.NOP, C.op_nop, None),
    (Op.BLOCK, C.op_block, C.K_BLOCK),
    (Op.LOOP, C.op_block, C.K_LOOP),
    (Op.IF, C.op_if, None),
    (Op.ELSE, C.op_else, None),
    (Op.END, C.op_end, None),
    (Op.BR, C.op_br, None),
    (Op.BR_IF, C.op_br_if, None),
    (Op.BR_TABLE, C.op_br_table, None),
    (Op.RETURN, C.op_return, None),
    # calls
    (Op.CALL, K.op_call, None),
    (Op.CALL_INDIRECT, K.op_call_indirect, None),
    # parametric, locals, globals
    (Op.DROP, V.op_drop, None),
    (Op.SELECT, V.op_select, None),
    (Op.SELECT_T, V.op_select, None),
    (Op.LOCAL_GET, V.op_local_get, None),
    (Op.LOCAL_SET, V.op_local_set, False),
    (Op.LOCAL_TEE, V.op_local_set, True),
    (Op.GLOBAL_GET, V.op_global_get, None),
    (Op.GLOBAL_SET, V.op_global_set, None),
    # memory: loads (result type, bytes, sign-extending), stores (bytes)
    (Op.I32_LOAD, M.op_load, (I32, 4, False)),
    (Op.I64_LOAD, M.op_load, (I64, 8, False)),
    (Op.F32_LOAD, M.op_load, (F32, 4, False)),
    (Op.F64_LOAD, M.op_load, (F64, 8, False)),
    (Op.I32_LOAD8_S, M.op_load, (I32, 1, True)),
    (Op.I32_LOAD8_U, M.op_load, (I32, 1, False)),
    (Op.I32_LOAD16_S, M.op_load, (I32, 2, True)),
    (Op.I32_LOAD16_U, M.op_load, (I32, 2, False)),
    (Op.I64_LOAD8_S, M.op_load, (I64, 1, True)),
    (Op.I64_LOAD8_U, M.op_load, (I64, 1, False)),
    (Op.I64_LOAD16_S, M.op_load, (I64, 2, True)),
    (Op.I64_LOAD16_U, M.op_load, (I64, 2, False)),
    (Op.I64_LOAD32_S, M.op_load, (I64, 4, True)),
    (Op.I64_LOAD32_U, M.op_load, (I64, 4, False)),
    (Op.I32_STORE, M.op_store, 4),
    (Op.I64_STORE, M.op_store, 8),
    (Op.F32_STORE, M.op_store, 4),
    (Op.F64_STORE, M.op_store, 8),
    (Op.I32_STORE8, M.op_store, 1),
    (Op.I32_STORE16, M.op_store, 2),
    (Op.I64_STORE8, M.op_store, 1),
    (Op.I64_STORE16, M.op_store, 2),
    (Op.I64_STORE32, M.op_store, 4),
    (Op.MEMORY_SIZE, M.op_memory_size, None),
    (Op.MEMORY_GROW, M.op_memory_grow, None),
    (Op.MEMORY_COPY, M.op_memory_copy, None),
    (Op.MEMORY_FILL, M.op_memory_fill, None),
    (Op.MEMORY_INIT, M.op_memory_init, None),
    (Op.DATA_DROP, M.op_data_drop, None),
    # tables
    (Op.TABLE_SIZE, T.op_table_size, None),
    (Op.TABLE_GET, T.op_table_get, None),
    (Op.TABLE_SET, T.op_table_set, None),
    (Op.TABLE_GROW, T.op_table_grow, None),
    (Op.TABLE_FILL, T.op_table_fill, None),
    (Op.TABLE_COPY, T.op_table_copy, None),
    (Op.TABLE_INIT, T.op_table_init, None),
    (Op.ELEM_DROP, T.op_elem_drop, None),
    # references: null is 0, so ref.is_null is i64.eqz
    (Op.REF_NULL, R.op_ref_null, None),
    (Op.REF_IS_NULL, I.op_eqz, 64),
    (Op.REF_FUNC, R.op_ref_func, None),
    # integer constants and compares (condition code, width)
    (Op.I32_CONST, I.op_const, 32),
    (Op.I64_CONST, I.op_const, 64),
    (Op.I32_EQZ, I.op_eqz, 32),
    (Op.I32_EQ, I.op_compare, (CC_E, 32)),
    (Op.I32_NE, I.op_compare, (CC_NE, 32)),
    (Op.I32_LT_S, I.op_compare, (CC_L, 32)),
    (Op.I32_LT_U, I.op_compare, (CC_B, 32)),
    (Op.I32_GT_S, I.op_compare, (CC_G, 32)),
    (Op.I32_GT_U, I.op_compare, (CC_A, 32)),
    (Op.I32_LE_S, I.op_compare, (CC_LE, 32)),
    (Op.I32_LE_U, I.op_compare, (CC_BE, 32)),
    (Op.I32_GE_S, I.op_compare, (CC_GE, 32)),
    (Op.I32_GE_U, I.op_compare, (CC_AE, 32)),
    (Op.I64_EQZ, I.op_eqz, 64),
    (Op.I64_EQ, I.op_compare, (CC_E, 64)),
    (Op.I64_NE, I.op_compare, (CC_NE, 64)),
    (Op.I64_LT_S, I.op_compare, (CC_L, 64)),
    (Op.I64_LT_U, I.op_compare, (CC_B, 64)),
    (Op.I64_GT_S, I.op_compare, (CC_G, 64)),
    (Op.I64_GT_U, I.op_compare, (CC_A, 64)),
    (Op.I64_LE_S, I.op_compare, (CC_LE, 64)),
    (Op.I64_LE_U, I.op_compare, (CC_BE, 64)),
    (Op.I64_GE_S, I.op_compare, (CC_GE, 64)),
    (Op.I64_GE_U, I.op_compare, (CC_AE, 64)),
    # integer arithmetic: (instruction, width, fold), bit counts (instruction, width, CPU feature,
    # fold), divisions (width, signed, remainder)
    (Op.I32_CLZ, I.op_bitcount, (X.LZCNT, 32, "lzcnt", I.fold_clz)),
    (Op.I32_CTZ, I.op_bitcount, (X.TZCNT, 32, "bmi1", I.fold_ctz)),
    (Op.I32_POPCNT, I.op_bitcount, (X.POPCNT, 32, "popcnt", I.fold_popcnt)),
    (Op.I32_ADD, I.op_alu, (X.ADD, 32, I.fold_add)),
    (Op.I32_SUB, I.op_alu, (X.SUB, 32, I.fold_sub)),
    (Op.I32_MUL, I.op_mul, 32),
    (Op.I32_DIV_S, I.op_div, (32, True, False)),
    (Op.I32_DIV_U, I.op_div, (32, False, False)),
    (Op.I32_REM_S, I.op_div, (32, True, True)),
    (Op.I32_REM_U, I.op_div, (32, False, True)),
    (Op.I32_AND, I.op_alu, (X.AND, 32, I.fold_and)),
    (Op.I32_OR, I.op_alu, (X.OR, 32, I.fold_or)),
    (Op.I32_XOR, I.op_alu, (X.XOR, 32, I.fold_xor)),
    (Op.I32_SHL, I.op_shift, (X.SHL, 32, I.fold_shl)),
    (Op.I32_SHR_S, I.op_shift, (X.SAR, 32, I.fold_shr_s)),
    (Op.I32_SHR_U, I.op_shift, (X.SHR, 32, I.fold_shr_u)),
    (Op.I32_ROTL, I.op_shift, (X.ROL, 32, I.fold_rotl)),
    (Op.I32_ROTR, I.op_shift, (X.ROR, 32, I.fold_rotr)),
    (Op.I64_CLZ, I.op_bitcount, (X.LZCNT, 64, "lzcnt", I.fold_clz)),
    (Op.I64_CTZ, I.op_bitcount, (X.TZCNT, 64, "bmi1", I.fold_ctz)),
    (Op.I64_POPCNT, I.op_bitcount, (X.POPCNT, 64, "popcnt", I.fold_popcnt)),
    (Op.I64_ADD, I.op_alu, (X.ADD, 64, I.fold_add)),
    (Op.I64_SUB, I.op_alu, (X.SUB, 64, I.fold_sub)),
    (Op.I64_MUL, I.op_mul, 64),
    (Op.I64_DIV_S, I.op_div, (64, True, False)),
    (Op.I64_DIV_U, I.op_div, (64, False, False)),
    (Op.I64_REM_S, I.op_div, (64, True, True)),
    (Op.I64_REM_U, I.op_div, (64, False, True)),
    (Op.I64_AND, I.op_alu, (X.AND, 64, I.fold_and)),
    (Op.I64_OR, I.op_alu, (X.OR, 64, I.fold_or)),
    (Op.I64_XOR, I.op_alu, (X.XOR, 64, I.fold_xor)),
    (Op.I64_SHL, I.op_shift, (X.SHL, 64, I.fold_shl)),
    (Op.I64_SHR_S, I.op_shift, (X.SAR, 64, I.fold_shr_s)),
    (Op.I64_SHR_U, I.op_shift, (X.SHR, 64, I.fold_shr_u)),
    (Op.I64_ROTL, I.op_shift, (X.ROL, 64, I.fold_rotl)),
    (Op.I64_ROTR, I.op_shift, (X.ROR, 64, I.fold_rotr)),
    # integer conversions: (result type, source bits, sign-extending, fold)
    (Op.I32_WRAP_I64, I.op_convert, (I32, 32, False, I.fold_unsigned)),
    (Op.I64_EXTEND_I32_S, I.op_convert, (I64, 32, True, I.fold_sign_extend(32))),
    (Op.I64_EXTEND_I32_U, I.op_convert, (I64, 32, False, I.fold_unsigned)),
    (Op.I32_EXTEND8_S, I.op_convert, (I32, 8, True, I.fold_sign_extend(8))),
    (Op.I32_EXTEND16_S, I.op_convert, (I32, 16, True, I.fold_sign_extend(16))),
    (Op.I64_EXTEND8_S, I.op_convert, (I64, 8, True, I.fold_sign_extend(8))),
    (Op.I64_EXTEND16_S, I.op_convert, (I64, 16, True, I.fold_sign_extend(16))),
    (Op.I64_EXTEND32_S, I.op_convert, (I64, 32, True, I.fold_sign_extend(32))),
    # floats: constants, compares (condition code, width), arithmetic (instruction, width),
    # sqrt and rounding (width, rounding mode or None for sqrt), sign operations, min/max
    (Op.F32_CONST, F.op_fconst, F32),
    (Op.F32_EQ, F.op_fcompare, (CC_E, 32)),
    (Op.F32_NE, F.op_fcompare, (CC_NE, 32)),
    (Op.F32_LT, F.op_fcompare, (CC_B, 32)),
    (Op.F32_GT, F.op_fcompare, (CC_A, 32)),
    (Op.F32_LE, F.op_fcompare, (CC_BE, 32)),
    (Op.F32_GE, F.op_fcompare, (CC_AE, 32)),
    (Op.F32_ABS, F.op_fsign, ("abs", 32)),
    (Op.F32_NEG, F.op_fsign, ("neg", 32)),
    (Op.F32_COPYSIGN, F.op_fsign, ("copysign", 32)),
    (Op.F32_CEIL, F.op_funary, (32, X.ROUND_CEIL)),
    (Op.F32_FLOOR, F.op_funary, (32, X.ROUND_FLOOR)),
    (Op.F32_TRUNC, F.op_funary, (32, X.ROUND_TRUNC)),
    (Op.F32_NEAREST, F.op_funary, (32, X.ROUND_NEAREST)),
    (Op.F32_SQRT, F.op_funary, (32, None)),
    (Op.F32_ADD, F.op_farith, (X.ADDS, 32)),
    (Op.F32_SUB, F.op_farith, (X.SUBS, 32)),
    (Op.F32_MUL, F.op_farith, (X.MULS, 32)),
    (Op.F32_DIV, F.op_farith, (X.DIVS, 32)),
    (Op.F32_MIN, F.op_fminmax, (32, False)),
    (Op.F32_MAX, F.op_fminmax, (32, True)),
    (Op.F64_CONST, F.op_fconst, F64),
    (Op.F64_EQ, F.op_fcompare, (CC_E, 64)),
    (Op.F64_NE, F.op_fcompare, (CC_NE, 64)),
    (Op.F64_LT, F.op_fcompare, (CC_B, 64)),
    (Op.F64_GT, F.op_fcompare, (CC_A, 64)),
    (Op.F64_LE, F.op_fcompare, (CC_BE, 64)),
    (Op.F64_GE, F.op_fcompare, (CC_AE, 64)),
    (Op.F64_ABS, F.op_fsign, ("abs", 64)),
    (Op.F64_NEG, F.op_fsign, ("neg", 64)),
    (Op.F64_COPYSIGN, F.op_fsign, ("copysign", 64)),
    (Op.F64_CEIL, F.op_funary, (64, X.ROUND_CEIL)),
    (Op.F64_FLOOR, F.op_funary, (64, X.ROUND_FLOOR)),
    (Op.F64_TRUNC, F.op_funary, (64, X.ROUND_TRUNC)),
    (Op.F64_NEAREST, F.op_funary, (64, X.ROUND_NEAREST)),
    (Op.F64_SQRT, F.op_funary, (64, None)),
    (Op.F64_ADD, F.op_farith, (X.ADDS, 64)),
    (Op.F64_SUB, F.op_farith, (X.SUBS, 64)),
    (Op.F64_MUL, F.op_farith, (X.MULS, 64)),
    (Op.F64_DIV, F.op_farith, (X.DIVS, 64)),
    (Op.F64_MIN, F.op_fminmax, (64, False)),
    (Op.F64_MAX, F.op_fminmax, (64, True)),
    # float conversions: trunc (result type, float width, signed, saturating), convert (result
    # type, integer width, signed), promote/demote (source width), reinterpret (result type)
    (Op.I32_TRUNC_F32_S, F.op_trunc, (I32, 32, True, False)),
    (Op.I32_TRUNC_F32_U, F.op_trunc, (I32, 32, False, False)),
    (Op.I32_TRUNC_F64_S, F.op_trunc, (I32, 64, True, False)),
    (Op.I32_TRUNC_F64_U, F.op_trunc, (I32, 64, False, False)),
    (Op.I64_TRUNC_F32_S, F.op_trunc, (I64, 32, True, False)),
    (Op.I64_TRUNC_F32_U, F.op_trunc, (I64, 32, False, False)),
    (Op.I64_TRUNC_F64_S, F.op_trunc, (I64, 64, True, False)),
    (Op.I64_TRUNC_F64_U, F.op_trunc, (I64, 64, False, False)),
    (Op.I32_TRUNC_SAT_F32_S, F.op_trunc, (I32, 32, True, True)),
    (Op.I32_TRUNC_SAT_F32_U, F.op_trunc, (I32, 32, False, True)),
    (Op.I32_TRUNC_SAT_F64_S, F.op_trunc, (I32, 64, True, True)),
    (Op.I32_TRUNC_SAT_F64_U, F.op_trunc, (I32, 64, False, True)),
    (Op.I64_TRUNC_SAT_F32_S, F.op_trunc, (I64, 32, True, True)),
    (Op.I64_TRUNC_SAT_F32_U, F.op_trunc, (I64, 32, False, True)),
    (Op.I64_TRUNC_SAT_F64_S, F.op_trunc, (I64, 64, True, True)),
    (Op.I64_TRUNC_SAT_F64_U, F.op_trunc, (I64, 64, False, True)),
    (Op.F32_CONVERT_I32_S, F.op_fconvert, (F32, 32, True)),
    (Op.F32_CONVERT_I32_U, F.op_fconvert, (F32, 32, False)),
    (Op.F32_CONVERT_I64_S, F.op_fconvert, (F32, 64, True)),
    (Op.F32_CONVERT_I64_U, F.op_fconvert, (F32, 64, False)),
    (Op.F64_CONVERT_I32_S, F.op_fconvert, (F64, 32, True)),
    (Op.F64_CONVERT_I32_U, F.op_fconvert, (F64, 32, False)),
    (Op.F64_CONVERT_I64_S, F.op_fconvert, (F64, 64, True)),
    (Op.F64_CONVERT_I64_U, F.op_fconvert, (F64, 64, False)),
    (Op.F32_DEMOTE_F64, F.op_fprecision, 64),
    (Op.F64_PROMOTE_F32, F.op_fprecision, 32),
    (Op.I32_REINTERPRET_F32, F.op_reinterpret, I32),
    (Op.I64_REINTERPRET_F64, F.op_reinterpret, I64),
    (Op.F32_REINTERPRET_I32, F.op_reinterpret, F32),
    (Op.F64_REINTERPRET_I64, F.op_reinterpret, F64),
)


def _build() -> Dict[int, Tuple[Handler, object]]:
    table: Dict[int, Tuple[Handler, object]] = {}
    for op, handler, arg in _ROWS:
        if op in table:
            raise AssertionError(f"{OPS[op].name} has two rows")
        info = OPS[op]
        # a load's or store's row must agree with the opcode table's type and access size
        if handler is M.op_load:
            agrees = isinstance(arg, tuple) and arg[:2] == (info.results[0], info.access_size)
        elif handler is M.op_store:
            agrees = arg == info.access_size
        else:
            agrees = True
        if not agrees:
            raise AssertionError(f"the row of {info.name} disagrees with the opcode table")
        table[op] = (handler, arg)
    return table


DISPATCH = _build()

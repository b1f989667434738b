"""Every instruction form the encoder emits, cross-checked against capstone's decoder.

Each case encodes one instruction, asks capstone to decode it, and compares the mnemonic and
the decoded operands (registers by name, immediates modulo the operand width, memory operands by
base/index/scale/displacement/size), so a wrong REX bit, ModRM/SIB byte or displacement size
shows up as a mismatch rather than as a crash at run time.
"""

from __future__ import annotations

import itertools

import pytest

capstone = pytest.importorskip("capstone")
from capstone import x86 as cx  # noqa: E402

from pylucet.compiler.x86_64 import encoding as E  # noqa: E402
from pylucet.compiler.x86_64.registers import CC_NAMES, RSP, gpr_name  # noqa: E402

_MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_MD.detail = True

REGS = range(16)
INDEXES = [r for r in REGS if r != RSP]
DISPS = (0, 1, -1, 127, -128, 128, -129, 0x7FFF_FFFF, -0x8000_0000)
ALU = {E.ADD: "add", E.OR: "or", E.ADC: "adc", E.SBB: "sbb", E.AND: "and", E.SUB: "sub",
       E.XOR: "xor", E.CMP: "cmp"}
UNARY = {E.NOT: "not", E.NEG: "neg", E.MUL: "mul", E.IMUL1: "imul", E.DIV: "div", E.IDIV: "idiv"}
SHIFTS = {E.ROL: "rol", E.ROR: "ror", E.SHL: "shl", E.SHR: "shr", E.SAR: "sar"}
BITCOUNT = {E.POPCNT: "popcnt", E.TZCNT: "tzcnt", E.LZCNT: "lzcnt"}


def all_mems():
    """Every base with and without every index, every scale, and each displacement size."""
    for base in REGS:
        for disp in DISPS:
            yield (base, E.NO_INDEX, 1, disp)
        for index, scale in itertools.product(INDEXES, (1, 2, 4, 8)):
            yield (base, index, scale, 0x10 if index & 1 else 0)


def some_mems():
    """A cheaper set still covering the special bases (rsp/r12: SIB, rbp/r13: displacement)."""
    for base in REGS:
        for disp in (0, -8, 0x1000):
            yield (base, E.NO_INDEX, 1, disp)
        yield (base, (base + 5) % 16 if (base + 5) % 16 != RSP else 0, 8, 0)


def R(reg, w):
    return ("reg", gpr_name(reg, w))


def I(value, w):
    return ("imm", value & ((1 << w) - 1))


def M(mem, size):
    base, index, scale, disp = mem
    return ("mem", gpr_name(base), None if index < 0 else gpr_name(index),
            scale if index >= 0 else 1, disp, size)


def decode(code: bytes):
    insns = list(_MD.disasm(code, 0))
    assert len(insns) == 1 and insns[0].size == len(code), (code.hex(), insns)
    insn = insns[0]
    ops = []
    for op in insn.operands:
        if op.type == cx.X86_OP_REG:
            ops.append(("reg", insn.reg_name(op.reg)))
        elif op.type == cx.X86_OP_IMM:
            ops.append(("imm", op.imm & ((1 << (op.size * 8)) - 1)))
        else:
            m = op.mem
            ops.append(("mem", insn.reg_name(m.base) if m.base else None,
                        insn.reg_name(m.index) if m.index else None,
                        m.scale, m.disp, op.size))
    return insn.mnemonic, ops


def check(emit, mnemonic, *operands):
    asm = E.Assembler()
    emit(asm)
    assert decode(bytes(asm.code)) == (mnemonic, list(operands)), bytes(asm.code).hex()


def test_alu_reg_reg():
    for op, w, a, b in itertools.product(ALU, (32, 64), REGS, REGS):
        check(lambda s: s.alu_rr(op, w, a, b), ALU[op], R(a, w), R(b, w))


def test_alu_reg_imm():
    for op, w, r, imm in itertools.product(ALU, (32, 64), REGS, (0, 5, -1, 127, -128, 128,
                                                                  0x7FFF_FFFF, -0x8000_0000)):
        check(lambda s: s.alu_ri(op, w, r, imm), ALU[op], R(r, w), I(imm, w))
    check(lambda s: s.alu_ri(E.AND, 32, 0, 0xFFFF_FFFF), "and", R(0, 32), I(-1, 32))


def test_alu_mem():
    for op, w, r, mem in itertools.product(ALU, (32, 64), (0, 7, 8, 15), some_mems()):
        check(lambda s: s.alu_rm(op, w, r, mem), ALU[op], R(r, w), M(mem, w // 8))
    for w, mem, imm in itertools.product((32, 64), some_mems(), (3, -1000)):
        check(lambda s: s.alu_mi(E.CMP, w, mem, imm), "cmp", M(mem, w // 8), I(imm, w))


def test_every_memory_operand():
    for w, r, mem in itertools.product((32, 64), (0, 12), all_mems()):
        check(lambda s: s.mov_rm(w, r, mem), "mov", R(r, w), M(mem, w // 8))


def test_rsp_is_not_an_index():
    with pytest.raises(ValueError):
        E.Assembler().mov_rm(64, 0, (0, RSP, 1, 0))


def test_test_imul_unary():
    for w, a, b in itertools.product((32, 64), REGS, REGS):
        check(lambda s: s.test_rr(w, a, b), "test", R(a, w), R(b, w))
        check(lambda s: s.imul_rr(w, a, b), "imul", R(a, w), R(b, w))
        for imm in (3, -100, 1000):
            check(lambda s: s.imul_rri(w, a, b, imm), "imul", R(a, w), R(b, w), I(imm, w))
    for w, r, mem in itertools.product((32, 64), (1, 9), some_mems()):
        check(lambda s: s.imul_rm(w, r, mem), "imul", R(r, w), M(mem, w // 8))
    for op, w, r in itertools.product(UNARY, (32, 64), REGS):
        check(lambda s: s.unary_r(op, w, r), UNARY[op], R(r, w))
    for op, w, mem in itertools.product((E.DIV, E.IDIV), (32, 64), some_mems()):
        check(lambda s: s.unary_m(op, w, mem), UNARY[op], M(mem, w // 8))
    check(lambda s: s.cdq(32), "cdq")
    check(lambda s: s.cdq(64), "cqo")


def test_shifts_and_bitcounts():
    for op, w, r in itertools.product(SHIFTS, (32, 64), REGS):
        check(lambda s: s.shift_cl(op, w, r), SHIFTS[op], R(r, w), R(1, 8))
        for count in (1, 7, w - 1):
            check(lambda s: s.shift_ri(op, w, r, count), SHIFTS[op], R(r, w), I(count, 8))
    for kind, w, a, b in itertools.product(BITCOUNT, (32, 64), REGS, REGS):
        check(lambda s: s.bitcount(kind, w, a, b), BITCOUNT[kind], R(a, w), R(b, w))


def test_conditions():
    for cc, r in itertools.product(range(16), REGS):
        check(lambda s: s.setcc(cc, r), "set" + CC_NAMES[cc], R(r, 8))
        for w in (32, 64):
            check(lambda s: s.cmov_rr(cc, w, r, 15 - r), "cmov" + CC_NAMES[cc], R(r, w), R(15 - r, w))
    for cc, mem in itertools.product(range(16), some_mems()):
        check(lambda s: s.cmov_rm(cc, 64, 3, mem), "cmov" + CC_NAMES[cc], R(3, 64), M(mem, 8))


def test_moves():
    for w, a, b in itertools.product((32, 64), REGS, REGS):
        check(lambda s: s.mov_rr(w, a, b), "mov", R(a, w), R(b, w))
    for w, r, mem in itertools.product((8, 16, 32, 64), REGS, some_mems()):
        check(lambda s: s.mov_mr(w, mem, r), "mov", M(mem, w // 8), R(r, w))
    for w, mem, imm in itertools.product((8, 16, 32, 64), some_mems(), (0, -1, 0x1234)):
        check(lambda s: s.mov_mi(w, mem, imm), "mov", M(mem, w // 8), I(imm, w))
    for r, imm in itertools.product(REGS, (0, 1, 0xFFFF_FFFF, -1, -0x8000_0000, 1 << 32,
                                           0x8000_0000_0000_0000, 0x1234_5678_9ABC_DEF0)):
        check(lambda s: s.mov_ri(64, r, imm), "movabs" if not -0x8000_0000 <= imm <= 0xFFFF_FFFF
              else "mov", R(r, 32 if 0 <= imm <= 0xFFFF_FFFF else 64),
              I(imm, 32 if 0 <= imm <= 0xFFFF_FFFF else 64))
        check(lambda s: s.mov_ri(32, r, imm), "mov", R(r, 32), I(imm, 32))


def test_extensions():
    for srcw, a, b in itertools.product((8, 16), REGS, REGS):
        check(lambda s: s.movzx_rr(srcw, a, b), "movzx", R(a, 32), R(b, srcw))
        for w in (32, 64):
            check(lambda s: s.movsx_rr(w, srcw, a, b), "movsx", R(a, w), R(b, srcw))
    for a, b in itertools.product(REGS, REGS):
        check(lambda s: s.movsx_rr(64, 32, a, b), "movsxd", R(a, 64), R(b, 32))
    for r, mem in itertools.product((0, 6, 8, 14), some_mems()):
        for srcw in (8, 16):
            check(lambda s: s.movzx_rm(srcw, r, mem), "movzx", R(r, 32), M(mem, srcw // 8))
            for w in (32, 64):
                check(lambda s: s.movsx_rm(w, srcw, r, mem), "movsx", R(r, w), M(mem, srcw // 8))
        check(lambda s: s.movsx_rm(64, 32, r, mem), "movsxd", R(r, 64), M(mem, 4))
        for w in (32, 64):
            check(lambda s: s.lea(w, r, mem), "lea", R(r, w), M(mem, w // 8))


def test_stack_and_calls():
    for r in REGS:
        check(lambda s: s.push(r), "push", R(r, 64))
        check(lambda s: s.pop(r), "pop", R(r, 64))
        check(lambda s: s.call_r(r), "call", R(r, 64))
        check(lambda s: s.jmp_r(r), "jmp", R(r, 64))
    for mem in some_mems():
        check(lambda s: s.call_m(mem), "call", M(mem, 8))
    check(lambda s: s.call_rel32(), "call", I(5, 64))
    check(lambda s: s.ret(), "ret")
    check(lambda s: s.ud2(), "ud2")


def test_string_instructions():
    rdi, rsi = ("mem", "rdi", None, 1, 0, 1), ("mem", "rsi", None, 1, 0, 1)
    check(lambda s: s.rep_movsb(), "rep movsb", rdi, rsi)
    check(lambda s: s.rep_stosb(), "rep stosb", rdi, R(0, 8))
    check(lambda s: s.std(), "std")
    check(lambda s: s.cld(), "cld")


def test_jumps_and_labels():
    # forward references are rel32 and patched at bind; backward ones use rel8 when in reach
    for cc in range(16):
        asm = E.Assembler()
        fwd = asm.new_label()
        asm.jcc(cc, fwd)
        asm.code += b"\x90" * 300
        asm.bind(fwd)
        assert asm.unresolved() == 0
        insn = next(_MD.disasm(bytes(asm.code), 0))
        assert (insn.mnemonic, insn.size, insn.operands[0].imm) == ("j" + CC_NAMES[cc], 6, 306)
        back = asm.new_label()
        asm.bind(back)
        start = len(asm.code)
        asm.jcc(cc, back)
        insn = next(_MD.disasm(bytes(asm.code[start:]), start))
        assert (insn.size, insn.operands[0].imm) == (2, start)
    asm = E.Assembler()
    top = asm.new_label()
    asm.bind(top)
    asm.code += b"\x90" * 200
    asm.jmp(top)
    insn = next(_MD.disasm(bytes(asm.code[200:]), 200))
    assert (insn.mnemonic, insn.size, insn.operands[0].imm) == ("jmp", 5, 0)


def test_rip_relative_lea_and_jump_table():
    for r in REGS:
        asm = E.Assembler()
        table = asm.new_label()
        asm.lea_label(r, table)
        asm.code += b"\x90" * 3
        asm.bind(table)
        base = len(asm.code)
        target = asm.new_label()
        asm.table_entry(target, base)
        asm.bind(target)
        insn = next(_MD.disasm(bytes(asm.code), 0))
        assert insn.mnemonic == "lea" and insn.op_str == f"{gpr_name(r)}, [rip + 3]"
        assert int.from_bytes(asm.code[base:base + 4], "little") == 4


def X(reg):
    return ("reg", f"xmm{reg}")


SSE_OPS = {E.SQRTS: "sqrt", E.ADDS: "add", E.MULS: "mul", E.SUBS: "sub", E.MINS: "min",
           E.DIVS: "div", E.MAXS: "max"}
BITWISE = {E.ANDPS: "andps", E.ANDNPS: "andnps", E.ORPS: "orps", E.XORPS: "xorps"}


def test_sse_arithmetic_and_moves():
    for fw in (32, 64):
        sfx = "ss" if fw == 32 else "sd"
        other = "sd" if fw == 32 else "ss"
        for a, b in itertools.product(REGS, REGS):
            for op, name in SSE_OPS.items():
                check(lambda s: s.sse_op(op, fw, a, b), name + sfx, X(a), X(b))
            check(lambda s: s.sse_op(E.CVT_PRECISION, fw, a, b), f"cvt{sfx}2{other}", X(a), X(b))
            check(lambda s: s.ucomis(fw, a, b), "ucomi" + sfx, X(a), X(b))
            for mode in (E.ROUND_NEAREST, E.ROUND_FLOOR, E.ROUND_CEIL, E.ROUND_TRUNC):
                check(lambda s: s.rounds(fw, a, b, mode), "round" + sfx, X(a), X(b), I(mode, 8))
        for r, mem in itertools.product((0, 7, 8, 15), some_mems()):
            check(lambda s: s.sse_op(E.MOVS_LOAD, fw, r, mem), "mov" + sfx, X(r), M(mem, fw // 8))
            check(lambda s: s.sse_op(E.MOVS_STORE, fw, r, mem), "mov" + sfx, M(mem, fw // 8), X(r))
            check(lambda s: s.sse_op(E.ADDS, fw, r, mem), "add" + sfx, X(r), M(mem, fw // 8))
            check(lambda s: s.ucomis(fw, r, mem), "ucomi" + sfx, X(r), M(mem, fw // 8))
            check(lambda s: s.rounds(fw, r, mem, 9), "round" + sfx, X(r), M(mem, fw // 8), I(9, 8))
    for a, b in itertools.product(REGS, REGS):
        check(lambda s: s.movaps(a, b), "movaps", X(a), X(b))
        for op, name in BITWISE.items():
            check(lambda s: s.bitwise_ps(op, a, b), name, X(a), X(b))


def test_sse_conversions_and_gpr_moves():
    for fw, w, a, b in itertools.product((32, 64), (32, 64), REGS, REGS):
        sfx = "ss" if fw == 32 else "sd"
        check(lambda s: s.cvtsi2s(fw, w, a, b), "cvtsi2" + sfx, X(a), R(b, w))
        check(lambda s: s.cvtts2si(w, fw, a, b), f"cvtt{sfx}2si", R(a, w), X(b))
    for w, a, b in itertools.product((32, 64), REGS, REGS):
        name = "movd" if w == 32 else "movq"
        check(lambda s: s.movd_xr(w, a, b), name, X(a), R(b, w))
        check(lambda s: s.movd_rx(w, a, b), name, R(a, w), X(b))
    for w, mem in itertools.product((32, 64), some_mems()):
        check(lambda s: s.movd_xr(w, 3, mem), "movd" if w == 32 else "movq", X(3), M(mem, w // 8))
        check(lambda s: s.cvtsi2s(64, w, 3, mem), "cvtsi2sd", X(3), M(mem, w // 8))

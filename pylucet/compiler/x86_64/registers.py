"""x86-64 register numbers and condition codes, as the hardware numbers them.

Registers are plain ints so the encoder can do bit arithmetic on them directly: general purpose
registers are 0..15 (``RAX``..``R15``) and SSE registers are 0..15 as well (``XMM0``..); which
file a number refers to is decided by the instruction form, never by the number.
"""

from __future__ import annotations

RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R8, R9, R10, R11, R12, R13, R14, R15 = range(8, 16)
XMM = tuple(range(16))

GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def gpr_name(reg: int, width: int = 64) -> str:
    """The assembler spelling of ``reg`` at ``width`` bits (for tests and disassembly)."""
    name = GPR_NAMES[reg]
    if width == 64:
        return name
    if reg >= 8:
        return name + {32: "d", 16: "w", 8: "b"}[width]
    if width == 32:
        return "e" + name[1:]
    if width == 16:
        return name[1:]
    return {"rax": "al", "rcx": "cl", "rdx": "dl", "rbx": "bl",
            "rsp": "spl", "rbp": "bpl", "rsi": "sil", "rdi": "dil"}[name]


# Condition codes (the low nibble of jcc/setcc/cmovcc); ``cc ^ 1`` is the negation.
CC_O, CC_NO, CC_B, CC_AE, CC_E, CC_NE, CC_BE, CC_A = range(8)
CC_S, CC_NS, CC_P, CC_NP, CC_L, CC_GE, CC_LE, CC_G = range(8, 16)
CC_NAMES = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")

SWAPPED_CC = {CC_E: CC_E, CC_NE: CC_NE, CC_B: CC_A, CC_A: CC_B, CC_AE: CC_BE, CC_BE: CC_AE,
              CC_L: CC_G, CC_G: CC_L, CC_GE: CC_LE, CC_LE: CC_GE}
"""The condition that holds for ``cmp b, a`` exactly when ``cc`` holds for ``cmp a, b``."""

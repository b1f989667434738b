"""The assembly stubs on their own: encoding, the entry/exit context switch, memory_grow.

No compiler and no region here: guests are a few lines of keystone assembly in an executable
mapping, and an instance is a hand-made instance page, heap and stack (:class:`FakeInstance`),
so a failure points at the stubs and nothing else. ``tests/test_signals.py`` reuses the helpers.
"""

from __future__ import annotations

import ctypes
import re
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from pylucet.module.abi import (ENTRY_MAX_STACK_ARGS, INSTANCE_FIELDS, INSTANCE_MAGIC,
                                INSTANCE_PAGE_SIZE, PAGE_SIZE, VMCTX_FIELDS, WASM_PAGE_SIZE,
                                Libcall, vmctx_libcall)
from pylucet.runtime import libc, signals
from pylucet.runtime.stubs import (ENTER_BAD_ENTRY, ENTER_FAULTED, ENTER_RETURNED, GUEST_MXCSR,
                                   SOURCES, STUBS, asm_source)

RW = libc.PROT_READ | libc.PROT_WRITE
GROW_FAILED = 0xFFFFFFFF


# --- helpers shared with test_signals.py ------------------------------------------------------------

def _reserve(size: int) -> int:
    return libc.mmap(0, size, libc.PROT_NONE,
                     libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)


class Guest:
    """Fake guest functions: ``source`` assembled into a fresh read+execute mapping.

    Labels declared ``.globl`` become attributes' keys in :attr:`funcs`. The code is registered
    with the signal handler unless ``register=False``.
    """

    def __init__(self, source: str, register: bool = True):
        self.size = 64 * 1024
        self.base = libc.mmap(0, self.size, RW, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS)
        code, self.funcs = STUBS.assemble(source, self.base)
        assert len(code) <= self.size
        ctypes.memmove(self.base, code, len(code))
        libc.mprotect(self.base, self.size, libc.PROT_READ | libc.PROT_EXEC)
        self.end = self.base + len(code)
        self.handle = signals.register_code(self.base, self.end) if register else None

    def __getitem__(self, name: str) -> int:
        return self.funcs[name]

    def close(self) -> None:
        if self.handle is not None:
            signals.unregister_code(self.handle)
        libc.munmap(self.base, self.size)


class FakeInstance:
    """An instance page, a heap with ``heap_pages`` accessible wasm pages out of a PROT_NONE
    reservation, and a guest stack with a guard page below it."""

    HEAP_RESERVE = 4 << 20
    STACK_SIZE = 64 * 1024

    def __init__(self, heap_pages: int = 1, max_pages: int = 8):
        self.size = INSTANCE_PAGE_SIZE + self.HEAP_RESERVE
        self.page = _reserve(self.size)
        self.vmctx = self.page + INSTANCE_PAGE_SIZE
        libc.mprotect(self.page, INSTANCE_PAGE_SIZE + heap_pages * WASM_PAGE_SIZE, RW)
        self.stack = _reserve(PAGE_SIZE + self.STACK_SIZE)
        self.stack_base = self.stack + PAGE_SIZE
        libc.mprotect(self.stack_base, self.STACK_SIZE, RW)
        self.args = (ctypes.c_uint64 * ENTRY_MAX_STACK_ARGS)()
        self.u64 = (ctypes.c_uint64 * (INSTANCE_PAGE_SIZE // 8)).from_address(self.page)
        self["magic"] = INSTANCE_MAGIC
        self["stack_top"] = self.stack_base + self.STACK_SIZE
        self["entry_stack"] = ctypes.addressof(self.args)
        self.vm["memory_size"] = heap_pages * WASM_PAGE_SIZE
        self.vm["memory_max"] = max_pages * WASM_PAGE_SIZE
        self.vm_word(vmctx_libcall(Libcall.MEMORY_GROW), STUBS.libcall_address(Libcall.MEMORY_GROW))

    # instance-page fields by abi.py name
    def __getitem__(self, field: str) -> int:
        return self.u64[INSTANCE_FIELDS[field] // 8]

    def __setitem__(self, field: str, value: int) -> None:
        self.u64[INSTANCE_FIELDS[field] // 8] = value

    @property
    def vm(self) -> "_VmView":
        return _VmView(self)

    def vm_word(self, offset: int, value: Optional[int] = None) -> int:
        index = (INSTANCE_PAGE_SIZE + offset) // 8
        if value is not None:
            self.u64[index] = value
        return self.u64[index]

    def call(self, func: int, ints: Sequence[int] = (), floats: Sequence[float] = (),
             stack: Sequence[int] = ()) -> int:
        """Run ``func`` with register and stack arguments already classified; returns the status."""
        base = INSTANCE_FIELDS["entry_gpr"] // 8
        for i, v in enumerate(ints):
            self.u64[base + i] = v & (2**64 - 1)
        base = INSTANCE_FIELDS["entry_xmm"] // 8
        for i, v in enumerate(floats):
            self.u64[base + 2 * i] = _f64_bits(v)   # 16-byte xmm slots
        for i, v in enumerate(stack):
            self.args[i] = v
        self["entry_nstack"] = len(stack)
        self["entry_func"] = func
        return STUBS.enter(self.page)

    @property
    def fault(self) -> Dict[str, int]:
        return {k: self[f"fault_{k}"] for k in ("signo", "code", "addr", "rip", "rsp")}

    def close(self) -> None:
        libc.munmap(self.page, self.size)
        libc.munmap(self.stack, PAGE_SIZE + self.STACK_SIZE)


class _VmView:
    def __init__(self, inst: FakeInstance):
        self._inst = inst

    def __getitem__(self, field: str) -> int:
        return self._inst.vm_word(VMCTX_FIELDS[field])

    def __setitem__(self, field: str, value: int) -> None:
        self._inst.vm_word(VMCTX_FIELDS[field], value)


def _f64_bits(v: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", v))[0]


def _bits_f64(b: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", b))[0]


@pytest.fixture
def inst():
    signals.install()
    i = FakeInstance()
    yield i
    i.close()


# --- 1. keystone's output matches the source, instruction by instruction ------------------------------
# keystone 0.9.2 has encoding bugs that produce valid-looking but different instructions (an
# absolute [addr] operand silently became rip-relative), so every stub is disassembled with
# capstone and compared operand by operand with what its source line says.

_REGS = re.compile(r"^(r[a-d]x|r[sd]i|r[sb]p|rip|r\d+[dwb]?|e[a-d]x|e[sd]i|e[sb]p|[a-d][xlh]|"
                   r"[sd]il|[sb]pl|[sd]i|[sb]p|xmm\d+)$")
_ALIASES = {"jz": "je", "jnz": "jne", "jc": "jb", "jnc": "jae", "jnae": "jb", "jnb": "jae"}


def _source_instructions(source: str) -> List[Tuple[List[str], str, List[str]]]:
    """(labels before it, mnemonic, operand texts) for each instruction of an asm/ source."""
    out, labels = [], []
    for line in source.splitlines():
        line = line.split("#", 1)[0].strip()
        while True:
            m = re.match(r"^(\w+):\s*(.*)$", line)
            if not m:
                break
            labels.append(m.group(1))
            line = m.group(2)
        if not line or line.startswith("."):
            continue
        assert ";" not in line, "keystone reads ';' as a separator: one instruction per line"
        parts = line.split(None, 1)
        mnemonic = parts[0].lower()
        if mnemonic == "rep":
            mnemonic, parts = "rep " + parts[1].strip().lower(), [line]
        elif mnemonic == "lock":                     # a prefix: its instruction has operands
            inner = parts[1].split(None, 1)
            mnemonic, parts = "lock " + inner[0].lower(), [line, inner[1]]
        operands = [o.strip() for o in re.split(r",(?![^\[]*\])", parts[1])] if len(parts) > 1 else []
        out.append((labels, mnemonic, operands))
        labels = []
    return out


def _equates() -> Dict[str, int]:
    names: Dict[str, int] = {}
    for name, value in re.findall(r"^\.equ (\w+), (-?\d+)$", STUBS.prelude, re.MULTILINE):
        names[name] = int(value)
    names.update(STUBS.symbols)
    return names


def _value(expr: str, names: Dict[str, int]) -> int:
    return int(eval(expr, {"__builtins__": {}}, names))  # our own sources: +, -, *, <<, |


def _memory(text: str, names: Dict[str, int]) -> Tuple[Optional[str], Optional[str], int, int]:
    inner = re.search(r"\[(.*)\]", text).group(1)
    base = index = None
    scale, disp = 1, 0
    for sign, term in re.findall(r"([+-]?)\s*([^+-]+)", inner):
        term = term.strip()
        reg, _, factor = term.partition("*")
        if _REGS.match(reg.strip()):
            if factor or base is not None:
                index, scale = reg.strip(), int(factor or 1)
            else:
                base = reg.strip()
        else:
            disp += -_value(term, names) if sign == "-" else _value(term, names)
    return base, index, scale, disp


@pytest.fixture(scope="module")
def capstone_x86():
    capstone = pytest.importorskip("capstone")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return capstone, md


@pytest.mark.parametrize("name", SOURCES)
def test_stub_encoding_matches_source(name, capstone_x86):
    capstone, md = capstone_x86
    from capstone import x86
    source = _source_instructions(asm_source(name))
    code = STUBS.code[name]
    start = STUBS.ranges[name][0]
    decoded = list(md.disasm(code, start))
    assert sum(i.size for i in decoded) == len(code), "capstone could not decode everything"
    assert len(decoded) == len(source)
    names = _equates()
    for (labels, _, _), insn in zip(source, decoded):   # labels first: branches point forward
        for label in labels:
            names[label] = insn.address
    for (labels, mnemonic, operands), insn in zip(source, decoded):
        where = f"{name}: {mnemonic} {', '.join(operands)} vs {insn.mnemonic} {insn.op_str}"
        want = _ALIASES.get(mnemonic, mnemonic)
        got = "mov" if insn.mnemonic == "movabs" else insn.mnemonic
        assert _ALIASES.get(got, got) == ("mov" if want == "movabs" else want), where
        if not operands:
            continue                                     # rep movsq, cpuid: implicit operands
        assert len(insn.operands) == len(operands), where
        for text, op in zip(operands, insn.operands):
            if op.type == x86.X86_OP_REG:
                assert insn.reg_name(op.reg) == text.lower(), where
            elif op.type == x86.X86_OP_IMM:
                bits = 8 * op.size
                assert (op.imm - _value(text, names)) % (1 << bits) == 0, where
            else:
                assert op.type == x86.X86_OP_MEM, where
                base, index, scale, disp = _memory(text, names)
                got_base = insn.reg_name(op.mem.base) if op.mem.base else None
                got_index = insn.reg_name(op.mem.index) if op.mem.index else None
                assert (got_base, got_index, op.mem.disp) == (base, index, disp), where
                if index is not None:
                    assert op.mem.scale == scale, where


def test_exports_are_inside_their_files():
    for name, (start, end) in STUBS.ranges.items():
        for sym in re.findall(r"^\s*\.globl\s+(\w+)", asm_source(name), re.MULTILINE):
            assert start <= STUBS.symbols[sym] < end
    assert STUBS.libcall_address(Libcall.MEMORY_GROW) == STUBS.symbols["pylucet_memory_grow"]
    assert STUBS.libcall_range == STUBS.ranges["libcalls.s"]


def test_libc_libcalls_are_libcs_own_functions():
    """The bulk memory libcalls are libc's memmove and memset themselves (no wrapper, no PLT)."""
    host = ctypes.CDLL(None)
    for call, name in ((Libcall.MEMMOVE, "memmove"), (Libcall.MEMSET, "memset")):
        assert STUBS.libcall_address(call) == ctypes.cast(getattr(host, name),
                                                          ctypes.c_void_p).value


def test_no_hand_copied_abi_numbers():
    """Offsets into the instance page and vmctx must come from the .equ prelude."""
    for name in SOURCES:
        for _, _, operands in _source_instructions(asm_source(name)):
            for text in operands:
                if "[" in text:
                    assert not re.search(r"[+-]\s*(0x[0-9a-f]{3,}|\d{3,})", text), (name, text)


# --- 2. enter: arguments, results, preserved state --------------------------------------------------

def _weighted_sum_guest(kinds: str) -> str:
    """A guest taking arguments of ``kinds`` ('i' int, 'f' float) that returns
    rax = sum((k+1) * int_k), xmm0 = sum((k+1) * float_k) over argument positions k, and
    rdx = rsp mod 16 as seen at entry, after the return address (SysV says 8)."""
    lines = [".globl f", "f:", "    mov rdx, rsp", "    and edx, 15",
             "    xor eax, eax", "    xorpd xmm9, xmm9"]
    gpr = ["rdi", "rsi", "rdx_saved", "rcx", "r8", "r9"]
    ni = nf = ns = 0
    lines.insert(2, "    mov r11, rdx")          # rdx (3rd int arg) is reused for the alignment
    for k, kind in enumerate(kinds):
        weight = k + 1
        if kind == "i":
            if ni < 6:
                src = "r11" if gpr[ni] == "rdx_saved" else gpr[ni]
                lines += [f"    mov r10, {src}"]
            else:
                lines += [f"    mov r10, qword ptr [rsp + {8 + 8 * ns}]"]
                ns += 1
            ni += 1
            lines += [f"    imul r10, r10, {weight}", "    add rax, r10"]
        else:
            if nf < 8:
                lines += [f"    movq xmm10, xmm{nf}"]
            else:
                lines += [f"    movq xmm10, qword ptr [rsp + {8 + 8 * ns}]"]
                ns += 1
            nf += 1
            lines += [f"    movabs r10, {_f64_bits(float(weight))}", "    movq xmm11, r10",
                      "    mulsd xmm10, xmm11", "    addsd xmm9, xmm10"]
    lines += ["    movq xmm0, xmm9", "    ret"]
    return "\n".join(lines) + "\n"


def _classify(kinds: str, ints: List[int], floats: List[float]):
    """SysV: the first 6 ints and 8 floats in registers, the rest on the stack in order."""
    regs_i, regs_f, stack = [], [], []
    it_i, it_f = iter(ints), iter(floats)
    for kind in kinds:
        if kind == "i":
            v = next(it_i)
            (regs_i if len(regs_i) < 6 else stack).append(v)
        else:
            v = next(it_f)
            if len(regs_f) < 8:
                regs_f.append(v)
            else:
                stack.append(_f64_bits(v))
    return regs_i, regs_f, stack


_KINDS = ([("i" * n) for n in range(11)] + [("f" * n) for n in range(1, 11)]
          + ["ifififififi"[:n] for n in range(2, 11)] + ["fffffffffiiiiiii", "iiiiiiiffffffffff"])


@pytest.mark.parametrize("kinds", _KINDS)
def test_enter_passes_arguments_and_returns_results(inst, kinds):
    guest = Guest(_weighted_sum_guest(kinds))
    try:
        ints = [(k + 1) * 1000003 + (1 << 40) for k, c in enumerate(kinds) if c == "i"]
        floats = [0.5 + k * 1.25 for k, c in enumerate(kinds) if c == "f"]
        regs_i, regs_f, stack = _classify(kinds, ints, floats)
        assert inst.call(guest["f"], regs_i, regs_f, stack) == ENTER_RETURNED
        it_i, it_f = iter(ints), iter(floats)
        want_i = want_f = 0
        for k, c in enumerate(kinds):
            if c == "i":
                want_i += (k + 1) * next(it_i)
            else:
                want_f += (k + 1) * next(it_f)
        assert inst["ret_rax"] == want_i % 2**64
        assert _bits_f64(inst["ret_xmm0"]) == pytest.approx(want_f)
        assert inst["ret_rdx"] == 8, "rsp must be 16-byte aligned at the call"
    finally:
        guest.close()


def test_enter_returns_two_results_of_each_kind(inst):
    guest = Guest("""
    .globl f
    f:
        movabs rax, 0x1122334455667788     # first integer result
        movabs rdx, 0x99aabbccddeeff00     # second
        movabs r10, 0x400921fb54442d18     # pi
        movq xmm0, r10
        movabs r10, 0x4005bf0a8b145769     # e
        movq xmm1, r10
        ret
    """)
    try:
        assert inst.call(guest["f"]) == ENTER_RETURNED
        assert (inst["ret_rax"], inst["ret_rdx"]) == (0x1122334455667788, 0x99aabbccddeeff00)
        assert _bits_f64(inst["ret_xmm0"]) == pytest.approx(3.141592653589793)
        assert _bits_f64(inst["ret_xmm1"]) == pytest.approx(2.718281828459045)
    finally:
        guest.close()


def test_guest_sees_vmctx_in_r14_and_runs_on_its_own_stack(inst):
    guest = Guest("""
    .globl f
    f:
        mov rax, r14                       # vmctx
        mov rdx, rsp                       # somewhere on the guest stack
        ret
    """)
    try:
        assert inst.call(guest["f"]) == ENTER_RETURNED
        assert inst["ret_rax"] == inst.vmctx
        assert inst.stack_base <= inst["ret_rdx"] < inst.stack_base + inst.STACK_SIZE
    finally:
        guest.close()


def test_too_many_stack_arguments_are_refused(inst):
    guest = Guest(".globl f\nf:\n    ud2\n")
    try:
        inst["entry_nstack"] = ENTRY_MAX_STACK_ARGS + 1
        inst["entry_func"] = guest["f"]
        assert STUBS.enter(inst.page) == ENTER_BAD_ENTRY
    finally:
        guest.close()


_HOST_HARNESS = """
# A stand-in for the host: fills every callee-saved register and MXCSR with known values, calls
# pylucet_enter(rdi), and returns status | (bitmask of registers that changed) << 8.
.globl harness
harness:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    sub rsp, 24                          # keep the call 16-byte aligned; [rsp] = mxcsr scratch
    stmxcsr dword ptr [rsp + 8]          # the caller's MXCSR, restored at the end
    mov dword ptr [rsp], 0x9fc0          # MXCSR: exceptions masked, flush-to-zero, denormals-are-zero
    ldmxcsr dword ptr [rsp]
    movabs rbx, 0x1111111111111111
    movabs rbp, 0x2222222222222222
    movabs r12, 0x3333333333333333
    movabs r13, 0x4444444444444444
    movabs r14, 0x5555555555555555
    movabs r15, 0x6666666666666666
    movabs rax, pylucet_enter
    call rax
    xor ecx, ecx                         # bitmask of clobbered registers
    movabs rdx, 0x1111111111111111
    cmp rbx, rdx
    je ok_rbx
    or ecx, 1
ok_rbx:
    movabs rdx, 0x2222222222222222
    cmp rbp, rdx
    je ok_rbp
    or ecx, 2
ok_rbp:
    movabs rdx, 0x3333333333333333
    cmp r12, rdx
    je ok_r12
    or ecx, 4
ok_r12:
    movabs rdx, 0x4444444444444444
    cmp r13, rdx
    je ok_r13
    or ecx, 8
ok_r13:
    movabs rdx, 0x5555555555555555
    cmp r14, rdx
    je ok_r14
    or ecx, 16
ok_r14:
    movabs rdx, 0x6666666666666666
    cmp r15, rdx
    je ok_r15
    or ecx, 32
ok_r15:
    stmxcsr dword ptr [rsp + 4]
    cmp dword ptr [rsp + 4], 0x9fc0
    je ok_mxcsr
    or ecx, 64
ok_mxcsr:
    test rsp, 15                         # the host stack came back where it was
    jz ok_rsp
    or ecx, 128
ok_rsp:
    shl ecx, 8
    or eax, ecx
    ldmxcsr dword ptr [rsp + 8]
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"""

_CLOBBERING_GUESTS = """
# Guests that change everything they may (and more): the host must not notice.
.globl polite
polite:                                  # SysV-conforming, but changes MXCSR
    push rbx
    push rbp
    mov ebx, 0x7f80                      # round toward zero
    push rbx
    ldmxcsr dword ptr [rsp]
    pop rbx
    pop rbp
    pop rbx
    mov eax, 42
    ret
.globl rude
rude:                                    # trashes every register, then faults
    push 0x1f80 | 0x6000                 # round toward zero
    ldmxcsr dword ptr [rsp]
    xor ebx, ebx
    xor ebp, ebp
    xor r12d, r12d
    xor r13d, r13d
    xor r15d, r15d
    std                                  # direction flag set: the host must get it cleared
    mov rsp, 16                          # no usable stack at all
    ud2
"""


@pytest.mark.parametrize("func, status", [("polite", ENTER_RETURNED), ("rude", ENTER_FAULTED)])
def test_host_registers_and_mxcsr_survive(inst, func, status):
    host = Guest(_HOST_HARNESS, register=False)
    guest = Guest(_CLOBBERING_GUESTS)
    try:
        harness = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(host["harness"])
        inst["entry_nstack"] = 0
        inst["entry_func"] = guest[func]
        result = harness(inst.page)
        assert result & 0xFF == status
        assert result >> 8 == 0, f"clobbered: {result >> 8:#b}"
    finally:
        guest.close()
        host.close()


def test_guest_gets_the_wasm_float_environment(inst):
    """The harness host runs with flush-to-zero; the guest must not inherit it."""
    host = Guest(_HOST_HARNESS, register=False)
    guest = Guest("""
    .globl f
    f:
        push rax
        stmxcsr dword ptr [rsp]            # what the guest was given
        pop rax
        ret
    """)
    try:
        harness = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(host["harness"])
        inst["entry_nstack"] = 0
        inst["entry_func"] = guest["f"]
        assert harness(inst.page) == ENTER_RETURNED
        assert inst["ret_rax"] & 0xFFFFFFFF == GUEST_MXCSR
    finally:
        guest.close()
        host.close()


# --- 3. memory_grow ------------------------------------------------------------------------------------

_GROW_GUEST = """
.globl grow
grow:                                    # u32 grow(u32 delta): memory.grow through the libcall
    sub rsp, 8                           # 16-byte alignment for the call
    call qword ptr [r14 + LIBCALL_MEMORY_GROW]
    add rsp, 8
    ret
.globl store
store:                                   # store(u32 offset): write 1 byte into the heap
    mov edi, edi
    mov byte ptr [r14 + rdi], 0x5a
    ret
"""


@pytest.fixture
def grow_guest():
    signals.install()
    g = Guest(_GROW_GUEST)
    yield g
    g.close()


def _grow(inst: FakeInstance, guest: Guest, delta: int) -> int:
    assert inst.call(guest["grow"], [delta]) == ENTER_RETURNED
    return inst["ret_rax"] & 0xFFFFFFFF


def test_memory_grow_makes_pages_accessible(inst, grow_guest):
    assert _grow(inst, grow_guest, 0) == 1
    assert inst.call(grow_guest["store"], [WASM_PAGE_SIZE]) == ENTER_FAULTED
    assert _grow(inst, grow_guest, 2) == 1
    assert inst.vm["memory_size"] == 3 * WASM_PAGE_SIZE
    assert inst.call(grow_guest["store"], [3 * WASM_PAGE_SIZE - 1]) == ENTER_RETURNED
    assert ctypes.string_at(inst.vmctx + 3 * WASM_PAGE_SIZE - 1, 1) == b"\x5a"
    assert inst.call(grow_guest["store"], [3 * WASM_PAGE_SIZE]) == ENTER_FAULTED
    assert _grow(inst, grow_guest, 0) == 3


def test_memory_grow_respects_the_maximum(inst, grow_guest):
    assert _grow(inst, grow_guest, 8) == GROW_FAILED          # 1 + 8 > 8
    assert inst.vm["memory_size"] == WASM_PAGE_SIZE
    assert _grow(inst, grow_guest, 7) == 1                   # exactly the maximum
    assert _grow(inst, grow_guest, 1) == GROW_FAILED
    assert _grow(inst, grow_guest, 0xFFFFFFFF) == GROW_FAILED
    assert inst.vm["memory_size"] == 8 * WASM_PAGE_SIZE


def test_memory_grow_never_passes_4_gib(inst, grow_guest):
    inst.vm["memory_max"] = 1 << 40                           # a maximum no wasm memory has
    assert _grow(inst, grow_guest, 65536) == GROW_FAILED      # 1 + 65536 pages > 4 GiB
    assert _grow(inst, grow_guest, 0xFFFFFFFF) == GROW_FAILED
    assert inst.vm["memory_size"] == WASM_PAGE_SIZE


def test_memory_grow_reports_mprotect_failure(inst, grow_guest):
    # Unmap the heap reservation past the current size: mprotect then fails (ENOMEM), which the
    # libcall must report as a failed grow, leaving the size alone.
    libc.munmap(inst.vmctx + WASM_PAGE_SIZE, inst.HEAP_RESERVE - WASM_PAGE_SIZE)
    assert _grow(inst, grow_guest, 1) == GROW_FAILED
    assert inst.vm["memory_size"] == WASM_PAGE_SIZE
    assert _grow(inst, grow_guest, 0) == 1


# --- 4. cpu features and libc errors ---------------------------------------------------------------

def test_cpu_features_agree_with_the_kernel():
    from pylucet.runtime.cpu import cpu_features
    features = cpu_features()
    assert features is cpu_features()                          # cached
    assert {"sse", "sse2"} <= features                         # the x86-64 baseline
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags")
    kernel_names = {"popcnt": "popcnt", "lzcnt": "abm", "bmi1": "bmi1", "bmi2": "bmi2",
                    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "ssse3": "ssse3", "avx": "avx",
                    "avx2": "avx2", "fma": "fma"}
    for ours, kernels in kernel_names.items():
        assert (ours in features) == (kernels in flags), ours


def test_libc_failures_name_the_call():
    with pytest.raises(OSError) as e:
        libc.mprotect(1, PAGE_SIZE, RW)                        # not page aligned
    assert e.value.errno == 22 and str(e.value).startswith("[Errno 22] mprotect:")
    with pytest.raises(OSError, match="munmap"):
        libc.munmap(1, PAGE_SIZE)
    with pytest.raises(OSError, match="mmap"):
        libc.mmap(0, 0, RW, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS)   # zero length: EINVAL


def test_stubs_that_do_not_assemble_are_a_stub_error(monkeypatch):
    import pylucet
    from pylucet.runtime import stubs
    real = stubs.asm_source
    monkeypatch.setattr(stubs, "asm_source",
                        lambda name: "    bogus rax\n" if name == "cpuid.s" else real(name))
    with pytest.raises(pylucet.StubError, match=r"asm/cpuid.s: .*bogus rax") as info:
        stubs.Stubs()
    assert isinstance(info.value, pylucet.LoadError)

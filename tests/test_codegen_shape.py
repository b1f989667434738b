"""The shape of the code for what the benchmarks spend their time on, pinned per optimisation
(issue 9), so that a later change cannot undo one silently. What the code computes is checked
elsewhere (test_codegen*.py, test_sightglass.py); here only its form: which instructions, and how
many."""

from __future__ import annotations

from pylucet.compiler.codegen.context import LEAF_LOCAL_REGS, LOCAL_REGS
from pylucet.module.abi import Libcall, vmctx_libcall

from .conftest import disassemble, instantiate as instance


def _libcall(call: Libcall) -> tuple:
    return ("call", f"qword ptr [r14 - {-vmctx_libcall(call):#x}]")


def test_bulk_memory_calls_libc():
    """memory.copy is libc's memmove and memory.fill its memset, after the range checks: no
    string instructions, no direction flag (a backward ``rep movsb`` was ten times slower than
    Cranelift on shootout-memmove)."""
    insns = disassemble("""(module (memory 1)
      (func (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
      (func (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2))))""")
    mnemonics = [m for m, _ in insns]
    assert insns.count(_libcall(Libcall.MEMMOVE)) == 1, insns
    assert insns.count(_libcall(Libcall.MEMSET)) == 1, insns
    assert not {"rep movsb", "rep stosb", "std", "cld"} & set(mnemonics), insns
    # each range is checked before its call: two compares for the copy, one for the fill
    assert mnemonics.count("ja") == 3, insns



def _busy_locals(k: int) -> str:
    """A loop that makes ``k`` locals busier than any other, so they take the registers for
    locals and the others live in the frame."""
    body = "".join(f"(local.set $r{i} (i32.add (local.get $r{i}) (local.get $r{(i + 1) % k})))"
                   for i in range(k))
    return (" ".join(f"(local $r{i} i32)" for i in range(k)),
            f"(loop $l {body} (br_if $l (local.get $r0)))")


def test_tee_of_a_frame_local_keeps_the_value_in_hand():
    """``local.tee`` of a local in the frame stores the value and goes on with the register it
    was in: its user does not reload it from the slot just written (a store-to-load round trip
    on the critical path of every ARX hash round: seqhash, chacha, blake3)."""
    decls, loop = _busy_locals(len(LEAF_LOCAL_REGS + LOCAL_REGS))
    insns = disassemble(f"""(module (func (param $p i32) (result i32) {decls} (local $x i32)
      {loop}
      (i32.rotl (local.tee $x (i32.mul (local.get $p) (local.get $p))) (i32.const 7))))""")
    k = [m for m, _ in insns].index("imul")
    store = insns[k + 1]
    assert store[0] == "mov" and store[1].startswith("dword ptr [rsp"), insns
    slot = store[1].split(",")[0]
    assert [i for i in insns if slot in i[1]] == [store], insns   # written once, never read
    assert insns[k + 2][0] == "rol", insns


def test_a_leaf_keeps_its_locals_in_caller_saved_registers():
    """A function that calls nothing keeps its busiest locals in caller-saved registers first
    (``LEAF_LOCAL_REGS``): no push or pop for them, no frame, and a parameter whose argument
    register is one of them stays in it. ed25519 spends most of its time in such a leaf
    (``__multi3``), which pushed and popped all five callee-saved registers on every call."""
    body = """(param i64 i64 i64) (result i64) (local i64)
      (local.set 3 (i64.mul (local.get 0) (local.get 1)))
      (i64.add (i64.mul (local.get 2) (local.get 3)) (local.get 3))"""
    assert len(LEAF_LOCAL_REGS) >= 4
    leaf = disassemble(f"(module (func {body}))")
    assert not [i for i in leaf if i[0] in ("push", "pop") or "rsp +" in i[1]], leaf
    # the parameters arrive in rdi, rsi and rdx: only rdx, no local's home, is moved
    entry = leaf[:[m for m, _ in leaf].index("xor")]   # up to zeroing the declared local
    assert [ops.split(", ")[1] for m, ops in entry if m == "mov" and "ptr" not in ops] \
        == ["rdx"], leaf
    # with a call in it, the same locals take callee-saved registers, pushed and popped
    caller = disassemble(f"(module (func $f) (func {body} (call $f)))")
    assert [m for m, _ in caller].count("push") == 4, caller


def test_leaf_parameters_move_to_their_registers_at_once(region):
    """Parameters arrive in argument registers that are also a leaf's local homes: the moves
    are one parallel move, so none overwrites a parameter still to be read."""
    with instance(region, """(module (func (export "f")
        (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.sub (local.get 7) (i32.sub (local.get 6) (i32.sub (local.get 5) (i32.sub (local.get 4)
        (i32.sub (local.get 3) (i32.sub (local.get 2) (i32.sub (local.get 1)
          (i32.mul (local.get 0) (i32.const 3)))))))))))""") as inst:
        args = [1 << (4 * k) for k in range(8)]
        want = args[0] * 3
        for a in args[1:]:
            want = a - want
        assert inst.run("f", *args) == want & 0xFFFF_FFFF


def test_and_with_the_low_half_mask_is_a_32_bit_move():
    """``i64.and x, 0xFFFFFFFF`` (the 64-bit multiply helpers do it for every partial
    product) zero-extends x's low half with one ``mov r32, r32``, not a 64-bit immediate
    through r11 and an ``and``."""
    insns = disassemble("""(module (func (param i64) (result i64)
      (i64.and (i64.mul (local.get 0) (local.get 0)) (i64.const 0xFFFFFFFF))))""")
    assert not [i for i in insns if i[0] == "and" or "0xffffffff" in i[1]], insns
    k = [m for m, _ in insns].index("imul")
    reg = insns[k][1].split(", ")[0]
    low = {"rax": "eax", "rcx": "ecx", "rdx": "edx", "r10": "r10d"}[reg]
    assert insns[k + 1] == ("mov", f"{low}, {low}"), insns

"""The shape of the code for what the benchmarks spend their time on, pinned per optimisation
(issue 9), so that a later change cannot undo one silently. What the code computes is checked
elsewhere (test_codegen*.py, test_sightglass.py); here only its form: which instructions, and how
many."""

from __future__ import annotations

from pylucet.module.abi import Libcall, vmctx_libcall

from .conftest import disassemble


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
    decls, loop = _busy_locals(5)
    insns = disassemble(f"""(module (func (param $p i32) (result i32) {decls} (local $x i32)
      {loop}
      (i32.rotl (local.tee $x (i32.mul (local.get $p) (local.get $p))) (i32.const 7))))""")
    k = [m for m, _ in insns].index("imul")
    store = insns[k + 1]
    assert store[0] == "mov" and store[1].startswith("dword ptr [rsp"), insns
    slot = store[1].split(",")[0]
    assert [i for i in insns if slot in i[1]] == [store], insns   # written once, never read
    assert insns[k + 2][0] == "rol", insns

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


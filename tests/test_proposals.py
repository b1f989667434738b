"""Instructions of proposals beyond WebAssembly 2.0 are refused as `Unsupported` (precisely
`pylucet.errors.UnsupportedProposal`), naming the instruction and its proposal, by the decoder,
the WAT parser and the validator alike; opcodes no proposal uses stay `MalformedModule`."""

from __future__ import annotations

import pytest

import pylucet
from pylucet.errors import MalformedModule, UnsupportedProposal
from pylucet.wasm.decoder import decode_body, decode_module
from pylucet.wasm.opcodes import OPS, PROPOSAL_OPS, Proposal, proposal_of_code, proposal_of_name
from pylucet.wasm.validator import Validator

from .test_decoder import END, func_module, module, section, vec

V128_ZERO = b"\xfd\x0c" + bytes(16)


@pytest.mark.parametrize("code,instruction,proposal", [
    (V128_ZERO + b"\x1a", "v128.const", Proposal.SIMD),            # clang -msimd128
    (b"\xfd\x80\x01", "opcode 0xfd 128", Proposal.SIMD),           # i32x4.add-ish, no row
    (b"\x12\x00", "return_call", Proposal.TAIL_CALL),
    (b"\x13\x00\x00", "return_call_indirect", Proposal.TAIL_CALL),
    (b"\x14\x00", "call_ref", Proposal.FUNCTION_REFERENCES),
    (b"\x06\x40", "try", Proposal.EXCEPTIONS),
    (b"\x08\x00", "throw", Proposal.EXCEPTIONS),
    (b"\x19", "catch_all", Proposal.EXCEPTIONS),
    (b"\xfe\x03\x00", "atomic.fence", Proposal.THREADS),
    (b"\xfe\x1e", "opcode 0xfe 30", Proposal.THREADS),
    (b"\xfb\x00", "opcode 0xfb 0", Proposal.GC),
])
def test_decoder_names_the_proposal(code, instruction, proposal):
    binary = func_module(b"\x01" + code + END)
    with pytest.raises(UnsupportedProposal) as info:
        decode_module(binary, check_bodies=True)
    e = info.value
    assert isinstance(e, pylucet.Unsupported) and not isinstance(e, MalformedModule)
    assert (e.instruction, e.proposal) == (instruction, proposal.value)
    assert binary[e.offset] == code[0]
    with pytest.raises(pylucet.Unsupported, match=proposal.value.split(" (")[0]):
        pylucet.compile(binary)


@pytest.mark.parametrize("code", [b"\x27", b"\xff", b"\xc5", b"\xfc\x40"])
def test_other_opcodes_stay_malformed(code):
    with pytest.raises(MalformedModule, match="illegal opcode"):
        decode_module(func_module(code + END), check_bodies=True)


@pytest.mark.parametrize("text,instruction,proposal", [
    ("(drop (v128.const i32x4 0 0 0 0))", "v128.const", Proposal.SIMD),
    ("(drop (i32x4.add (local.get 0) (local.get 0)))", "i32x4.add", Proposal.SIMD),
    ("(return_call 0)", "return_call", Proposal.TAIL_CALL),
    ("(return_call_indirect (type 0) (i32.const 0))", "return_call_indirect", Proposal.TAIL_CALL),
    ("(i32.atomic.rmw.add (i32.const 0) (i32.const 1))", "i32.atomic.rmw.add", Proposal.THREADS),
    ("(memory.atomic.notify (i32.const 0) (i32.const 1))", "memory.atomic.notify",
     Proposal.THREADS),
    ("(try (do))", "try", Proposal.EXCEPTIONS),
    ("(call_ref 0)", "call_ref", Proposal.FUNCTION_REFERENCES),
    ("(struct.new 0)", "struct.new", Proposal.GC),
])
def test_wat_parser_names_the_proposal(text, instruction, proposal):
    src = f"(module (memory 1) (table 1 funcref) (func (param v128) {text}))"
    src = src.replace("(param v128) ", "") if "v128" not in text and "x4" not in text else src
    with pytest.raises(UnsupportedProposal) as info:
        pylucet.compile(src)
    assert (info.value.instruction, info.value.proposal) == (instruction, proposal.value)
    assert src[info.value.offset:].startswith(instruction)


@pytest.mark.parametrize("name", ["i32.foo", "f32x4.convert_s/i32x4", "v128", "i32x4"])
def test_wat_other_names_stay_unknown(name):
    with pytest.raises(MalformedModule, match="unknown operator|unexpected token"):
        pylucet.compile(f"(module (func ({name})))")


def test_validator_names_the_proposal():
    """A caller that builds instruction lists itself (not through the decoder) gets the same."""
    binary = func_module(b"\x01" + END)
    m = decode_module(binary)
    instrs = decode_body(m, m.codes[0])
    instrs = [(0x12, 0, 0)] + instrs
    with pytest.raises(UnsupportedProposal, match="return_call.*tail call"):
        Validator(m).validate_function(0, instrs)


def test_proposal_rows_are_not_2_0_rows():
    """The proposal table may not shadow an instruction pylucet supports."""
    assert not set(PROPOSAL_OPS) & set(OPS)
    assert all(proposal_of_code(code) is None for code in OPS)
    assert all(proposal_of_name(info.name) is None for info in OPS.values())


@pytest.mark.parametrize("section_id,entry,what,proposal", [
    (5, b"\x04\x01", "64-bit limits", Proposal.MEMORY64),
    (5, b"\x05\x01\x02", "64-bit limits", Proposal.MEMORY64),
    (5, b"\x03\x01\x02", "shared memory", Proposal.THREADS),
    (4, b"\x70\x04\x01", "64-bit limits", Proposal.MEMORY64),
])
def test_limits_of_later_proposals(section_id, entry, what, proposal):
    binary = module(section(section_id, vec([entry])))
    with pytest.raises(UnsupportedProposal) as info:
        decode_module(binary)
    assert (info.value.instruction, info.value.proposal) == (what, proposal.value)
    flag_at = 1 if section_id == 4 else 0   # a table type starts with its element type
    assert binary[info.value.offset] == entry[flag_at]


@pytest.mark.parametrize("flag", [b"\x02", b"\x10"])
def test_other_limits_flags_stay_malformed(flag):
    """As binary.wast has it."""
    with pytest.raises(MalformedModule, match="integer too large"):
        decode_module(module(section(5, vec([flag + b"\x00"]))))

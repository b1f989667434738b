"""Deep nesting in WAT parses without Python recursion: 50,000 levels of every nesting form (as
the binary decoder takes), through the .wast reader too, and on into validation; an unclosed
construct at depth is still a clean syntax error, never a RecursionError."""

from __future__ import annotations

import sys

import pytest

import pylucet
from pylucet.wasm import wast
from pylucet.wasm.decoder import decode_body, decode_module
from pylucet.wasm.sexpr import WatError
from pylucet.wasm.validator import Validator
from pylucet.wasm.wat import parse_wat

DEPTH = 50_000
assert DEPTH > 10 * sys.getrecursionlimit()   # so that recursion could not have done it

FORMS = {
    "flat blocks": ("block ", "end "),
    "flat loops with labels": ("loop $l ", "end $l "),
    "folded blocks": ("(block ", ")"),
    "folded ifs": ("(if (i32.const 1) (then ", "))"),
    "flat ifs with else": ("i32.const 1 if ", "else end "),
}


def _nested(open_: str, close: str, n: int = DEPTH) -> str:
    return f"(module (func {open_ * n}{close * n}))"


def _validate(binary: bytes) -> int:
    m = decode_module(binary, check_bodies=True)
    v = Validator(m)
    v.validate_module()
    return v.validate_function(0, decode_body(m, m.codes[0]))


@pytest.mark.parametrize("form", FORMS)
def test_deep_nesting_parses_and_validates(form):
    binary = parse_wat(_nested(*FORMS[form]))
    body = decode_module(binary, check_bodies=True)
    instrs = decode_body(body, body.codes[0])
    assert sum(1 for op, _, _ in instrs if op in (2, 3, 4)) == DEPTH
    _validate(binary)


def test_deep_folded_instructions():
    src = ("(module (func (result i32) " + "(i32.eqz " * DEPTH + "(i32.const 0)" + ")" * DEPTH
           + "))")
    binary = parse_wat(src)
    assert _validate(binary) >= 1


def test_deep_nesting_in_a_wast_script():
    script = _nested("(block ", ")") + '\n(assert_invalid (module (func (result i32) ' \
        + "(block " * DEPTH + ")" * DEPTH + ')) "type mismatch")'
    commands = wast.parse_wast(script)
    assert len(commands) == 2
    with pytest.raises(pylucet.InvalidModule, match="type mismatch"):
        pylucet.compile(commands[1].module.wasm())


@pytest.mark.parametrize("src,reason", [
    (_nested("(block ", ")", DEPTH)[:-2 - DEPTH // 2], "unclosed parenthesis"),
    ("(module (func " + "block " * DEPTH + "end " * (DEPTH - 1) + "))", "unexpected token"),
    ("(module (func " + "block $a " * DEPTH + "end $b " * DEPTH + "))", "mismatching label"),
], ids=["unclosed", "missing end", "mismatching label"])
def test_errors_at_depth_are_clean(src, reason):
    with pytest.raises(WatError) as info:
        parse_wat(src)
    assert info.value.reason.startswith(reason)

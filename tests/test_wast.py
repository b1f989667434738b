"""Tests for the .wast reader, and the WAT compiler against every text module of the spec suite.

Each non-SIMD spec script must read into commands; every text module in it must compile (and
decode, when the decoder is there); every ``assert_malformed (module quote ...)`` must be rejected
with the spec's message.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from pylucet.errors import MalformedModule
from pylucet.wasm.wast import (ANY, NAN_ARITHMETIC, NAN_CANONICAL, ActionCommand, AssertExhaustion,
                               AssertInvalid, AssertMalformed, AssertReturn, AssertTrap,
                               AssertUninstantiable, AssertUnlinkable, Get, Invoke, Module, Register,
                               Value, parse_wast)

from .conftest import suite_path as _suite_root

try:
    from pylucet.wasm.decoder import decode_module
except ImportError:  # pragma: no cover - the decoder is written in parallel
    decode_module = None

SPEC = _suite_root() / "spec"
SCRIPTS: List[Path] = sorted(p for p in SPEC.glob("*.wast") if not p.name.startswith("simd_")) \
    if SPEC.is_dir() else []


def _needs_suite() -> None:
    if not SCRIPTS:
        pytest.skip(f"spec test suite not found at {SPEC} (set PYLUCET_TESTSUITE to run these)")


def _text_modules(commands):
    """Every module written in text, with whether the script expects it to decode."""
    for c in commands:
        if isinstance(c, Module):
            module, top = c, True
        elif isinstance(c, (AssertInvalid, AssertUnlinkable, AssertUninstantiable)):
            module, top = c.module, False
        elif isinstance(c, AssertTrap) and isinstance(c.action, Module):
            module, top = c.action, False
        else:
            continue
        if module.kind == "text":
            yield module, top


@pytest.mark.parametrize("path", SCRIPTS or [None], ids=lambda p: p.stem if p else "no-suite")
def test_spec_script(path: Path):
    _needs_suite()
    commands = parse_wast(path.read_text(encoding="utf-8"))
    assert commands
    compiled = 0
    for module, top in _text_modules(commands):
        wasm = module.wasm()
        if top and decode_module is not None:
            decode_module(wasm)
        compiled += 1
    wrong = []
    for c in commands:
        if isinstance(c, AssertMalformed) and c.module.kind == "quote":
            try:
                c.module.wasm()
                wrong.append(f"line {c.line}: accepted, expected {c.message!r}")
            except MalformedModule as e:
                if not e.reason.startswith(c.message):
                    wrong.append(f"line {c.line}: {e.reason!r}, expected {c.message!r}")
    assert not wrong, "\n".join(wrong)


def test_whole_suite_counts():
    """The totals, so a regression in any file shows as a number too."""
    _needs_suite()
    texts = malformed = 0
    for path in SCRIPTS:
        commands = parse_wast(path.read_text(encoding="utf-8"))
        texts += sum(1 for _ in _text_modules(commands))
        malformed += sum(1 for c in commands if isinstance(c, AssertMalformed) and c.module.kind == "quote")
    assert texts > 2500 and malformed > 500, (texts, malformed)


# --- the script format ---------------------------------------------------------------------------

SCRIPT = r'''
(module $M (func (export "f") (param i32) (result i32) (local.get 0)))
(register "m" $M)
(module binary "\00asm" "\01\00\00\00")
(assert_return (invoke $M "f" (i32.const -1)) (i32.const 0xffff_ffff))
(assert_return (invoke "g" (f32.const -0.0) (f64.const 1)) (f32.const nan:canonical) (f64.const nan:arithmetic))
(assert_return (invoke "r" (ref.null extern) (ref.extern 7)) (ref.extern) (ref.func) (ref.null func) (ref.extern 7))
(assert_return (get "glob") (i64.const -1))
(invoke "side-effect")
(assert_trap (invoke "boom") "unreachable")
(assert_trap (module (func $s unreachable) (start $s)) "unreachable")
(assert_exhaustion (invoke "deep") "call stack exhausted")
(assert_invalid (module (func (result i32))) "type mismatch")
(assert_malformed (module quote "(func" "(i32.cnst 0))") "unknown operator")
(assert_unlinkable (module (import "x" "y" (func))) "unknown import")
(assert_uninstantiable (module (func $s unreachable) (start $s)) "unreachable")
'''


def test_script_commands():
    cmds = parse_wast(SCRIPT)
    kinds = [type(c) for c in cmds]
    assert kinds == [Module, Register, Module, AssertReturn, AssertReturn, AssertReturn, AssertReturn,
                     ActionCommand, AssertTrap, AssertTrap, AssertExhaustion, AssertInvalid,
                     AssertMalformed, AssertUnlinkable, AssertUninstantiable]
    assert [c.line for c in cmds] == list(range(2, 17))
    m = cmds[0]
    assert (m.name, m.kind) == ("$M", "text") and m.text.startswith("(module $M")
    assert m.wasm()[:8] == b"\x00asm\x01\x00\x00\x00"
    assert cmds[1] == Register(3, "m", "$M")
    assert cmds[2].kind == "binary" and cmds[2].wasm() == b"\x00asm\x01\x00\x00\x00"
    assert cmds[3].action == Invoke(5, "$M", "f", (Value("i32", 0xFFFFFFFF),))
    assert cmds[3].expected == (Value("i32", 0xFFFFFFFF),)
    assert cmds[4].action.args == (Value("f32", 0x80000000), Value("f64", 0x3FF0000000000000))
    assert cmds[4].expected == (Value("f32", NAN_CANONICAL), Value("f64", NAN_ARITHMETIC))
    assert cmds[5].action.args == (Value("externref", None), Value("externref", 7))
    assert cmds[5].expected == (Value("externref", ANY), Value("funcref", ANY), Value("funcref", None),
                                Value("externref", 7))
    assert cmds[6].action == Get(8, None, "glob") and cmds[6].expected == (Value("i64", 2**64 - 1),)
    assert cmds[7].action == Invoke(9, None, "side-effect", ())
    assert cmds[8].message == "unreachable" and isinstance(cmds[9].action, Module)
    malformed = cmds[12]
    assert malformed.module.kind == "quote" and malformed.module.text == "(func (i32.cnst 0))"
    with pytest.raises(MalformedModule, match=malformed.message):
        malformed.module.wasm()


def test_script_of_bare_module_fields():
    (cmd,) = parse_wast('(func) (memory 0) (func (export "f"))')
    assert isinstance(cmd, Module) and decode_module is None or decode_module(cmd.wasm()).exports


def test_text_module_errors_point_into_the_script():
    (cmd,) = parse_wast('\n\n(module\n  (func (i32.bogus)))')
    with pytest.raises(MalformedModule) as info:
        cmd.wasm()
    assert (info.value.line, info.value.column) == (4, 10)


def test_malformed_script_reports_position():
    with pytest.raises(MalformedModule) as info:
        parse_wast('(assert_return (invoke "f") (i32.const x))')
    assert info.value.line == 1


def test_quoted_text_must_be_utf8():
    (cmd,) = parse_wast(r'(assert_malformed (module quote "(func) \ff") "malformed UTF-8 encoding")')
    with pytest.raises(MalformedModule, match="malformed UTF-8 encoding"):
        cmd.module.wasm()


@pytest.mark.parametrize("value, expected", [
    ("(i32.const -0x8000_0000)", Value("i32", 0x80000000)),
    ("(i64.const 0x7fff_ffff_ffff_ffff)", Value("i64", 2**63 - 1)),
    ("(f32.const -nan:0x1)", Value("f32", 0xFF800001)),
    ("(f64.const 0x1p-1074)", Value("f64", 1)),
    ("(ref.null func)", Value("funcref", None)),
])
def test_argument_values(value, expected):
    (cmd,) = parse_wast(f'(invoke "f" {value})')
    assert cmd.action.args == (expected,)


@pytest.mark.parametrize("value", ["(i32.const 0x1_0000_0000)", "(f32.const 1e40)", "(i32.const nan:canonical)",
                                   "(f32.const nan:canonical)", "(ref.func)", "(v64.const 0)"])
def test_bad_argument_values(value):
    with pytest.raises(MalformedModule):
        parse_wast(f'(invoke "f" {value})')
